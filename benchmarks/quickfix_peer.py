"""QuickFIX (C++, the ``quickfix-tls`` wheel) as an independent FIX 4.4 peer for the interop
tests and the ``emp bench fix`` comparator: an acceptor or an initiator on 127.0.0.1, its
files in a temp directory, its engine on QuickFIX's own threads.

Why a second engine: our session layer passing our own tests proves little; QuickFIX is the
reference the conformance scenarios come from, so if it logs on, resends, gap-fills and
resets with us, the session rules agree. Test dependency only (the ``dev`` extra).

The wheel ships no FIX44.xml, so ``write_dictionary`` writes a small FIX 4.4 data dictionary
(the session messages and the order and market-data messages the tests use), transcribed from
the FIX 4.4 specification independently of ``live/fix/spec44.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import quickfix as fix

SOH = "\x01"
BEGIN = "FIX.4.4"

# ---- a minimal FIX 4.4 dictionary -----------------------------------------------------------
# tag: (name, type, enum values or "")
FIELDS: dict[int, tuple[str, str, str]] = {
    1: ("Account", "STRING", ""), 6: ("AvgPx", "PRICE", ""), 7: ("BeginSeqNo", "SEQNUM", ""),
    8: ("BeginString", "STRING", ""), 9: ("BodyLength", "LENGTH", ""),
    10: ("CheckSum", "STRING", ""), 11: ("ClOrdID", "STRING", ""),
    14: ("CumQty", "QTY", ""), 16: ("EndSeqNo", "SEQNUM", ""),
    17: ("ExecID", "STRING", ""), 31: ("LastPx", "PRICE", ""), 32: ("LastQty", "QTY", ""),
    34: ("MsgSeqNum", "SEQNUM", ""), 35: ("MsgType", "STRING", ""),
    36: ("NewSeqNo", "SEQNUM", ""), 37: ("OrderID", "STRING", ""),
    38: ("OrderQty", "QTY", ""),
    39: ("OrdStatus", "CHAR", "0 1 2 3 4 5 6 7 8 9 A B C D E"),
    40: ("OrdType", "CHAR", "1 2 3 4 5 6 7 8 9 D E F G H I J K L M P Q"),
    41: ("OrigClOrdID", "STRING", ""), 43: ("PossDupFlag", "BOOLEAN", "Y N"),
    44: ("Price", "PRICE", ""), 45: ("RefSeqNum", "SEQNUM", ""),
    49: ("SenderCompID", "STRING", ""), 50: ("SenderSubID", "STRING", ""),
    52: ("SendingTime", "UTCTIMESTAMP", ""),
    54: ("Side", "CHAR", "1 2 3 4 5 6 7 8 9 A B C D E F G"), 55: ("Symbol", "STRING", ""),
    56: ("TargetCompID", "STRING", ""), 57: ("TargetSubID", "STRING", ""),
    58: ("Text", "STRING", ""), 60: ("TransactTime", "UTCTIMESTAMP", ""),
    97: ("PossResend", "BOOLEAN", "Y N"), 98: ("EncryptMethod", "INT", "0 1 2 3 4 5 6"),
    99: ("StopPx", "PRICE", ""),
    102: ("CxlRejReason", "INT", "0 1 2 3 4 5 6 99"), 103: ("OrdRejReason", "INT", ""),
    108: ("HeartBtInt", "INT", ""), 112: ("TestReqID", "STRING", ""),
    122: ("OrigSendingTime", "UTCTIMESTAMP", ""), 123: ("GapFillFlag", "BOOLEAN", "Y N"),
    141: ("ResetSeqNumFlag", "BOOLEAN", "Y N"),
    150: ("ExecType", "CHAR", "0 1 2 3 4 5 6 7 8 9 A B C D E F G H I"),
    151: ("LeavesQty", "QTY", ""), 262: ("MDReqID", "STRING", ""),
    263: ("SubscriptionRequestType", "CHAR", "0 1 2"), 264: ("MarketDepth", "INT", ""),
    265: ("MDUpdateType", "INT", "0 1"),
    267: ("NoMDEntryTypes", "NUMINGROUP", ""), 268: ("NoMDEntries", "NUMINGROUP", ""),
    269: ("MDEntryType", "CHAR", "0 1 2 3 4 5 6 7 8 9 A B C"),
    270: ("MDEntryPx", "PRICE", ""), 271: ("MDEntrySize", "QTY", ""),
    272: ("MDEntryDate", "UTCDATEONLY", ""), 273: ("MDEntryTime", "UTCTIMEONLY", ""),
    279: ("MDUpdateAction", "CHAR", "0 1 2"), 281: ("MDReqRejReason", "CHAR", ""),
    371: ("RefTagID", "INT", ""), 372: ("RefMsgType", "STRING", ""),
    373: ("SessionRejectReason", "INT", ""), 380: ("BusinessRejectReason", "INT", ""),
    383: ("MaxMessageSize", "LENGTH", ""), 434: ("CxlRejResponseTo", "CHAR", "1 2"),
    553: ("Username", "STRING", ""), 554: ("Password", "STRING", ""),
    789: ("NextExpectedMsgSeqNum", "SEQNUM", ""), 146: ("NoRelatedSym", "NUMINGROUP", ""),
}
HEADER = [(8, True), (9, True), (35, True), (49, True), (56, True), (50, False), (57, False),
          (34, True), (43, False), (97, False), (52, True), (122, False)]
# MsgType: (name, category, [(tag, required)] or groups as ("G", count, required, [...]))
MESSAGES: dict[str, tuple[str, str, list]] = {
    "0": ("Heartbeat", "admin", [(112, False)]),
    "1": ("TestRequest", "admin", [(112, True)]),
    "2": ("ResendRequest", "admin", [(7, True), (16, True)]),
    "3": ("Reject", "admin", [(45, True), (371, False), (372, False), (373, False), (58, False)]),
    "4": ("SequenceReset", "admin", [(123, False), (36, True)]),
    "5": ("Logout", "admin", [(58, False)]),
    "A": ("Logon", "admin", [(98, True), (108, True), (141, False), (383, False), (789, False),
                             (553, False), (554, False)]),
    "D": ("NewOrderSingle", "app", [(11, True), (1, False), (55, True), (54, True), (60, True),
                                    (38, False), (40, True), (44, False), (99, False),
                                    (58, False)]),
    "V": ("MarketDataRequest", "app", [(262, True), (263, True), (264, True), (265, False),
                                       ("G", 267, True, [(269, True)]),
                                       ("G", 146, True, [(55, True)])]),
    "W": ("MarketDataSnapshotFullRefresh", "app", [
        (262, False), (55, True),
        ("G", 268, True, [(269, True), (270, False), (271, False), (272, False),
                          (273, False)])]),
    "X": ("MarketDataIncrementalRefresh", "app", [
        (262, False),
        ("G", 268, True, [(279, True), (269, False), (55, False), (270, False), (271, False),
                          (272, False), (273, False)])]),
    "Y": ("MarketDataRequestReject", "app", [(262, True), (281, False), (58, False)]),
    "8": ("ExecutionReport", "app", [(37, True), (11, False), (41, False), (17, True),
                                     (150, True), (39, True), (1, False), (55, True),
                                     (54, True), (38, False), (40, False), (44, False),
                                     (99, False), (32, False), (31, False), (151, True),
                                     (14, True),
                                     (6, True), (60, False), (58, False), (103, False)]),
    "j": ("BusinessMessageReject", "app", [(45, False), (372, True), (380, True), (58, False)]),
}


def write_dictionary(path: Path) -> Path:
    """A QuickFIX data dictionary (its XML format) for ``FIELDS`` and ``MESSAGES``."""
    def items(spec: list) -> str:
        out = []
        for item in spec:
            if item[0] == "G":
                _, tag, req, inner = item
                out.append(f'<group name="{FIELDS[tag][0]}" required="{"Y" if req else "N"}">'
                           f'{items(inner)}</group>')
            else:
                tag, req = item
                out.append(f'<field name="{FIELDS[tag][0]}" required="{"Y" if req else "N"}"/>')
        return "".join(out)

    msgs = "".join(f'<message name="{name}" msgtype="{mt}" msgcat="{cat}">{items(spec)}</message>'
                   for mt, (name, cat, spec) in MESSAGES.items())
    fields = []
    for tag, (name, typ, enums) in sorted(FIELDS.items()):
        vals = "".join(f'<value enum="{v}" description="V{v}"/>' for v in enums.split())
        fields.append(f'<field number="{tag}" name="{name}" type="{typ}">{vals}</field>')
    xml = (f'<fix type="FIX" major="4" minor="4" servicepack="0"><header>{items(HEADER)}'
           '</header><trailer><field name="CheckSum" required="Y"/></trailer>'
           f'<messages>{msgs}</messages><components></components>'
           f'<fields>{"".join(fields)}</fields></fix>')
    path.write_text(xml, encoding="ascii")
    return path


# ---- helpers ----------------------------------------------------------------------------------
def free_port() -> int:
    """A port nothing listens on now (QuickFIX needs a number; it cannot report port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fields_of(raw: str) -> list[tuple[int, str]]:
    """``8=...|9=...|`` (SOH) -> [(tag, value)] in wire order."""
    out = []
    for part in raw.split(SOH):
        if part:
            tag, _, value = part.partition("=")
            out.append((int(tag), value))
    return out


@dataclass
class Seen:
    """One message QuickFIX received or sent, as wire fields."""

    direction: str  # "in" or "out"
    fields: list[tuple[int, str]]

    @property
    def msg_type(self) -> str:
        return self.get(35) or ""

    @property
    def seq(self) -> int:
        return int(self.get(34) or 0)

    def get(self, tag: int) -> str | None:
        for t, v in self.fields:
            if t == tag:
                return v
        return None


@dataclass
class SessionSpec:
    """One QuickFIX session (from QuickFIX's side): its CompIDs and SubIDs.

    QuickFIX C++ tells sessions apart by BeginString, CompIDs and a qualifier only, so two
    sessions that differ by SubID alone (cTrader's QUOTE and TRADE) are initiator sessions
    with a ``qualifier`` each; ``PeerApp`` writes their SubIDs into every outbound header.
    """

    sender: str
    target: str
    sender_sub: str | None = None
    target_sub: str | None = None
    qualifier: str = ""

    def session_id(self) -> fix.SessionID:
        return fix.SessionID(BEGIN, self.sender, self.target, self.qualifier)


class PeerApp(fix.Application):
    """Records every message; as an acceptor answers each NewOrderSingle with a filled
    ExecutionReport (the minimal broker); ``on_app`` overrides that."""

    def __init__(self, fill_orders: bool = True, logon_fields: Iterable[tuple[int, str]] = ()):
        super().__init__()
        self.fill_orders = fill_orders
        self.logon_fields = list(logon_fields)
        self.seen: list[Seen] = []
        self.logons: list[str] = []
        self.logouts: list[str] = []
        self.cond = threading.Condition()
        self.on_app: Callable[[fix.Message, fix.SessionID], None] | None = None
        self.sub_ids: dict[str, tuple[str | None, str | None]] = {}
        self._exec_ids = itertools.count(1)

    def _stamp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        sender_sub, target_sub = self.sub_ids.get(session_id.toString(), (None, None))
        if sender_sub:
            message.getHeader().setField(fix.StringField(50, sender_sub))
        if target_sub:
            message.getHeader().setField(fix.StringField(57, target_sub))

    def _record(self, direction: str, message: fix.Message) -> None:
        with self.cond:
            self.seen.append(Seen(direction, fields_of(message.toString())))
            self.cond.notify_all()

    # QuickFIX callbacks (run on QuickFIX threads, with the GIL)
    def onCreate(self, sessionID: fix.SessionID) -> None:
        pass

    def onLogon(self, sessionID: fix.SessionID) -> None:
        with self.cond:
            self.logons.append(sessionID.toString())
            self.cond.notify_all()

    def onLogout(self, sessionID: fix.SessionID) -> None:
        with self.cond:
            self.logouts.append(sessionID.toString())
            self.cond.notify_all()

    def toAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        if self.logon_fields and message.getHeader().getField(35) == "A":
            for tag, value in self.logon_fields:
                message.setField(fix.StringField(tag, value))
        self._stamp(message, sessionID)
        self._record("out", message)

    def fromAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        self._record("in", message)

    def toApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        self._stamp(message, sessionID)
        self._record("out", message)

    def fromApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        self._record("in", message)
        if self.on_app is not None:
            self.on_app(message, sessionID)
        elif self.fill_orders and message.getHeader().getField(35) == "D":
            fix.Session.sendToTarget(fill_report(message, next(self._exec_ids)), sessionID)

    # waiting (the tests' only clock: a deadline on an event, never a duration asserted)
    def wait_for(self, pred: Callable[[], object], timeout: float = 10.0) -> object:
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                got = pred()
                if got:
                    return got
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"QuickFIX peer: timed out; last messages: "
                                         f"{[s.fields for s in self.seen[-5:]]}")
                self.cond.wait(left)

    def received(self, msg_type: str | None = None) -> list[Seen]:
        with self.cond:
            return [s for s in self.seen if s.direction == "in"
                    and (msg_type is None or s.msg_type == msg_type)]

    def sent(self, msg_type: str | None = None) -> list[Seen]:
        with self.cond:
            return [s for s in self.seen if s.direction == "out"
                    and (msg_type is None or s.msg_type == msg_type)]


def fill_report(order: fix.Message, exec_id: int) -> fix.Message:
    """The broker's answer to a NewOrderSingle: one ExecutionReport, filled at Price or 1."""
    qty = order.getField(38) if order.isSetField(38) else "1"
    px = order.getField(44) if order.isSetField(44) else "1"
    rep = fix.Message()
    rep.getHeader().setField(fix.StringField(35, "8"))
    for tag, value in ((37, f"O{exec_id}"), (11, order.getField(11)), (17, f"E{exec_id}"),
                       (150, "F"), (39, "2"), (55, order.getField(55)), (54, order.getField(54)),
                       (38, qty), (32, qty), (31, px), (151, "0"), (14, qty), (6, px)):
        rep.setField(fix.StringField(tag, value))
    return rep


def build_message(msg_type: str, body: Iterable[tuple],
                  header: Iterable[tuple[int, str]] = ()) -> fix.Message:
    """A QuickFIX message from tag/value pairs (the session fills 8, 9, 34, 49, 56, 52, 10).

    A repeating group is ``("G", count_tag, [[(tag, value), ...], ...])``: one list of
    pairs per entry, the first tag of an entry being the group's delimiter."""
    msg = fix.Message()
    msg.getHeader().setField(fix.StringField(35, msg_type))
    for tag, value in header:
        msg.getHeader().setField(fix.StringField(tag, value))
    for item in body:
        if item[0] == "G":
            _, count_tag, entries = item
            for entry in entries:
                group = fix.Group(count_tag, entry[0][0])
                for tag, value in entry:
                    group.setField(fix.StringField(tag, value))
                msg.addGroup(group)
        else:
            msg.setField(fix.StringField(item[0], item[1]))
    return msg


@dataclass
class QuickFixPeer:
    """QuickFIX as an acceptor (``port`` given or free) or an initiator (connects to
    ``port``), one or more sessions, files under ``home``. Use as a context manager."""

    role: str  # "acceptor" or "initiator"
    home: Path
    sessions: list[SessionSpec]
    port: int = 0
    app: PeerApp = field(default_factory=PeerApp)
    heartbeat: int = 30
    reset_on_logon: bool = False
    dictionary: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ("acceptor", "initiator"):
            raise ValueError(f"role {self.role!r}: acceptor or initiator")
        if self.role == "acceptor" and not self.port:
            self.port = free_port()
        self._engine: fix.SocketAcceptor | fix.SocketInitiator | None = None

    def config_text(self) -> str:
        home = self.home
        dd = write_dictionary(home / "FIX44.xml") if self.dictionary else None
        default = {
            "ConnectionType": self.role, "BeginString": BEGIN, "StartTime": "00:00:00",
            "EndTime": "00:00:00", "HeartBtInt": str(self.heartbeat),
            "FileStorePath": str(home / "store"), "FileLogPath": str(home / "log"),
            "ReconnectInterval": "1", "ResetOnLogon": "Y" if self.reset_on_logon else "N",
            "UseDataDictionary": "Y" if dd else "N",
            # our venue's stop-loss / take-profit tags (9001, 9002) are user-defined fields
            "ValidateUserDefinedFields": "N", "AllowUnknownMsgFields": "Y",
            "MillisecondsInTimeStamp": "Y", "CheckLatency": "Y", "MaxLatency": "120",
            "LogonTimeout": "5", "LogoutTimeout": "2", "SocketNodelay": "Y",
        }
        if dd is not None:
            default["DataDictionary"] = str(dd)
        if self.role == "acceptor":
            default["SocketAcceptHost"] = "127.0.0.1"
            default["SocketAcceptPort"] = str(self.port)
        else:
            default["SocketConnectHost"] = "127.0.0.1"
            default["SocketConnectPort"] = str(self.port)
        default.update(self.extra)
        lines = ["[DEFAULT]", *(f"{k}={v}" for k, v in default.items())]
        for s in self.sessions:
            lines += ["[SESSION]", f"SenderCompID={s.sender}", f"TargetCompID={s.target}"]
            if s.qualifier:
                lines.append(f"SessionQualifier={s.qualifier}")
        return "\n".join(lines) + "\n"

    def start(self) -> QuickFixPeer:
        self.app.sub_ids = {s.session_id().toString(): (s.sender_sub, s.target_sub)
                            for s in self.sessions}
        self.home.mkdir(parents=True, exist_ok=True)
        cfg = self.home / "quickfix.cfg"
        cfg.write_text(self.config_text(), encoding="ascii")
        settings = fix.SessionSettings(str(cfg))
        store = fix.FileStoreFactory(settings)
        logs = fix.FileLogFactory(settings)
        # the threaded acceptor: SocketAcceptor.stop races its own poll loop (SocketServer::close
        # walks a map the loop is changing) and crashes now and then when a peer has just left
        cls = fix.ThreadedSocketAcceptor if self.role == "acceptor" else fix.SocketInitiator
        # SWIG keeps no references: the engine must not outlive its factories and settings
        self._keep = (settings, store, logs)
        self._engine = cls(self.app, store, settings, logs)
        self._engine.start()
        return self

    def stop(self) -> None:
        """Log out every session, wait (up to 2 s) for the replies, then stop the engine.

        QuickFIX's own graceful stop polls in whole seconds; doing the logout here first
        keeps a test fast. Call it off the event loop that serves our side of the link."""
        if self._engine is not None:
            sessions = [fix.Session.lookupSession(s.session_id()) for s in self.sessions]
            live = [s for s in sessions if s is not None and s.isLoggedOn()]
            for s in live:
                s.logout()
            end = time.monotonic() + 2.0
            while any(s.isLoggedOn() for s in live) and time.monotonic() < end:
                time.sleep(0.005)
            with contextlib.suppress(Exception):
                self._engine.stop(True)
            self._engine = None
            self._keep = ()

    def __enter__(self) -> QuickFixPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # session control (QuickFIX's own API: the way a test reaches into the peer)
    def session(self, index: int = 0) -> fix.Session:
        s = fix.Session.lookupSession(self.sessions[index].session_id())
        if s is None:
            raise AssertionError(f"QuickFIX peer: no session {self.sessions[index]}")
        return s

    def send(self, msg: fix.Message, index: int = 0) -> bool:
        return fix.Session.sendToTarget(msg, self.sessions[index].session_id())

    def next_sender_seq(self, index: int = 0) -> int:
        return self.session(index).getExpectedSenderNum()

    def next_target_seq(self, index: int = 0) -> int:
        return self.session(index).getExpectedTargetNum()

    def logged_on(self, index: int = 0) -> bool:
        return bool(self.session(index).isLoggedOn())

    def wait_logged_on(self, index: int = 0, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while not self.logged_on(index):
            if time.monotonic() > end:
                raise AssertionError(f"QuickFIX peer: session {index} did not log on; "
                                     f"{self.log_tail()}")
            time.sleep(0.01)

    def log_tail(self, n: int = 2000) -> str:
        """The end of QuickFIX's event logs (why a logon failed, in its own words)."""
        out = []
        for p in sorted((self.home / "log").glob("*.event.log")):
            out.append(p.read_text(errors="replace")[-n:])
        return " | ".join(out)
