"""Seabridge's RTP relay against rtpengine's userspace relay, on loopback, same load.

    PYTHONPATH=. .venv/bin/python bench/relay_bench.py [--calls 200,400,600,800] [--workers 2]

For each load level (N calls of G.711, 50 packets/s each way) and each system, the
calls are set up (rtpengine: "ng" offer/answer over UDP; Seabridge: RelayManager.open +
set_remote), load generator processes (bench/rtp_load.py) send for a warm-up and a
measurement window, and the bench reports:

* loss (packets sent in the window that never arrived), reordering, misdelivery;
* the relay's CPU over the window (all its processes and threads) and so the relayed
  calls per core = N / cores used, counted only at <= 1 % loss;
* one-way latency p50/p99 through the relay, and added latency = that minus the same
  generators talking directly to each other (no relay) at the same load.

Ratios are Seabridge / rtpengine at the highest load both carried at <= 1 % loss. The
bench exits non-zero if a baseline did no work (rtpengine relayed nothing, or used no CPU).
Not part of the test suite: it takes minutes and its numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.relay import RelayConfig, RelayManager  # noqa: E402

HERE = Path(__file__).resolve().parent
MAX_LOSS = 0.01
MIN_OFFERED = 0.97
PACKETS_PER_S = 50


# --- bencode and rtpengine's ng protocol --------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    def parse(i: int) -> tuple[Any, int]:
        c = data[i : i + 1]
        if c == b"i":
            end = data.index(b"e", i)
            return int(data[i + 1 : end]), end + 1
        if c in (b"l", b"d"):
            items = []
            i += 1
            while data[i : i + 1] != b"e":
                item, i = parse(i)
                items.append(item)
            if c == b"l":
                return items, i + 1
            return dict(zip(items[::2], items[1::2], strict=True)), i + 1
        colon = data.index(b":", i)
        length = int(data[i:colon])
        raw = data[colon + 1 : colon + 1 + length]
        try:
            return raw.decode(), colon + 1 + length
        except UnicodeDecodeError:
            return raw, colon + 1 + length

    value, end = parse(0)
    if end != len(data):
        raise ValueError("trailing bytes after bencoded value")
    return value


class NgClient(asyncio.DatagramProtocol):
    """rtpengine's "ng" control protocol: "<cookie> <bencoded dict>" over UDP, replies by cookie."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.transport: asyncio.DatagramTransport | None = None
        self._cookie = random.getrandbits(32)
        self._waiting: dict[bytes, asyncio.Future[dict[str, Any]]] = {}

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, body = data.partition(b" ")
        future = self._waiting.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(bdecode(body))

    async def request(self, command: dict[str, Any], wait_s: float = 2.0, tries: int = 5) -> dict[str, Any]:
        assert self.transport is not None
        self._cookie += 1
        cookie = b"%x" % self._cookie
        message = cookie + b" " + bencode(command)
        for _ in range(tries):
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting[cookie] = future
            self.transport.sendto(message, self.address)
            try:
                reply = await asyncio.wait_for(future, wait_s)
            except TimeoutError:
                continue
            finally:
                self._waiting.pop(cookie, None)
            if reply.get("result") not in ("ok", "pong"):
                raise RuntimeError(f"rtpengine refused {command['command']}: {reply}")
            return reply
        raise RuntimeError(f"rtpengine did not answer {command['command']}")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sdp(port: int, session: int) -> str:
    return (
        "v=0\r\n"
        f"o=- {session} 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
    )


def sdp_port(text: str) -> int:
    match = re.search(r"^m=audio (\d+) ", text, re.M)
    if not match:
        raise RuntimeError(f"no audio port in rtpengine's SDP:\n{text}")
    return int(match.group(1))


# --- systems under test -------------------------------------------------------------------


@dataclass
class Call:
    a_to: int  # where the generator's A phone sends (relay port facing A)
    b_to: int
    meta: dict[str, Any] = field(default_factory=dict)


class RtpEngine:
    name = "rtpengine"

    def __init__(self, port_min: int, port_max: int) -> None:
        self.ports = range(port_min, port_max + 1)
        self.ng_port = free_udp_port()
        binary = shutil.which("rtpengine")
        if binary is None:
            raise SystemExit("rtpengine is not installed (apt-get install rtpengine-daemon)")
        self.command = [
            binary,
            "-f",
            "-t",
            "-1",
            "-i",
            "lo/127.0.0.1",
            "-n",
            f"127.0.0.1:{self.ng_port}",
            "-m",
            str(port_min),
            "-M",
            str(port_max),
            "-L",
            "3",
            "-E",
            "--no-log-timestamps",
            "--delete-delay=0",
            "--timeout=120",
            f"--listen-cli=127.0.0.1:{free_udp_port()}",
        ]
        self.process: asyncio.subprocess.Process | None = None
        self.ng: NgClient | None = None
        self.cookie_base = random.getrandbits(24)

    async def start(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.process = await asyncio.create_subprocess_exec(*self.command, stdout=subprocess.DEVNULL, stderr=self.log)
        self.ng = NgClient(self.ng_port)
        await self.ng.connect()
        deadline = time.monotonic() + 10
        while True:
            try:
                await self.ng.request({"command": "ping"}, wait_s=0.2, tries=1)
                return
            except RuntimeError:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    raise SystemExit(f"rtpengine did not start: {self.log.read().decode()}") from None

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process else []

    async def setup(self, index: int, a_port: int, b_port: int) -> Call:
        assert self.ng is not None
        call_id = f"bench-{self.cookie_base}-{index}"
        offer = await self.ng.request(
            {
                "command": "offer",
                "call-id": call_id,
                "from-tag": "a",
                "sdp": sdp(a_port, index),
                "replace": ["origin", "session-connection"],
                "ICE": "remove",
            }
        )
        answer = await self.ng.request(
            {
                "command": "answer",
                "call-id": call_id,
                "from-tag": "a",
                "to-tag": "b",
                "sdp": sdp(b_port, index),
                "replace": ["origin", "session-connection"],
                "ICE": "remove",
            }
        )
        # B sends to the port in the offer rtpengine rewrote; A to the one in the answer.
        return Call(a_to=sdp_port(answer["sdp"]), b_to=sdp_port(offer["sdp"]), meta={"call_id": call_id})

    async def teardown(self, call: Call) -> None:
        assert self.ng is not None
        await self.ng.request({"command": "delete", "call-id": call.meta["call_id"], "from-tag": "a"})

    async def stop(self) -> None:
        if self.ng is not None:
            self.ng.close()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class Seabridge:
    def __init__(self, port_min: int, port_max: int, workers: int) -> None:
        self.name = f"seabridge(workers={workers})"
        self.ports = range(port_min, port_max + 1)
        self.config = RelayConfig("127.0.0.1", "127.0.0.1", port_min, port_max, workers=workers)
        self.manager = RelayManager(self.config)
        self.command = [f"RelayManager({self.config})"]

    async def start(self) -> None:
        await self.manager.start()

    @property
    def pids(self) -> list[int]:
        return [os.getpid(), *self.manager.worker_pids]

    async def setup(self, index: int, a_port: int, b_port: int) -> Call:
        session = await self.manager.open(f"bench-{index}")
        await session.set_remote("a", ("127.0.0.1", a_port))
        await session.set_remote("b", ("127.0.0.1", b_port))
        return Call(session.leg_a.local_rtp_port, session.leg_b.local_rtp_port, {"session": session})

    async def teardown(self, call: Call) -> None:
        await call.meta["session"].close()

    async def stop(self) -> None:
        await self.manager.aclose()


class Direct:
    """No relay: the generators' A and B phones talk to each other (latency floor)."""

    name = "direct"
    command = ["(no relay)"]
    ports = range(0)
    pids: list[int] = []

    async def start(self) -> None:
        pass

    async def setup(self, index: int, a_port: int, b_port: int) -> Call:
        return Call(a_to=b_port, b_to=a_port)

    async def teardown(self, call: Call) -> None:
        pass

    async def stop(self) -> None:
        pass


# --- the load -------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Generator:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "rtp_load.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        reply: dict[str, Any] = json.loads(self.process.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def udp_drops() -> dict[int, int]:
    """Datagrams the kernel dropped per local UDP port (full receive buffers), from /proc/net/udp."""
    drops: dict[int, int] = {}
    with open("/proc/net/udp") as table:
        next(table)
        for line in table:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            drops[port] = drops.get(port, 0) + int(fields[-1])
    return drops


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def _busy(times: Any) -> float:
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


def percentile(hist: dict[int, int], q: float, bin_us: int) -> float:
    count = sum(hist.values())
    if not count:
        return float("nan")
    target = q * count
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= target:
            return (b + 0.5) * bin_us / 1000.0  # ms
    return float("nan")


@dataclass
class Outcome:
    system: str
    calls: int
    window_s: float
    sent: int
    received: int
    reordered: int
    misdelivered: int
    cpu_cores: float
    generator_cores: float
    p50_ms: float
    p99_ms: float
    machine_cores: float  # every process on the machine, to show interference
    # Datagrams the kernel dropped at full receive buffers, at the relay's sockets and the
    # generators' (counters since the sockets were opened; the generators' are new each run).
    relay_drops: int = 0
    generator_drops: int = 0

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def offered(self) -> float:
        """Share of the nominal load the generators managed to send (they share the cores)."""
        return self.sent / (self.calls * 2 * PACKETS_PER_S * self.window_s)

    @property
    def relayed_calls(self) -> float:
        """Calls' worth of packets actually relayed (both directions at 50 packets/s)."""
        return self.received / (2 * PACKETS_PER_S * self.window_s)

    @property
    def calls_per_core(self) -> float:
        return self.relayed_calls / self.cpu_cores if self.cpu_cores > 0 else float("nan")

    @property
    def valid(self) -> bool:
        return self.loss <= MAX_LOSS and self.offered >= MIN_OFFERED


async def measure(system: Any, calls: int, generators: int, warmup: float, duration: float) -> Outcome:
    loop = asyncio.get_running_loop()
    gens = [Generator() for _ in range(generators)]
    try:
        ends = [await loop.run_in_executor(None, g.ask, {"bind": True}) for g in gens]
        placed: list[list[Call]] = [[] for _ in gens]
        for i in range(calls):
            g = i % generators
            placed[g].append(await system.setup(i, ends[g]["a_port"], ends[g]["b_port"]))
        run_id = random.getrandbits(31)
        start_ns = time.monotonic_ns() + 300_000_000
        futures = []
        for g, gen in enumerate(gens):
            spec = {
                "run_id": run_id,
                "calls": [
                    # Symmetric relays answer from the port they are sent to; directly, B
                    # hears A from A's own socket.
                    [c.a_to, c.b_to, c.a_to, c.b_to]
                    if system.pids
                    else [c.a_to, c.b_to, ends[g]["b_port"], ends[g]["a_port"]]
                    for c in placed[g]
                ],
                "start_ns": start_ns,
                "warmup_s": warmup,
                "duration_s": duration,
            }
            futures.append(loop.run_in_executor(None, gen.ask, {"run": spec}))
        window_start = start_ns / 1e9 + warmup
        await asyncio.sleep(max(0.0, window_start - time.monotonic()))
        gen_pids = [g.process.pid for g in gens]
        cpu0, gen0, t0 = cpu_seconds(system.pids), cpu_seconds(gen_pids), time.monotonic()
        machine0 = psutil.cpu_times()
        await asyncio.sleep(duration)
        cpu1, gen1, t1 = cpu_seconds(system.pids), cpu_seconds(gen_pids), time.monotonic()
        machine1 = psutil.cpu_times()
        results = [r["result"] for r in await asyncio.gather(*futures)]
        drops = udp_drops()
        gen_ports = {e[k] for e in ends for k in ("a_port", "b_port")}
        generator_drops = sum(n for port, n in drops.items() if port in gen_ports)
        relay_drops = sum(n for port, n in drops.items() if port in system.ports)
        for g_calls in placed:
            for call in g_calls:
                await system.teardown(call)
    finally:
        for gen in gens:
            gen.close()
    hist: dict[int, int] = {}
    for r in results:
        for b, c in r["hist"].items():
            hist[int(b)] = hist.get(int(b), 0) + c
    bin_us = results[0]["hist_bin_us"]
    return Outcome(
        system=system.name,
        calls=calls,
        window_s=duration,
        sent=sum(r["sent_window"] for r in results),
        received=sum(r["recv_window"] for r in results),
        reordered=sum(r["reordered"] for r in results),
        misdelivered=sum(r["misdelivered"] for r in results),
        cpu_cores=(cpu1 - cpu0) / (t1 - t0),
        generator_cores=(gen1 - gen0) / (t1 - t0),
        machine_cores=(_busy(machine1) - _busy(machine0)) / (t1 - t0),
        p50_ms=percentile(hist, 0.50, bin_us),
        p99_ms=percentile(hist, 0.99, bin_us),
        relay_drops=relay_drops,
        generator_drops=generator_drops,
    )


def show(o: Outcome) -> None:
    verdict = "ok" if o.valid else ("LOSS" if o.loss > MAX_LOSS else "generator-bound")
    print(
        f"  {o.system:22s} {o.calls:5d} calls  sent {o.sent:8d} recv {o.received:8d} "
        f"loss {100 * o.loss:6.3f}%  offered {100 * o.offered:5.1f}%  reordered {o.reordered} "
        f"misdelivered {o.misdelivered}  relay {o.cpu_cores:4.2f} cores "
        f"-> {o.calls_per_core:7.1f} calls/core  "
        f"generators {o.generator_cores:4.2f}  machine {o.machine_cores:4.2f} busy  "
        f"latency p50 {o.p50_ms:7.3f} p99 {o.p99_ms:8.3f} ms  "
        f"kernel drops relay {o.relay_drops} generators {o.generator_drops}  [{verdict}]",
        flush=True,
    )


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="300,450,600", help="load levels (calls), comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="Seabridge relay worker processes (0: in-process)")
    parser.add_argument("--generators", type=int, default=2, help="load generator processes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per system and level (medians reported)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    levels = [int(x) for x in args.calls.split(",")]

    # Four ports per call each; below Linux's ephemeral ports (32768 up).
    engine = RtpEngine(10000, 20999)
    seabridge = Seabridge(21000, 31999, args.workers)
    direct = Direct()
    systems = (direct, engine, seabridge)
    print(
        f"machine: {os.cpu_count()} cores; load: G.711 20 ms (50 packets/s each way), "
        f"{args.generators} generator processes; {args.repeat} runs per system and level"
    )
    print(f"baseline command: {' '.join(engine.command)}")
    print(f"seabridge: {seabridge.command[0]}")
    runs: dict[tuple[str, int], list[Outcome]] = {}
    broken = False
    try:
        for system in systems:
            await system.start()
        # Interleaved, so drifting background load on a shared machine hits every system alike.
        for n in levels:
            for _ in range(args.repeat):
                for system in systems:
                    outcome = await measure(system, n, args.generators, args.warmup, args.duration)
                    runs.setdefault((system.name, n), []).append(outcome)
                    show(outcome)
                    if system is seabridge and (outcome.misdelivered or outcome.reordered):
                        print("  !! seabridge delivered a packet to the wrong call or out of order")
                        broken = True
    finally:
        for system in systems:
            await system.stop()

    base_runs = [o for (name, _), outs in runs.items() if name == engine.name for o in outs]
    if not any(o.received for o in base_runs) or not any(o.cpu_cores > 0.001 for o in base_runs):
        print("FAIL: the rtpengine baseline did no work (nothing relayed or no CPU used)")
        return 2

    print("\nmedians over valid runs (loss <= 1 %, generators offered >= 97 % of the load):")
    headline: tuple[int, float, float, float, float, float, float] | None = None
    for n in levels:
        row = {}
        for system in systems:
            valid = [o for o in runs[(system.name, n)] if o.valid]
            row[system.name] = (
                len(valid),
                median([o.calls_per_core for o in valid]),
                median([o.p50_ms for o in valid]),
                median([o.p99_ms for o in valid]),
            )
        d, b, o = row[direct.name], row[engine.name], row[seabridge.name]
        print(
            f"  {n:5d} calls: rtpengine {b[1]:7.1f} calls/core ({b[0]} valid), seabridge {o[1]:7.1f} "
            f"({o[0]} valid); latency p50/p99 ms: direct {d[2]:.3f}/{d[3]:.3f}, "
            f"rtpengine {b[2]:.3f}/{b[3]:.3f}, seabridge {o[2]:.3f}/{o[3]:.3f}"
        )
        if d[0] and b[0] and o[0]:
            headline = (n, b[1], o[1], b[2] - d[2], o[2] - d[2], b[3] - d[3], o[3] - d[3])
    for (name, n), outs in sorted(runs.items()):
        print(
            f"raw counts {name} @{n}: sent {[o.sent for o in outs]} recv {[o.received for o in outs]} "
            f"cpu {[round(o.cpu_cores, 3) for o in outs]}"
        )
    if headline is None:
        print("FAIL: no load level where every system had a valid run")
        return 1
    n, b_cpc, o_cpc, b50, o50, b99, o99 = headline
    print(f"\nat {n} calls (highest load with valid runs of all three):")
    print(f"  relayed calls per core: rtpengine {b_cpc:.1f}, seabridge {o_cpc:.1f}")
    print(f"  RATIO calls/core seabridge/rtpengine = {o_cpc / b_cpc:.2f}x (target >= 1.0x)")
    print(f"  added one-way latency p50: rtpengine {b50:.3f} ms, seabridge {o50:.3f} ms, ratio {_ratio(o50, b50)}")
    print(f"  added one-way latency p99: rtpengine {b99:.3f} ms, seabridge {o99:.3f} ms, ratio {_ratio(o99, b99)}")
    return 1 if broken else 0


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs > 0 else "n/a (baseline added none)"


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
