"""Tunnel benchmark: packets/s per core at one tunnel end, bytes per call-minute, gap at failover.

    PYTHONPATH=. .venv/bin/python bench/tunnel_bench.py [--seconds 5] [--size 172]

1. Packets per second per core. A generator floods 172-byte datagrams (an RTP G.711
   packet) over loopback through, in turn:
     - a plain UDP forwarder (drain-until-EAGAIN receive, send on): the baseline;
     - tunnel end A (plain in, encrypt + send) and tunnel end B (receive + decrypt, plain out).
   Each runs in its own process; packets handled divided by that process's CPU seconds
   gives packets/s per core, printed beside the baseline as a ratio.
2. Bytes on the wire per voice call-minute, G.711 and Opus, through the tunnel versus
   plain RTP/UDP, counted from the frames a link core emits for a minute of 20 ms
   packets (fake clock), plus the link's probe traffic per minute.
3. Media gap at failover: a 50 pps stream on a fake clock while the leased line is cut,
   with the default path-monitor settings (the netns end-to-end test prints the real one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.tunnel import pki  # noqa: E402
from gateway.tunnel.frame import TrafficClass  # noqa: E402
from gateway.tunnel.udp import MediaSocket  # noqa: E402

# -- worker roles (run as subprocesses of this script) -------------------------------------------


def _cpu() -> float:
    return time.process_time()


async def role_forward(listen: int, target: int, seconds: float) -> dict[str, Any]:
    count = 0

    def on(sock: MediaSocket, data: bytes, addr: tuple[str, int]) -> None:
        nonlocal count
        count += 1
        sock.send(data, ("127.0.0.1", target))

    sock = MediaSocket.bind("127.0.0.1", listen, on)
    print(json.dumps({"ready": True}), flush=True)
    return await _measure(lambda: count, seconds, sock.close)


async def role_tunnel(
    side: str, workdir: str, listen: int, peer_port: int, target: int, seconds: float
) -> dict[str, Any]:
    from gateway.configschema import load_section
    from gateway.tunnel.config import TunnelConfig
    from gateway.tunnel.flows import UdpBridge
    from gateway.tunnel.renewal import IdentityFiles
    from gateway.tunnel.service import TunnelService

    node = "a" if side == "a" else "b"
    other = "b" if side == "a" else "a"
    d = Path(workdir)
    identity = IdentityFiles(d / "ca.pem", d / f"{node}.pem", d / f"{node}.key").load(node)
    peer: dict[str, Any] = {"name": other, "paths": [{"name": "lo"}]}
    values: dict[str, Any] = {"enabled": True, "node": node}
    if side == "a":
        peer["paths"] = [{"name": "lo", "address": "127.0.0.1", "port": peer_port}]
    else:
        peer["dial"] = False
        values["listen"] = [f"127.0.0.1:{peer_port}"]
    values["peers"] = [peer]
    service = TunnelService(load_section(TunnelConfig, values, "tunnel"), identity)
    await service.start()
    bridges: list[UdpBridge] = []
    if side == "b":
        service.serve("bench", lambda f: bridges.append(UdpBridge.open(f, remote=("127.0.0.1", target))))
        print(json.dumps({"ready": True}), flush=True)
    else:
        async with asyncio.timeout(30):
            await service.wait_connected(other)
        flow = await service.open_flow(other, "bench", TrafficClass.VIDEO)
        bridges.append(UdpBridge.open(flow, local=("127.0.0.1", listen)))
        print(json.dumps({"ready": True}), flush=True)
    link = service.links[other]

    def handled() -> int:
        return link.core.counters.tx_frames if side == "a" else link.core.counters.rx_frames

    try:
        return await _measure(handled, seconds, lambda: None)
    finally:
        await service.stop()


async def _measure(count: Any, seconds: float, done: Any) -> dict[str, Any]:
    if not sys.stdin.closed:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
    c0, n0, t0 = _cpu(), count(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, n1, t1 = _cpu(), count(), time.monotonic()
    done()
    return {"packets": n1 - n0, "cpu_s": c1 - c0, "wall_s": t1 - t0}


def role_generate(target: int, size: int, seconds: float) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = os.urandom(size)
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            try:
                sock.sendto(payload, ("127.0.0.1", target))
                sent += 1
            except OSError:
                pass
    return {"sent": sent}


# -- orchestration ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if '"ready"' not in line:
        raise SystemExit(f"worker failed to start: {line!r}")


def go_and_collect(
    workers: list[subprocess.Popen[str]], seconds: float, size: int, target: int
) -> list[dict[str, Any]]:
    for w in workers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    gen = spawn("generate", str(target), str(size), str(seconds + 1.0))
    results = []
    for w in workers:
        out, _ = w.communicate(timeout=seconds + 60)
        results.append(json.loads(out.strip().splitlines()[-1]))
    gen.communicate(timeout=30)
    return results


def per_core(result: dict[str, Any]) -> float:
    if result["packets"] <= 0 or result["cpu_s"] <= 0:
        raise SystemExit(f"a measured worker did no work: {result}")
    return float(result["packets"] / result["cpu_s"])


def bench_pps(seconds: float, size: int) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    fwd_port = free_port()
    forward = spawn("forward", str(fwd_port), str(sink_port), str(seconds))
    wait_ready(forward)
    (plain,) = go_and_collect([forward], seconds, size, fwd_port)

    with tempfile.TemporaryDirectory() as workdir:
        d = Path(workdir)
        ca_key, ca_cert = pki.init_ca("bench")
        pki.write_public(d / "ca.pem", pki.cert_pem(ca_cert))
        for node in ("a", "b"):
            key, csr = pki.request(node)
            pki.write_private(d / f"{node}.key", pki.key_pem(key))
            pki.write_public(d / f"{node}.pem", pki.cert_pem(pki.issue(ca_key, ca_cert, csr, node)))
        a_in, b_port = free_port(), free_port()
        b = spawn("tunnel", "b", workdir, "0", str(b_port), str(sink_port), str(seconds))
        wait_ready(b)
        a = spawn("tunnel", "a", workdir, str(a_in), str(b_port), "0", str(seconds))
        wait_ready(a)
        end_a, end_b = go_and_collect([a, b], seconds, size, a_in)
    sink.close()
    base = per_core(plain)
    print(f"\n1. Packets per second per core, {size}-byte datagrams over loopback ({seconds:.0f} s each)")
    print(f"   plain UDP forward (baseline)      {base:>10,.0f} pkt/s/core")
    for name, r in (("tunnel end: encrypt + send", end_a), ("tunnel end: receive + decrypt", end_b)):
        v = per_core(r)
        print(f"   {name:<33} {v:>10,.0f} pkt/s/core   ({v / base:.2f} x baseline)")
    # A two-way call at one tunnel end: 50 pkt/s to encrypt and 50 pkt/s to decrypt.
    calls = 1 / (50 / per_core(end_a) + 50 / per_core(end_b))
    print(f"   -> one core carries about {calls:,.0f} two-way 20 ms voice calls through one tunnel end")


def bench_bytes() -> None:
    from tests.tunnel.fakenet import SimPath, make_net

    print("\n2. Bytes on the wire per voice call-minute, one direction, IPv4 (20 ms packets)")
    for codec, payload in (
        ("G.711 (160 B)", 160),
        ("Opus 16 kbit/s (40 B)", 40),
        ("Opus 24 kbit/s (60 B)", 60),
    ):
        net = make_net([SimPath("leased", 0.075), SimPath("satellite", 0.3)], {"leased": 10, "satellite": 20})
        net.a.open_flow(2, TrafficClass.VOICE)
        net.b.open_flow(2, TrafficClass.VOICE)
        net.run_until(5.0)
        start = len(net.wire_log)
        count = [0]

        def tick(now: float, count: list[int] = count, net: Any = net, payload: int = payload) -> None:
            if count[0] < 3000:
                net.a.send(2, bytes(12 + payload), now)
                count[0] += 1

        net.run_until(65.0, tick=0.02, on_tick=tick)
        frames = [d for side, _, d in net.wire_log[start:] if side == "a"]
        data = [d for d in frames if d[0] & 0x0F == 0]
        probes = [d for d in frames if d[0] & 0x0F != 0]
        tunnel = sum(len(d) + 28 for d in data)
        plain = 3000 * (28 + 12 + payload)
        probe_bytes = sum(len(d) + 28 for d in probes)
        if not data or len(data) != 3000:
            raise SystemExit(f"byte count baseline did no work: {len(data)} data frames")
        print(
            f"   {codec:<22} plain RTP {plain / 1000:6.1f} kB   tunnel {tunnel / 1000:6.1f} kB"
            f"   (+{(tunnel - plain) / plain:.0%}, {tunnel * 8 / 60 / 1000:.1f} kbit/s)"
        )
    print(
        f"   probes, per link and minute, one direction, both paths: {probe_bytes / 1000:.1f} kB (shared by all calls)"
    )


def bench_failover() -> None:
    from tests.tunnel.fakenet import SimPath, make_net

    net = make_net([SimPath("leased", 0.075), SimPath("satellite", 0.3)], {"leased": 10, "satellite": 20})
    net.a.open_flow(2, TrafficClass.VOICE)
    net.b.open_flow(2, TrafficClass.VOICE)
    net.run_until(3.0)
    arrivals: list[float] = []
    seen = [0]

    def tick(now: float) -> None:
        net.a.send(2, bytes(172), now)
        if abs(now - 10.0) < 1e-9:
            net.paths["leased"].cut = True
        received = len(net.received["b"])
        arrivals.extend([now] * (received - seen[0]))
        seen[0] = received

    net.run_until(20.0, tick=0.02, on_tick=tick)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    if not gaps:
        raise SystemExit("failover baseline did no work")
    print("\n3. Media gap at failover (leased line cut, fake clock, default monitor settings)")
    print(f"   longest gap between packets at the receiver: {max(gaps) * 1000:.0f} ms (a 20 ms stream)")
    print("   (the netns end-to-end test prints the gap over real sockets and delay lines: ~0.8 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=172)
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *rest = args.role
        if role == "generate":
            print(json.dumps(role_generate(int(rest[0]), int(rest[1]), float(rest[2]))))
        elif role == "forward":
            print(json.dumps(asyncio.run(role_forward(int(rest[0]), int(rest[1]), float(rest[2])))))
        elif role == "tunnel":
            side, workdir, listen, peer_port, target, seconds = rest
            result = asyncio.run(role_tunnel(side, workdir, int(listen), int(peer_port), int(target), float(seconds)))
            print(json.dumps(result))
        return
    bench_pps(args.seconds, args.size)
    bench_bytes()
    bench_failover()


if __name__ == "__main__":
    main()
