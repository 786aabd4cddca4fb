"""The FIX 4.4 session: QuickFIX's session rules on one asyncio connection at a time.

Inbound: frame -> parse (garbled, bad length or checksum: ignored) -> CompIDs present ->
BeginString -> data dictionary -> per-type handling with ``_verify`` (logon state,
SendingTime, CompIDs, MsgSeqNum too high -> queue + ResendRequest, too low -> Logout, or
PossDup handling). Reject texts (58) and reasons (373) are QuickFIX's. Outbound messages are
persisted (``MessageStore``) before their bytes are written; a ResendRequest is answered
from the store (application messages as PossDup with OrigSendingTime, admin ranges as
SequenceReset-GapFill). A timer sends heartbeats and test requests and drops a silent peer.

One session object outlives its connections (the initiator reconnects into it); the
acceptor binds each new connection to the session its Logon names.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from live.fix import codec, dictionary
from live.fix.codec import Parsed
from live.fix.config import SessionSettings
from live.fix.credentials import Credentials
from live.fix.dictionary import (
    BUSINESS_REJECT_TEXT,
    COMPID_PROBLEM,
    REJECT_TEXT,
    REQUIRED_TAG_MISSING,
    SENDINGTIME_ACCURACY,
    VALUE_INCORRECT,
)
from live.fix.errors import (
    BusinessReject,
    FrameTooLarge,
    InvalidMessage,
    SessionError,
    SessionReject,
    UnsupportedMessageType,
)
from live.fix.message import Message
from live.fix.store import MessageStore, mask_secrets

log = logging.getLogger("emp.fix.session")
wire_log = logging.getLogger("emp.fix.wire")

# header fields the session writes itself; an application's extra header may not set them
_SESSION_HEADER = frozenset({8, 9, 35, 34, 49, 56, 52, 43, 122, 10})
_MAX_QUEUE = 10_000          # out-of-order inbound messages kept while a gap is resent
_MAX_WRITE_BUFFER = 16 << 20  # a peer that does not read: disconnect, do not buffer forever
_READ_CHUNK = 65536


@dataclass(frozen=True)
class SessionID:
    """Who we are and who the peer is (SubIDs tell QUOTE and TRADE sessions apart)."""

    begin_string: str
    sender_comp_id: str
    target_comp_id: str
    sender_sub_id: str | None = None
    target_sub_id: str | None = None

    def __str__(self) -> str:
        s = self.sender_comp_id + (f"/{self.sender_sub_id}" if self.sender_sub_id else "")
        t = self.target_comp_id + (f"/{self.target_sub_id}" if self.target_sub_id else "")
        return f"{self.begin_string}:{s}->{t}"


class Application(Protocol):
    """What the session calls; exceptions are logged and never end the session, except
    ``UnsupportedMessageType`` / ``BusinessReject`` from ``on_message``, which the session
    answers with a BusinessMessageReject (35=j)."""

    async def on_logon(self, session: Session) -> None: ...

    async def on_logout(self, session: Session) -> None: ...

    async def on_message(self, session: Session, msg: Message) -> None: ...


class _Disconnect(Exception):
    """End the connection now (the reason is logged)."""


class _FieldNotFound(Exception):
    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


class _UnsupportedVersion(Exception):
    pass


def _now_utc() -> datetime:
    return datetime.now(UTC)


class Session:
    """One FIX session (state, store, timers); ``serve`` runs it over one connection."""

    def __init__(self, settings: SessionSettings, app: Application, *, initiator: bool,
                 credentials: Credentials | None = None) -> None:
        self.settings = settings
        self.app = app
        self.initiator = initiator
        self.credentials = credentials
        self.id = SessionID(settings.begin_string, settings.sender_comp_id,
                            settings.target_comp_id, settings.sender_sub_id,
                            settings.target_sub_id)
        self.store = MessageStore(settings.store_path, settings.key,
                                  synchronous=settings.store_synchronous)
        self.heartbeat_interval = settings.heartbeat_interval
        self._writer: asyncio.StreamWriter | None = None
        self._reset_connection_state()
        self._logged_on_event = asyncio.Event() if _has_loop() else None

    # ---- public API -------------------------------------------------------------------
    @property
    def logged_on(self) -> bool:
        """Logon sent and received on a live connection."""
        return self._writer is not None and self.received_logon and self.sent_logon

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target

    async def send(self, msg: Message) -> int:
        """Persist, then send an application (or admin) message; returns its MsgSeqNum."""
        if not self.logged_on:
            raise SessionError(f"FIX session {self.id}: cannot send {msg.msg_type!r}, "
                               "not logged on")
        extra = [(t, v) for t, v in msg.header.items() if t not in _SESSION_HEADER]
        seq = self._send(msg.msg_type, msg.fields, extra)
        await self._drain()
        return seq

    async def logout(self, text: str | None = None, timeout: float | None = None) -> None:
        """Send Logout and wait (up to the logout timeout) for the peer's reply."""
        if not self.logged_on:
            return
        self._generate_logout(text)
        deadline = time.monotonic() + (timeout or self.settings.logout_timeout_s)
        while self._writer is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.disconnect("logout sent")

    def disconnect(self, reason: str = "") -> None:
        """Close the current connection (the serve loop ends and calls ``on_logout``)."""
        writer = self._writer
        if writer is None:
            return
        if reason:
            log.info("%s: disconnecting: %s", self.id, reason)
        self._closing = True
        with contextlib.suppress(Exception):
            writer.close()

    async def drop(self, reason: str = "link dropped") -> None:
        """Cut the connection abruptly, as a network failure would: no Logout, no flush of
        what is still buffered (the transport is aborted). The serve loop then ends and
        calls ``on_logout``; an initiator reconnects. For fault injection (the venue)."""
        writer = self._writer
        if writer is None:
            return
        log.info("%s: dropping the link: %s", self.id, reason)
        self._closing = True
        with contextlib.suppress(Exception):
            writer.transport.abort()

    def skip_outbound(self, n: int) -> None:
        """Advance the next outbound MsgSeqNum by ``n`` without sending anything: the peer
        sees a gap and asks for a resend, which is answered with a SequenceReset-GapFill
        (nothing is stored under the skipped numbers). For fault injection (the venue)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"skip_outbound: expected a count >= 0, got {n!r}")
        if n:
            self.store.set_next_sender(self.store.next_sender + n)
            log.info("%s: skipped %d outbound sequence number(s)", self.id, n)

    def close_store(self) -> None:
        self.store.close()

    # ---- connection lifecycle ---------------------------------------------------------
    def _reset_connection_state(self) -> None:
        self.received_logon = False
        self.sent_logon = False
        self.sent_logout = False
        self.sent_reset = False
        self.received_reset = False
        self.test_request = 0
        self.resend_range: tuple[int, int] | None = None
        self.queue: dict[int, Parsed] = {}
        now = time.monotonic()
        self.last_sent = now
        self.last_received = now
        self.connected_at = now
        self.logon_sent_at = now
        self.logout_sent_at = now
        self._closing = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    parser: codec.FrameParser, pending: list[bytes] = ()) -> None:
        """Run the session over one connection until it closes."""
        if self._writer is not None:
            raise SessionError(f"FIX session {self.id} is already connected")
        self._writer = writer
        self._reset_connection_state()
        was_logged_on = False
        timer = asyncio.create_task(self._timer_loop())
        try:
            if self.initiator:
                self._generate_logon()
            for frame in pending:
                await self._on_frame(frame)
                if self._closing:
                    break
            while not self._closing:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    break
                try:
                    frames = parser.feed(data)
                except FrameTooLarge as exc:
                    log.warning("%s: %s; disconnecting", self.id, exc)
                    break
                for frame in frames:
                    await self._on_frame(frame)
                    was_logged_on = was_logged_on or self.logged_on
                    if self._closing:
                        break
                await self._drain()
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            log.info("%s: connection lost: %s", self.id, exc)
        finally:
            was_logged_on = was_logged_on or self.logged_on
            timer.cancel()
            with contextlib.suppress(BaseException):
                await timer
            self._writer = None
            self._closing = True
            with contextlib.suppress(Exception):
                writer.close()
            self.store.flush()
            if self._logged_on_event is not None:
                self._logged_on_event.clear()
            if was_logged_on:
                await self._call_app("on_logout")
            log.info("%s: disconnected", self.id)

    async def wait_logged_on(self, timeout: float) -> bool:
        if self._logged_on_event is None:
            self._logged_on_event = asyncio.Event()
        if self.logged_on:
            return True
        try:
            await asyncio.wait_for(self._logged_on_event.wait(), timeout)
        except TimeoutError:
            return False
        return self.logged_on

    async def _drain(self) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
        except (ConnectionError, OSError):
            self.disconnect("write failed")

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            try:
                self._on_timer()
            except _Disconnect as exc:
                self.disconnect(str(exc))
            self.store.flush()

    # ---- sending ----------------------------------------------------------------------
    def _header(self, seq: int, extra: list[tuple[int, str]] | tuple = (),
                sending_time: str | None = None) -> list[tuple[int, str]]:
        st = self.settings
        fields = {34: str(seq), 49: st.sender_comp_id, 56: st.target_comp_id,
                  52: sending_time or codec.utc_timestamp()}
        if st.sender_sub_id:
            fields[50] = st.sender_sub_id
        if st.target_sub_id:
            fields[57] = st.target_sub_id
        for tag, value in extra:
            fields[tag] = value
        return sorted(fields.items())

    def _send(self, msg_type: str, body: list[tuple[int, str]] | tuple,
              extra: list[tuple[int, str]] | tuple = (), *, seq: int | None = None) -> int:
        """Encode, persist (unless ``seq`` is given: a resend or gap fill), write."""
        persist = seq is None
        if persist:
            seq = self.store.next_sender
        raw = codec.encode(self.settings.begin_string, msg_type, self._header(seq, extra), body)
        if persist:
            self.store.save_and_advance(seq, raw)
        self._write(raw)
        return seq

    def _write(self, raw: bytes) -> None:
        writer = self._writer
        if writer is None or self._closing:
            return
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("%s out %s", self.id, mask_secrets(raw).replace(b"\x01", b"|"))
        try:
            writer.write(raw)
        except (ConnectionError, OSError, RuntimeError):
            self.disconnect("write failed")
            return
        self.last_sent = time.monotonic()
        if writer.transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
            self.disconnect("peer is not reading (write buffer full)")

    def _generate_logon(self) -> None:
        body: list[tuple[int, str]] = [(98, "0"), (108, str(self.heartbeat_interval))]
        if self.settings.reset_on_logon:
            self.store.reset()
            body.append((141, "Y"))
            self.sent_reset = True
        creds = self.credentials
        if creds is not None:
            if creds.username:
                body.append((553, creds.username))
            if creds.password:
                body.append((554, creds.password))
        self._send("A", body)
        self.sent_logon = True
        self.logon_sent_at = time.monotonic()
        log.info("%s: logon sent", self.id)

    def _generate_logon_response(self) -> None:
        body = [(98, "0"), (108, str(self.heartbeat_interval))]
        if self.received_reset:
            body.append((141, "Y"))
        self._send("A", body)
        self.sent_logon = True

    def _generate_logout(self, text: str | None = None) -> None:
        self._send("5", [(58, text)] if text else [])
        self.sent_logout = True
        self.logout_sent_at = time.monotonic()

    def _generate_heartbeat(self, test_req_id: str | None = None) -> None:
        self._send("0", [(112, test_req_id)] if test_req_id is not None else [])

    def _generate_resend_request(self, seq: int) -> None:
        begin = self.store.next_target
        self._send("2", [(7, str(begin)), (16, "0")])
        log.info("%s: sent ResendRequest from %d to %d", self.id, begin, seq - 1)
        self.resend_range = (begin, seq - 1)

    def _generate_sequence_reset(self, begin: int, new_seq: int) -> None:
        now = codec.utc_timestamp()
        raw = codec.encode(self.settings.begin_string, "4",
                           self._header(begin, [(43, "Y"), (122, now)], now),
                           [(36, str(new_seq)), (123, "Y")])
        self._write(raw)

    def _reverse_route(self, header: dict[int, str]) -> list[tuple[int, str]]:
        out = []
        for src, dst in ((115, 128), (128, 115), (116, 129), (129, 116), (144, 145),
                         (145, 144)):
            value = header.get(src)
            if value:
                out.append((dst, value))
        return out

    def _generate_reject(self, msg: Parsed, reason: int, tag: int = 0) -> None:
        if not self.received_logon:
            raise _Disconnect("tried to send a reject while not logged on")
        header = msg.header
        body: list[tuple[int, str]] = []
        seq_s = header.get(34, "")
        seq = int(seq_s) if seq_s.isascii() and seq_s.isdigit() else None
        if seq_s and seq is not None:
            body.append((45, seq_s))
        text = REJECT_TEXT.get(reason)
        if text is not None:
            body.append((58, text))
            if tag or reason == dictionary.INVALID_TAG_NUMBER:
                body.append((371, str(tag)))
        if msg.msg_type:
            body.append((372, msg.msg_type))
        body.append((373, str(reason)))
        if msg.msg_type not in ("A", "4") and seq == self.store.next_target:
            self._incr_target()
        log.warning("%s: message %s rejected: %s (tag %d)", self.id, seq_s, text, tag)
        self._send("3", sorted(body), self._reverse_route(header))

    def _generate_business_reject(self, msg: Parsed, reason: int, tag: int = 0,
                                  text: str | None = None) -> None:
        body: list[tuple[int, str]] = [(45, msg.header.get(34, "0"))]
        text = text or BUSINESS_REJECT_TEXT.get(reason)
        if text:
            body.append((58, f"{text} ({tag})" if tag else text))
        body += [(372, msg.msg_type), (380, str(reason))]
        self._incr_target()
        self._send("j", body)

    # ---- inbound ----------------------------------------------------------------------
    def _incr_target(self) -> None:
        self.store.set_next_target(self.store.next_target + 1)

    async def _on_frame(self, raw: bytes) -> None:
        if wire_log.isEnabledFor(logging.DEBUG):
            wire_log.debug("%s in  %s", self.id, mask_secrets(raw).replace(b"\x01", b"|"))
        try:
            msg = codec.parse(raw)
        except InvalidMessage as exc:
            log.warning("%s: invalid message ignored: %s", self.id, exc)
            if codec.identify_type(raw) == "A":
                self.disconnect("logon message is not valid")
            elif not self.logged_on:
                self.disconnect("invalid message before logon")
            return
        try:
            await self._next(msg)
        except _Disconnect as exc:
            self.disconnect(str(exc))
        except Exception:  # a bug must not take the process down: drop this connection
            log.exception("%s: internal error on an inbound message; disconnecting", self.id)
            self.disconnect("internal error")

    async def _next(self, msg: Parsed, queued: bool = False) -> None:
        header = msg.header
        mt = msg.msg_type
        try:
            for tag in (49, 56):
                if tag not in header:
                    raise _FieldNotFound(tag)
            if header.get(8) != self.settings.begin_string:
                raise _UnsupportedVersion
            dictionary.validate(msg, check_user_defined=self.settings.check_user_defined_fields,
                                strict_app_fields=self.settings.strict_app_fields)
            handler = _HANDLERS.get(mt)
            if handler is not None:
                await handler(self, msg)
            elif await self._verify(msg):
                self._incr_target()
        except _FieldNotFound as exc:
            if not dictionary.is_admin(mt):
                self._generate_business_reject(msg, 5, exc.tag)
            else:
                self._reject_or_drop(msg, REQUIRED_TAG_MISSING, exc.tag)
                if mt == "A":
                    raise _Disconnect("required field missing from logon") from None
        except SessionReject as exc:
            self._reject_or_drop(msg, exc.reason, exc.tag)
            if mt == "A" and not self.received_logon:
                raise _Disconnect("logon rejected by the data dictionary") from None
        except UnsupportedMessageType:
            self._generate_business_reject(msg, 3)
        except BusinessReject as exc:
            self._generate_business_reject(msg, exc.reason, exc.tag, exc.text)
        except _UnsupportedVersion:
            if mt == "5":
                await self._next_logout(msg)
            else:
                self._generate_logout("Incorrect BeginString")
                self._incr_target()
        if not queued:
            await self._next_queued()
        if self.logged_on:
            self._on_timer()

    def _reject_or_drop(self, msg: Parsed, reason: int, tag: int) -> None:
        try:
            self._generate_reject(msg, reason, tag)
        except _Disconnect as exc:
            log.warning("%s: %s", self.id, exc)

    async def _next_queued(self) -> None:
        while self.queue:
            expected = self.store.next_target
            msg = self.queue.pop(expected, None)
            for stale in [s for s in self.queue if s < expected]:
                del self.queue[stale]
            if msg is None:
                return
            log.info("%s: processing queued message %d", self.id, expected)
            if msg.msg_type in ("A", "2"):
                self._incr_target()
            else:
                await self._next(msg, queued=True)

    # ---- verify (QuickFIX Session::verify) ------------------------------------------------
    def _valid_logon_state(self, mt: str) -> bool:
        if (mt == "A" and self.sent_reset) or self.received_reset:
            return True
        if (mt == "A" and not self.received_logon) or (mt != "A" and self.received_logon):
            return True
        if mt == "5" and self.sent_logon:
            return True
        if mt != "5" and self.sent_logout:
            return True
        return mt in ("4", "3")

    def _is_good_time(self, sending_time: str) -> bool:
        if not self.settings.check_latency:
            return True
        ts = codec.parse_utc_timestamp(sending_time)
        if ts is None:
            return False
        return abs((_now_utc() - ts).total_seconds()) <= self.settings.max_latency_s

    async def _verify(self, msg: Parsed, too_high: bool = True, too_low: bool = True) -> bool:
        header = msg.header
        mt = msg.msg_type
        seq = int(header[34]) if (too_high or too_low) else 0
        if not self._valid_logon_state(mt):
            raise _Disconnect("logon state is not valid for message")
        if not self._is_good_time(header[52]):
            self._generate_reject(msg, SENDINGTIME_ACCURACY)
            self._generate_logout()
            return False
        st = self.settings
        if header[49] != st.target_comp_id or header[56] != st.sender_comp_id:
            self._generate_reject(msg, COMPID_PROBLEM)
            self._generate_logout()
            return False
        expected = self.store.next_target
        if too_high and seq > expected:
            self._do_target_too_high(msg, seq)
            return False
        if too_low and seq < expected:
            self._do_target_too_low(msg, seq)
            return False
        if (too_high or too_low) and self.resend_range and seq >= self.resend_range[1]:
            log.info("%s: ResendRequest %d..%d satisfied", self.id, *self.resend_range)
            self.resend_range = None
        self.last_received = time.monotonic()
        self.test_request = 0
        if not dictionary.is_admin(mt):
            await self._from_app(msg)
        return True

    def _do_target_too_high(self, msg: Parsed, seq: int) -> None:
        log.info("%s: MsgSeqNum too high, expecting %d but received %d", self.id,
                 self.store.next_target, seq)
        if len(self.queue) >= _MAX_QUEUE:
            raise _Disconnect("too many out-of-order messages queued")
        self.queue[seq] = msg
        if self.resend_range and seq >= self.resend_range[0]:
            return
        self._generate_resend_request(seq)

    def _do_target_too_low(self, msg: Parsed, seq: int) -> None:
        if msg.header.get(43) != "Y":
            text = f"MsgSeqNum too low, expecting {self.store.next_target} but received {seq}"
            self._generate_logout(text)
            raise _Disconnect(text)
        if msg.msg_type == "4":
            return
        orig = msg.header.get(122)
        if orig is None:
            self._generate_reject(msg, REQUIRED_TAG_MISSING, 122)
            return
        orig_ts = codec.parse_utc_timestamp(orig)
        sent_ts = codec.parse_utc_timestamp(msg.header[52])
        if orig_ts is not None and sent_ts is not None and orig_ts > sent_ts:
            self._generate_reject(msg, SENDINGTIME_ACCURACY)
            self._generate_logout()

    async def _from_app(self, msg: Parsed) -> None:
        header = {t: v for t, v in msg.header_list if t not in (8, 9, 35)}
        app_msg = Message(msg.msg_type, msg.body, header=header)
        try:
            await self.app.on_message(self, app_msg)
        except (UnsupportedMessageType, BusinessReject):
            raise
        except Exception:
            log.exception("%s: application error on %s (session continues)", self.id,
                          msg.msg_type)

    async def _call_app(self, name: str) -> None:
        try:
            await getattr(self.app, name)(self)
        except Exception:
            log.exception("%s: application error in %s (session continues)", self.id, name)

    # ---- admin messages ---------------------------------------------------------------
    async def _next_logon(self, msg: Parsed) -> None:
        reset_flag = dict(msg.body).get(141) == "Y"
        self.received_reset = reset_flag
        if reset_flag:
            log.info("%s: logon with ResetSeqNumFlag=Y, sequence numbers reset to 1", self.id)
            if not self.sent_reset:
                self.store.reset()
        if self.initiator and not self.sent_logon and not reset_flag:
            raise _Disconnect("received logon response before sending request")
        if not self.initiator and self.settings.reset_on_logon:
            self.store.reset()
        if not await self._verify(msg, False, True):
            return
        if not self.initiator and not self._credentials_ok(msg):
            self._generate_logout("Invalid credentials")
            raise _Disconnect("logon refused: invalid credentials")
        self.received_logon = True
        if not self.initiator or (self.received_reset and not self.sent_reset):
            body = dict(msg.body)
            hb = int(body.get(108, self.heartbeat_interval))
            if hb < 0:
                self._generate_logout("HeartBtInt (108) must not be negative")
                raise _Disconnect("negative HeartBtInt")
            self.heartbeat_interval = hb
            log.info("%s: logon received (HeartBtInt %d)", self.id, self.heartbeat_interval)
            self._generate_logon_response()
        else:
            log.info("%s: logon response received", self.id)
        self.sent_reset = False
        self.received_reset = False
        seq = int(msg.header[34])
        if seq > self.store.next_target and not reset_flag:
            self._do_target_too_high(msg, seq)
        else:
            self._incr_target()
            await self._next_queued()
        if self.logged_on:
            if self._logged_on_event is not None:
                self._logged_on_event.set()
            await self._call_app("on_logon")

    def _credentials_ok(self, msg: Parsed) -> bool:
        creds = self.credentials
        if creds is None or not creds.secrets:
            return True
        body = dict(msg.body)
        ok = True
        for tag, expected in ((553, creds.username), (554, creds.password)):
            if expected and not hmac.compare_digest(body.get(tag, "").encode(),
                                                    expected.encode()):
                ok = False
        return ok

    async def _next_heartbeat(self, msg: Parsed) -> None:
        if await self._verify(msg):
            self._incr_target()

    async def _next_test_request(self, msg: Parsed) -> None:
        if not await self._verify(msg):
            return
        self._generate_heartbeat(dict(msg.body).get(112, ""))
        self._incr_target()

    async def _next_reject(self, msg: Parsed) -> None:
        if await self._verify(msg, False, True):
            self._incr_target()

    async def _next_sequence_reset(self, msg: Parsed) -> None:
        body = dict(msg.body)
        gap_fill = body.get(123) == "Y"
        if not await self._verify(msg, gap_fill, gap_fill):
            return
        new_seq = int(body[36])
        expected = self.store.next_target
        log.info("%s: SequenceReset to %d (expected %d)", self.id, new_seq, expected)
        if new_seq > expected:
            self.store.set_next_target(new_seq)
        elif new_seq < expected:
            self._generate_reject(msg, VALUE_INCORRECT)

    async def _next_logout(self, msg: Parsed) -> None:
        if not await self._verify(msg, False, False):
            return
        if not self.sent_logout:
            log.info("%s: logout request received", self.id)
            self._generate_logout()
        else:
            log.info("%s: logout response received", self.id)
        self._incr_target()
        raise _Disconnect("logout")

    async def _next_resend_request(self, msg: Parsed) -> None:
        if not await self._verify(msg, False, False):
            return
        body = dict(msg.body)
        begin, end = int(body[7]), int(body[16])
        log.info("%s: ResendRequest %d..%d received", self.id, begin, end)
        next_sender = self.store.next_sender
        if end == 0 or end >= next_sender:
            end = next_sender - 1
        gap_begin = 0
        current = begin
        last_seq = 0
        for seq, raw in self.store.get_range(begin, end):
            if current != seq and not gap_begin:
                gap_begin = current
            stored = codec.parse(raw, validate=False)
            if dictionary.is_admin(stored.msg_type):
                if not gap_begin:
                    gap_begin = seq
            else:
                if gap_begin:
                    self._generate_sequence_reset(gap_begin, seq)
                self._resend(stored, seq)
                gap_begin = 0
            current = seq + 1
            last_seq = seq
        if gap_begin:
            self._generate_sequence_reset(gap_begin, last_seq + 1)
        if end > last_seq:
            self._generate_sequence_reset(begin if not last_seq else last_seq + 1,
                                          min(end + 1, next_sender))
        seq = int(msg.header[34])
        if seq == self.store.next_target:
            self._incr_target()

    def _resend(self, stored: Parsed, seq: int) -> None:
        orig = stored.header.get(52, codec.utc_timestamp())
        extra = [(t, v) for t, v in stored.header_list
                 if t not in _SESSION_HEADER and t not in (50, 57)]
        extra += [(43, "Y"), (122, orig)]
        raw = codec.encode(self.settings.begin_string, stored.msg_type,
                           self._header(seq, extra), stored.body)
        self._write(raw)
        log.info("%s: resent message %d", self.id, seq)

    # ---- timer (QuickFIX Session::next()) ------------------------------------------------
    def _on_timer(self) -> None:
        if self._writer is None or self._closing:
            return
        now = time.monotonic()
        if not self.received_logon:
            if now - self.connected_at >= self.settings.logon_timeout_s:
                raise _Disconnect("timed out waiting for logon")
            return
        hb = self.heartbeat_interval
        if self.sent_logout and now - self.logout_sent_at >= self.settings.logout_timeout_s:
            raise _Disconnect("timed out waiting for logout response")
        if hb == 0:
            return
        since_sent = now - self.last_sent
        since_recv = now - self.last_received
        if since_sent < hb and since_recv < hb:
            return
        if since_recv >= 2.4 * hb:
            raise _Disconnect("timed out waiting for heartbeat")
        if since_recv >= 1.2 * (self.test_request + 1) * hb:
            self._send("1", [(112, "TEST")])
            self.test_request += 1
            log.info("%s: sent test request TEST", self.id)
        elif since_sent >= hb and not self.test_request:
            self._generate_heartbeat()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_HANDLERS = {
    "A": Session._next_logon,
    "0": Session._next_heartbeat,
    "1": Session._next_test_request,
    "2": Session._next_resend_request,
    "3": Session._next_reject,
    "4": Session._next_sequence_reset,
    "5": Session._next_logout,
}
