"""``emp bench fix``: the FIX engine's inbound throughput and the order round trip.

(a) Inbound: N ExecutionReports (a TRADE session's usual traffic) go through our session
    exactly as from a socket (``Session.serve`` on a stream holding every frame: framing,
    parse, BodyLength/CheckSum, the FIX 4.4 dictionary, CompIDs, SendingTime, MsgSeqNum, the
    store's target number, the application callback), one thread, one core. Comparators on
    the same frames: QuickFIX (C++) parsing each into a ``quickfix.Message`` with length and
    checksum checks plus ``DataDictionary.validate`` (no session: less work than ours), and
    simplefix's bare parser (framing and splitting only, no validation at all).
(b) Round trip NewOrderSingle -> ExecutionReport on 127.0.0.1: our initiator against our
    venue (a separate process: ``live.venue`` behind our acceptor), p50 and p99; the same
    client against a QuickFIX acceptor (a separate process) that answers each order with an
    ExecutionReport, as the comparator.

QuickFIX comes from the ``quickfix-tls`` wheel (the ``dev`` extra); without it the comparator
figures are null. Targets (issue 13): inbound >= 20,000 messages/s, round trip p99 <= 2 ms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from live.fix import codec
from live.fix.message import Message

TARGET_MSGS_PER_S = 20_000
TARGET_P99_MS = 2.0


# ---- (a) inbound ------------------------------------------------------------------------------
def execution_reports(n: int, *, sender: str = "BRK", target: str = "EMP") -> list[bytes]:
    """``n`` ExecutionReports with MsgSeqNum 2..n+1 (1 is the Logon), as a broker sends them."""
    sent = codec.utc_timestamp()
    out = []
    for i in range(n):
        body = [(37, f"O{i}"), (11, f"C{i}"), (17, f"E{i}"), (150, "F"), (39, "2"), (1, "1"),
                (55, "1"), (54, "1"), (38, "0.1"), (40, "1"), (32, "0.1"), (31, "1.10123"),
                (151, "0"), (14, "0.1"), (6, "1.10123"), (60, sent)]
        out.append(codec.encode("FIX.4.4", "8", [(34, str(i + 2)), (49, sender), (52, sent),
                                                 (56, target)], body))
    return out


class _NullTransport:
    def get_write_buffer_size(self) -> int:
        return 0


class _NullWriter:
    """Takes what the session writes (the Logon reply) and drops it."""

    transport = _NullTransport()

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    async def on_logon(self, session: Any) -> None:
        pass

    async def on_logout(self, session: Any) -> None:
        pass

    async def on_message(self, session: Any, msg: Message) -> None:
        self.n += 1


def ours_inbound(frames: list[bytes], workdir: Path) -> float:
    """Messages per second through our acceptor-side session (Logon first, then ``frames``)."""
    from live.fix.config import SessionSettings
    from live.fix.session import Session

    logon = codec.encode("FIX.4.4", "A", [(34, "1"), (49, "BRK"), (52, codec.utc_timestamp()),
                                          (56, "EMP")], [(98, "0"), (108, "30")])
    data = logon + b"".join(frames)

    async def run() -> float:
        st = SessionSettings(sender_comp_id="EMP", target_comp_id="BRK", heartbeat_interval=30,
                             store_path=workdir / f"inbound-{time.monotonic_ns()}.db")
        app = _Counter()
        session = Session(st, app, initiator=False)
        reader = asyncio.StreamReader(limit=1 << 24)
        chunk = 65536
        for i in range(0, len(data), chunk):
            reader.feed_data(data[i:i + chunk])
        reader.feed_eof()
        t0 = time.perf_counter()
        await session.serve(reader, _NullWriter(), codec.FrameParser())  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
        session.close_store()
        if app.n != len(frames):
            raise RuntimeError(f"bench fix: the application got {app.n} of {len(frames)} "
                               "messages (the engine rejected some)")
        return len(frames) / dt

    return asyncio.run(run())


def quickfix_inbound(frames: list[bytes], workdir: Path) -> float | None:
    """QuickFIX: ``Message(str, dictionary, validate)`` + ``DataDictionary.validate`` each."""
    try:
        import quickfix as fix

        from benchmarks.quickfix_peer import write_dictionary
    except ImportError:
        return None
    dd = fix.DataDictionary(str(write_dictionary(workdir / "FIX44.xml")))
    texts = [f.decode() for f in frames]
    t0 = time.perf_counter()
    for text in texts:
        msg = fix.Message(text, dd, True)
        dd.validate(msg)
    return len(texts) / (time.perf_counter() - t0)


def simplefix_inbound(frames: list[bytes]) -> float:
    """simplefix's FixParser: cut the stream into messages and split fields, nothing more
    (fed 4 kB at a time, its fastest; a whole buffer at once is quadratic in simplefix)."""
    import simplefix

    parser = simplefix.FixParser()
    data = b"".join(frames)
    chunk = 4096  # its best feed size (a big buffer makes it quadratic: 64 kB is 20 % slower)
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(data), chunk):
        parser.append_buffer(data[i:i + chunk])
        while parser.get_message() is not None:
            n += 1
    dt = time.perf_counter() - t0
    if n != len(frames):
        raise RuntimeError(f"bench fix: simplefix parsed {n} of {len(frames)} messages")
    return n / dt


# ---- (b) round trip ---------------------------------------------------------------------------
def serve_venue() -> None:
    """Child process: our venue (one synthetic symbol, id 1) behind our acceptor on a free
    port; prints the port, serves until stdin closes."""
    import numpy as np

    from live.fix.acceptor import start_acceptor
    from live.fix.config import AcceptorSettings, SessionSettings
    from live.venue.app import Venue
    from live.venue.feed import Feed
    from live.venue.spec import SymbolSpec

    spec = SymbolSpec("EURUSD", "1", 100_000, 1e-5, 1000.0, 0.0, 0.00005, 1.0, 0.0,
                      half_spread_abs=0.00004)
    n = 4
    ts = (np.int64(1_704_067_200) + np.arange(n) * 3600) * 1_000_000_000
    o = 1.1 + 0.001 * np.arange(n)
    venue = Venue({"EURUSD": spec}, {"EURUSD": Feed(ts, o, o + 0.002, o - 0.002, o + 0.001,
                                                    np.full(n, 100.0))}, cash=1e12)

    async def main() -> None:
        home = Path(tempfile.mkdtemp(prefix="emp-bench-venue-"))
        sessions = [SessionSettings(sender_comp_id="EMPVENUE", target_comp_id="EMPCLIENT",
                                    sender_sub_id=sub, heartbeat_interval=30,
                                    reset_on_logon=True, store_path=home / "messages.db")
                    for sub in ("QUOTE", "TRADE")]
        acceptor = await start_acceptor(AcceptorSettings(port=0, sessions=sessions), venue)
        await venue.step()
        print(acceptor.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await acceptor.close()

    asyncio.run(main())


def serve_quickfix() -> None:
    """Child process: a QuickFIX acceptor that answers each order with an ExecutionReport."""
    from benchmarks.quickfix_peer import QuickFixPeer, SessionSpec

    home = Path(tempfile.mkdtemp(prefix="emp-bench-quickfix-"))
    peer = QuickFixPeer("acceptor", home, [SessionSpec("EMPVENUE", "EMPCLIENT")],
                        reset_on_logon=True, dictionary=True,
                        extra={"PersistMessages": "Y"})
    with peer:
        print(peer.port, flush=True)
        sys.stdin.read()


def _child(target: str) -> tuple[subprocess.Popen, int]:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from benchmarks.bench_fix import {target}; {target}()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, env=env, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"bench fix: {target} did not start (exit {proc.wait()})")
    return proc, int(line)


def _stop(proc: subprocess.Popen) -> None:
    if proc.stdin:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Waiter:
    """Our client's application: resolves the future of each ClOrdID on its first report."""

    def __init__(self) -> None:
        self.pending: dict[str, asyncio.Future] = {}

    async def on_logon(self, session: Any) -> None:
        pass

    async def on_logout(self, session: Any) -> None:
        pass

    async def on_message(self, session: Any, msg: Message) -> None:
        fut = self.pending.pop(msg.get(11) or "", None)
        if fut is not None and not fut.done():
            fut.set_result(msg)


def round_trip(port: int, orders: int, warmup: int, sub_id: str | None,
               workdir: Path) -> dict[str, float]:
    """p50 / p99 (ms) from ``send`` of a NewOrderSingle to its first ExecutionReport."""
    from live.fix.config import InitiatorSettings, SessionSettings
    from live.fix.initiator import start_initiator

    async def run() -> dict[str, float]:
        app = _Waiter()
        st = InitiatorSettings(port=port, reconnect_min_s=0.1, session=SessionSettings(
            sender_comp_id="EMPCLIENT", target_comp_id="EMPVENUE", target_sub_id=sub_id,
            heartbeat_interval=30, reset_on_logon=True,
            store_path=workdir / f"client-{time.monotonic_ns()}.db"))
        ini = await start_initiator(st, app)
        try:
            if not await ini.wait_logged_on(15):
                raise RuntimeError(f"bench fix: no logon to 127.0.0.1:{port}")
            loop = asyncio.get_running_loop()
            times = []
            for i in range(warmup + orders):
                cl = f"B{i}"
                fut = loop.create_future()
                app.pending[cl] = fut
                msg = Message("D", [(11, cl), (1, "1"), (55, "1"), (54, "1" if i % 2 else "2"),
                                    (60, codec.utc_timestamp()), (38, "0.01"), (40, "1"),
                                    (99, "1.0" if i % 2 else "1.3")])
                t0 = time.perf_counter()
                await ini.session.send(msg)
                await asyncio.wait_for(fut, 10)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
        finally:
            await ini.close()
        q = statistics.quantiles(times, n=100, method="inclusive")
        return {"p50_ms": round(statistics.median(times), 4), "p99_ms": round(q[98], 4),
                "orders": len(times)}

    return asyncio.run(run())


def _venue_round_trip(orders: int, warmup: int, workdir: Path) -> dict[str, float]:
    proc, port = _child("serve_venue")
    try:
        return round_trip(port, orders, warmup, "TRADE", workdir)
    finally:
        _stop(proc)


def _quickfix_round_trip(orders: int, warmup: int, workdir: Path) -> dict[str, float] | None:
    try:
        import quickfix  # noqa: F401
    except ImportError:
        return None
    proc, port = _child("serve_quickfix")
    try:
        return round_trip(port, orders, warmup, None, workdir)
    finally:
        _stop(proc)


def run(messages: int = 50_000, orders: int = 2_000, warmup: int = 100,
        repeat: int = 3) -> dict[str, Any]:
    """Every figure of ``emp bench fix`` as one JSON-ready dict."""
    frames = execution_reports(messages)
    with tempfile.TemporaryDirectory(prefix="emp-bench-fix-") as tmp:
        work = Path(tmp)
        ours = max(ours_inbound(frames, work) for _ in range(max(1, repeat)))
        qf = [quickfix_inbound(frames, work) for _ in range(max(1, repeat))]
        sfx = max(simplefix_inbound(frames) for _ in range(max(1, repeat)))
        venue = _venue_round_trip(orders, warmup, work)
        qf_rt = _quickfix_round_trip(orders, warmup, work)
    qf_best = None if qf[0] is None else max(x for x in qf if x is not None)
    return {
        "bench": "fix",
        "inbound": {
            "messages": messages, "msg_type": "8 ExecutionReport",
            "ours_msgs_per_s": round(ours),
            "quickfix_parse_validate_msgs_per_s": None if qf_best is None else round(qf_best),
            "simplefix_parse_only_msgs_per_s": round(sfx),
            "target_msgs_per_s": TARGET_MSGS_PER_S, "meets_target": ours >= TARGET_MSGS_PER_S,
        },
        "round_trip": {
            "ours_venue": venue, "quickfix_acceptor": qf_rt,
            "target_p99_ms": TARGET_P99_MS, "meets_target": venue["p99_ms"] <= TARGET_P99_MS,
        },
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
    }
