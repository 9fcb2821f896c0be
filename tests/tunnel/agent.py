"""Test harness: runs the tunnel from a gateway config and obeys JSON-line commands on stdin.

    ip netns exec NS python -m tests.tunnel.agent gateway.toml

Commands (one JSON object per line, answered with {"id": ..., ...}):
    {"cmd": "wait_link", "peer": P}                    control channel and keys up
    {"cmd": "serve_call", "freq": F}                    answer "call" flows with a tone stream
    {"cmd": "call", "peer": P, "freq": F, "seconds": S} place a call, report what came back
    {"cmd": "serve_tv"}                                 check MPEG-TS-like flows for completeness
    {"cmd": "tv", "peer": P, "pps": N, "seconds": S}    send an MPEG-TS-like stream, class TV
    {"cmd": "status"}                                    the service's status()
Events (no id): {"event": "call_report", ...}, {"event": "tv_report", ...}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from gateway.config import load_config
from gateway.tunnel.errors import FlowRefused
from gateway.tunnel.flows import Flow
from gateway.tunnel.run import RunningTunnel, build_tunnel

from .tone import FRAME, dominant, rtp_packet, tone_frame

TS_PACKET = 188
TS_PER_DATAGRAM = 7


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class CallLeg:
    """Sends a 50 pps tone over a flow and records what arrives."""

    def __init__(self, flow: Flow, freq: float) -> None:
        self.flow = flow
        self.freq = freq
        self.arrivals: list[tuple[float, int]] = []
        self.payloads: list[bytes] = []
        self.loop = asyncio.get_running_loop()
        flow.set_receiver(self._on_packet)
        self.sent = 0

    def _on_packet(self, data: bytes) -> None:
        self.arrivals.append((self.loop.time(), int.from_bytes(data[2:4], "big")))
        self.payloads.append(data[12:])

    async def send_for(self, seconds: float) -> None:
        start = self.loop.time()
        while not self.flow.closed and self.loop.time() - start < seconds:
            self.flow.send(rtp_packet(self.sent, tone_frame(self.freq, self.sent)))
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent * 0.02 - self.loop.time()))

    def report(self) -> dict[str, Any]:
        seqs = [s for _, s in self.arrivals]
        gaps = [(b[0] - a[0], a[0]) for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]
        gap, at = max(gaps) if gaps else (0.0, 0.0)
        freq, share = dominant(self.payloads, [300.0, 425.0, 800.0, 1000.0, 1400.0]) if self.payloads else (0, 0)
        return {
            "sent": self.sent,
            "received": len(seqs),
            "unique": len(set(seqs)),
            "max_gap_ms": round(gap * 1000, 1),
            "tone": freq,
            "tone_share": round(share, 3),
            "frame_bytes": FRAME,
        }


def ts_datagram(counter: int) -> bytes:
    packets = []
    for i in range(TS_PER_DATAGRAM):
        cc = (counter * TS_PER_DATAGRAM + i) & 0x0F
        header = bytes([0x47, 0x01, 0x00, 0x10 | cc])
        packets.append(header + (counter * TS_PER_DATAGRAM + i).to_bytes(4, "big") + bytes(TS_PACKET - 8))
    return b"".join(packets)


class TvSink:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.packets = 0
        self.cc_errors = 0
        self.expected_cc: int | None = None
        self.last_index = -1
        flow.set_receiver(self._on_datagram)

    def _on_datagram(self, data: bytes) -> None:
        for off in range(0, len(data), TS_PACKET):
            packet = data[off : off + TS_PACKET]
            if packet[0] != 0x47:
                self.cc_errors += 1
                continue
            cc = packet[3] & 0x0F
            if self.expected_cc is not None and cc != self.expected_cc:
                self.cc_errors += 1
            self.expected_cc = (cc + 1) & 0x0F
            self.last_index = int.from_bytes(packet[4:8], "big")
            self.packets += 1

    def report(self) -> dict[str, Any]:
        return {"packets": self.packets, "cc_errors": self.cc_errors, "last_index": self.last_index}


class Agent:
    def __init__(self, running: RunningTunnel) -> None:
        self.running = running
        self.service = running.service
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["cmd"]
        if name == "wait_link":
            async with asyncio.timeout(cmd.get("within", 60)):
                await self.service.wait_connected(cmd["peer"])
            return {"ok": True}
        if name == "serve_call":
            self.service.serve("call", lambda flow: self.spawn(self._answer(flow, cmd["freq"])))
            return {"ok": True}
        if name == "call":
            flow = await self._open_retrying(cmd["peer"], "call", "voice")
            leg = CallLeg(flow, cmd["freq"])
            await leg.send_for(cmd["seconds"])
            await asyncio.sleep(1.0)  # the last packets are in flight (satellite)
            flow.close("hang up")
            return {"ok": True, **leg.report()}
        if name == "serve_tv":
            self.service.serve("tv", lambda flow: self.spawn(self._watch(flow)))
            return {"ok": True}
        if name == "tv":
            flow = await self._open_retrying(cmd["peer"], "tv", "tv")
            loop = asyncio.get_running_loop()
            start, sent = loop.time(), 0
            while loop.time() - start < cmd["seconds"]:
                flow.send(ts_datagram(sent))
                sent += 1
                await asyncio.sleep(max(0.0, start + sent / cmd["pps"] - loop.time()))
            await asyncio.sleep(cmd.get("drain_s", 6.0))
            flow.close("end of programme")
            return {"ok": True, "datagrams": sent, "packets": sent * TS_PER_DATAGRAM}
        if name == "status":
            return {"ok": True, "status": self.service.status()}
        raise ValueError(f"unknown command {name!r}")

    async def _open_retrying(self, peer: str, service: str, traffic_class: str) -> Flow:
        """Like an application should: a refusal for a link being re-established is retried."""
        for attempt in range(5):
            try:
                return await self.service.open_flow(peer, service, traffic_class, {"test": service})
            except FlowRefused as exc:
                logging.warning("open %s to %s refused (%s), attempt %d", service, peer, exc, attempt + 1)
                await asyncio.sleep(2.0)
        return await self.service.open_flow(peer, service, traffic_class, {"test": service})

    async def _answer(self, flow: Flow, freq: float) -> None:
        leg = CallLeg(flow, freq)
        await leg.send_for(3600)
        emit({"event": "call_report", **leg.report()})

    async def _watch(self, flow: Flow) -> None:
        sink = TvSink(flow)
        await flow.wait_closed()
        emit({"event": "tv_report", **sink.report()})

    async def run_command(self, line: str) -> None:
        cmd = json.loads(line)
        try:
            result = await self.handle(cmd)
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        emit({"id": cmd.get("id"), **result})


async def main(path: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    running = await build_tunnel(load_config(path))
    agent = Agent(running)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"event": "ready", "node": running.service.node})
    try:
        while line := await reader.readline():
            agent.spawn(agent.run_command(line.decode()))
    finally:
        for task in list(agent.tasks):
            task.cancel()
        await running.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
