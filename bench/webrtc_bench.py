"""Browser phone benchmark: CPU per call and per stream, against baselines measured in the same run.

1. Bridged browser <-> SIP calls (Opus <-> PCMU transcoding): a real `seabridge run`
   gateway carries N calls from aiortc "browsers" (pre-encoded Opus, DTLS-SRTP) to SIP
   "phones" (PCMU); its CPU time per call is compared with rtpengine's own
   Opus <-> PCMU transcoding of N calls on this machine (ng protocol, userspace).
2. Video, browser to browser: M streams through the gateway's forwarding path
   (encoded RTP passed on untouched) against M streams decoded and re-encoded by
   aiortc, in a child process whose CPU is measured.

Not run by pytest. Prints calls/streams per core and ratios; exits non-zero if a
baseline did no work (a ratio against nothing means nothing).

    .venv/bin/python bench/webrtc_bench.py [--calls 10] [--streams 4] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import psutil
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.clock import SystemClock  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.storage.gateway_db import open_gateway_db  # noqa: E402
from gateway.users import SqliteUserStore, ha1, make_user  # noqa: E402
from gateway.webrtc import aiortc_glue  # noqa: E402
from gateway.webrtc.call_media import CallMedia, FeedTrack  # noqa: E402
from gateway.webrtc.config import WebRtcConfig  # noqa: E402
from gateway.webrtc.metrics import WebRtcMetrics  # noqa: E402
from gateway.webrtc.rtp_port import RtpPort, open_rtp_port  # noqa: E402
from gateway.webrtc.sip_agent import SipAgent  # noqa: E402
from gateway.webrtc.sip_sdp import answer_offer, plan_from_answer  # noqa: E402
from gateway.webrtc.sip_ua import Account, AgentSettings, Event, IncomingCallReceived  # noqa: E402
from tests.support.gateway import GatewayProcess  # noqa: E402
from tests.support.ports import free_port, port_block  # noqa: E402

PASSWORD = "bench-pass-1"


class BenchFailed(RuntimeError):
    pass


# --- media sources (encoded once, up front, outside the measured processes) -------------------------


def opus_packets(seconds: float = 1.0) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.layout, codec.format, codec.bit_rate = 48000, "stereo", "s16", 32000
    codec.time_base = fractions.Fraction(1, 48000)
    out: list[bytes] = []
    for i in range(int(seconds * 50)):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        samples = (int(8000 * math.sin(2 * math.pi * 440 * (i * 960 + n) / 48000)) for n in range(960))
        frame.planes[0].update(b"".join(struct.pack("<hh", s, s) for s in samples))
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def pcmu_payload() -> bytes:
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate, codec.layout, codec.format = 8000, "mono", "s16"
    frame = av.AudioFrame(format="s16", layout="mono", samples=160)
    frame.planes[0].update(
        b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 1000 * n / 8000))) for n in range(160))
    )
    frame.sample_rate, frame.pts = 8000, 0
    return b"".join(bytes(p) for p in codec.encode(frame))


def vp8_frames(count: int = 150, width: int = 640, height: int = 480) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt, codec.bit_rate = width, height, "yuv420p", 600_000
    codec.time_base, codec.gop_size = fractions.Fraction(1, 30), 60
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame(width, height, "yuv420p")
        for index, plane in enumerate(frame.planes):
            row = bytes((x * 3 + i * 5 + index * 60) % 256 for x in range(plane.line_size))
            plane.update(row * plane.height)
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out


class PacketTrack(MediaStreamTrack):
    """Pre-encoded media at real-time pace: aiortc packetizes, it does not encode."""

    def __init__(self, kind: str, packets: list[bytes], rate: int, step: int, interval: float) -> None:
        super().__init__()
        self.kind = kind
        self._packets, self._rate, self._step, self._interval = packets, rate, step, interval
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._index * self._interval - loop.time()))
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts, packet.time_base = self._index * self._step, fractions.Fraction(1, self._rate)
        self._index += 1
        return packet


def restrict(pc: RTCPeerConnection) -> None:
    aiortc_glue.restrict_gathering(pc, ["127.0.0.1"], None)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def measure(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


# --- 1a. the gateway bridging browsers to phones ---------------------------------------------------------


class PhoneBank:
    """SIP phones answering with PCMU and talking at 50 packets/s (our own UA core, as a load generator)."""

    def __init__(self, service: tuple[str, int], count: int) -> None:
        self.count = count
        self.agent = SipAgent(AgentSettings("", service, register_expires=3600), SystemClock(), self._event)
        self.ports: list[RtpPort] = []
        self.received = 0
        self.registered = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _event(self, event: Event) -> None:
        if type(event).__name__ == "RegistrationSucceeded":
            self.registered += 1
        if isinstance(event, IncomingCallReceived):
            task = asyncio.ensure_future(self._answer(event))
            self._tasks.add(task)

    async def _answer(self, event: IncomingCallReceived) -> None:
        port = await open_rtp_port("127.0.0.1", None)
        _ours, plan = answer_offer(event.sdp, "127.0.0.1", port.port, None)
        port.remote = plan.audio.remote
        # A G.711-only desk phone: it answers PCMU whatever else is offered.
        sdp = (
            f"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        ).encode()
        port.on_rtp(lambda data, source: self._count())
        self.ports.append(port)
        self.agent.answer(event.call, sdp)

    def _count(self) -> None:
        self.received += 1

    async def start(self) -> None:
        await self.agent.start("127.0.0.1", 0)
        for i in range(self.count):
            hashes = {alg: ha1(alg, f"p{i}", "bench", PASSWORD) for alg in ("MD5", "SHA-256")}
            self.agent.register(f"p{i}", Account(f"p{i}", "bench", hashes), f"p{i}")
        await wait_for(lambda: self.registered >= self.count, 20, "phones registered")

    async def talk(self, payload: bytes) -> None:
        seq, ts, ssrc = 0, 0, secrets.randbits(32)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while True:
            seq, ts = (seq + 1) % 65536, (ts + 160) % 2**32
            data = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload
            for port in self.ports:
                port.send_rtp(data)
            await asyncio.sleep(max(0.0, start + seq * 0.02 - loop.time()))

    def close(self) -> None:
        for port in self.ports:
            port.close()
        self.agent.close()


class Browser:
    """An aiortc peer speaking the page's WebSocket protocol, sending pre-encoded Opus."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str, opus: list[bytes]) -> None:
        self.http, self.base, self.token, self.opus = http, base, token, opus
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = 0
        self.connected = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def call(self, target: str) -> None:
        ws = await self.http.ws_connect(self.base.replace("https", "wss") + "ws", ssl=False)
        self.ws = ws
        await ws.send_str(json.dumps({"type": "auth", "token": self.token}))
        while json.loads((await ws.receive()).data)["type"] != "registered":
            pass
        self.pc.addTrack(PacketTrack("audio", self.opus, 48000, 960, 0.02))
        restrict(self.pc)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        receiver = self.pc.getTransceivers()[0].receiver
        aiortc_glue.tap_receiver(receiver, lambda packet: self._count())
        await ws.send_str(json.dumps({"type": "call", "call": "c1", "to": target, "sdp": self.pc.localDescription.sdp}))
        asyncio.ensure_future(self._read())

    def _count(self) -> None:
        self.received += 1

    async def _read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            data = json.loads(message.data)
            if data["type"] == "answer":
                await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
            elif data["type"] == "connected":
                self.connected.set()
            elif data["type"] == "ended":
                print(f"  a bench call ended early: {data}", file=sys.stderr)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        await self.pc.close()


async def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise BenchFailed(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def gateway_bridged(calls: int, seconds: float) -> float:
    """CPU (fraction of a core) the gateway spends per bridged browser <-> phone call."""
    folder = Path(tempfile.mkdtemp(prefix="webrtc-bench-"))
    https_port = free_port()
    ice, rtp = port_block(), port_block()
    extra = f"""
[webrtc]
https_bind = "127.0.0.1"
https_port = {https_port}
ice_addresses = ["127.0.0.1"]
ice_port_min = {ice[0]}
ice_port_max = {ice[1]}
rtp_port_min = {rtp[0]}
rtp_port_max = {rtp[1]}
max_sessions_per_user = {calls + 5}
[[tenants]]
domain = "bench"
digest_algorithms = ["MD5"]
"""
    gw = GatewayProcess(folder, extra_config=extra)
    gw.write_config()
    db = open_gateway_db(load_config(gw.config_path))
    users = SqliteUserStore(db)
    for name in ["caller", *(f"p{i}" for i in range(calls))]:
        await users.add(make_user(f"{name}@bench", "hq", PASSWORD))
    db.close()
    await gw.start()
    (gw.config_path.parent / "gateway.log").unlink(missing_ok=True)  # debug logs of set-up only
    base = f"https://127.0.0.1:{https_port}/"
    phones = PhoneBank(gw.sip_address, calls)
    browsers: list[Browser] = []
    talking: asyncio.Task[None] | None = None
    try:
        assert gw.process is not None
        idle = await measure(gw.process.pid, 2.0)
        await phones.start()
        async with aiohttp.ClientSession() as http:
            async with http.post(
                base + "api/session", json={"address": "caller@bench", "password": PASSWORD}, ssl=False
            ) as r:
                token = (await r.json())["token"]
            opus = opus_packets()
            for i in range(calls):
                browser = Browser(http, base, token, opus)
                browsers.append(browser)
                await browser.call(f"p{i}")
            await asyncio.wait_for(asyncio.gather(*(b.connected.wait() for b in browsers)), 60)
            talking = asyncio.ensure_future(phones.talk(pcmu_payload()))
            await asyncio.sleep(2.0)
            phones_before, browsers_before = phones.received, sum(b.received for b in browsers)
            load = await measure(gw.process.pid, seconds)
            phone_packets = phones.received - phones_before
            browser_packets = sum(b.received for b in browsers) - browsers_before
            metrics = await gw.metrics()
            for browser in browsers:
                await browser.close()
        expected = calls * 50 * seconds
        print(f"  gateway: {calls} calls, idle {idle:.1%} of a core, loaded {load:.1%}")
        print(
            f"  phones received {phone_packets} PCMU packets, browsers {browser_packets} Opus packets"
            f" (expected ~{expected:.0f} each)"
        )
        decoded = metrics.get('seabridge_webrtc_frames_decoded_total{kind="audio"}', 0)
        if phone_packets < 0.8 * expected or browser_packets < 0.8 * expected or decoded == 0:
            raise BenchFailed("the gateway did not transcode the calls it was given")
        return (load - idle) / calls
    finally:
        if talking is not None:
            talking.cancel()
        phones.close()
        await gw.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --- 1b. rtpengine transcoding the same calls ---------------------------------------------------------------


def bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(value)


def bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            item, i = bdecode(data, i)
            items.append(item)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


class Ng:
    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.address = ("127.0.0.1", port)

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        cookie = secrets.token_hex(6).encode()
        for _ in range(20):
            self.sock.sendto(cookie + b" " + bencode(command), self.address)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            reply, _ = bdecode(data.split(b" ", 1)[1])
            if reply.get("result") not in (b"ok", b"pong"):
                raise BenchFailed(f"rtpengine refused {command['command']}: {reply}")
            return dict(reply)
        raise BenchFailed("rtpengine does not answer its ng port")


def sdp(port: int, codec: str) -> str:
    formats = {"opus": ("111", "a=rtpmap:111 opus/48000/2\r\n"), "PCMU": ("0", "a=rtpmap:0 PCMU/8000\r\n")}[codec]
    return (
        f"v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats[0]}\r\n{formats[1]}a=sendrecv\r\n"
    )


def media_port(description: bytes) -> int:
    for line in description.decode().splitlines():
        if line.startswith("m=audio"):
            return int(line.split()[1])
    raise BenchFailed("no audio in rtpengine's SDP")


async def rtpengine_transcoding(calls: int, seconds: float) -> float:
    exe = shutil.which("rtpengine")
    if exe is None:
        raise BenchFailed("rtpengine is not installed (apt-get install rtpengine-daemon)")
    ng_port = free_port()
    first, last = port_block()
    log = tempfile.NamedTemporaryFile(prefix="rtpengine-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        # No config file (Debian's binds fixed HTTP and CLI ports); everything on free loopback ports.
        [
            exe,
            "--config-file=none",
            "-f",
            "-t",
            "-1",
            "-i",
            "lo/127.0.0.1",
            "-n",
            f"127.0.0.1:{ng_port}",
            f"--listen-cli=127.0.0.1:{free_port()}",
            "-m",
            str(first),
            "-M",
            str(last),
            "-L",
            "4",
            "--log-stderr",
            "--num-threads",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ng = Ng(ng_port)
    sockets: list[tuple[socket.socket, tuple[str, int], socket.socket, tuple[str, int]]] = []
    received = {"opus": 0, "PCMU": 0}
    loop = asyncio.get_running_loop()
    try:
        await wait_for(lambda: process.poll() is not None or _ng_up(ng), 10, "rtpengine")
        if process.poll() is not None:
            raise BenchFailed(f"rtpengine exited with status {process.returncode}; see {log.name}")
        idle = await measure(process.pid, 2.0)
        for i in range(calls):
            a, b = _udp(), _udp()
            call = {"call-id": f"bench-{i}", "from-tag": f"a{i}"}
            offer = ng.request(
                {
                    "command": "offer",
                    **call,
                    "sdp": sdp(a.getsockname()[1], "opus"),
                    "codec": {"transcode": ["PCMU"]},
                    "replace": ["origin"],
                }
            )
            answer = ng.request(
                {"command": "answer", **call, "to-tag": f"b{i}", "sdp": sdp(b.getsockname()[1], "PCMU")}
            )
            sockets.append((a, ("127.0.0.1", media_port(answer["sdp"])), b, ("127.0.0.1", media_port(offer["sdp"]))))
        for a, _, b, _ in sockets:
            loop.add_reader(a.fileno(), _drain, a, received, "opus")
            loop.add_reader(b.fileno(), _drain, b, received, "PCMU")
        opus, pcmu = opus_packets(), pcmu_payload()

        async def talk() -> None:
            seq, start = 0, loop.time()
            while True:
                seq += 1
                for a, to_a, b, to_b in sockets:
                    a.sendto(
                        struct.pack("!BBHII", 0x80, 111, seq % 65536, seq * 960 % 2**32, 1) + opus[seq % len(opus)],
                        to_a,
                    )
                    b.sendto(struct.pack("!BBHII", 0x80, 0, seq % 65536, seq * 160 % 2**32, 2) + pcmu, to_b)
                await asyncio.sleep(max(0.0, start + seq * 0.02 - loop.time()))

        talking = asyncio.ensure_future(talk())
        await asyncio.sleep(2.0)
        before = dict(received)
        load = await measure(process.pid, seconds)
        talking.cancel()
        got = {k: received[k] - before[k] for k in received}
        expected = calls * 50 * seconds
        print(f"  rtpengine: {calls} calls, idle {idle:.1%} of a core, loaded {load:.1%}")
        print(f"  PCMU side received {got['PCMU']} packets, Opus side {got['opus']} (expected ~{expected:.0f} each)")
        if got["PCMU"] < 0.5 * expected or got["opus"] < 0.5 * expected:
            raise BenchFailed("rtpengine did not transcode (the baseline did no work)")
        return (load - idle) / calls
    finally:
        for a, _, b, _ in sockets:
            for s in (a, b):
                with contextlib.suppress(ValueError):
                    loop.remove_reader(s.fileno())
                s.close()
        process.terminate()
        process.wait(10)
        log.close()
        print(f"  (rtpengine's log: {log.name})")


def _ng_up(ng: Ng) -> bool:
    ng.sock.settimeout(0.2)
    try:
        ng.sock.sendto(b"up " + bencode({"command": "ping"}), ng.address)
        return b"pong" in ng.sock.recv(1000)
    except OSError:
        return False
    finally:
        ng.sock.settimeout(5)


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def _drain(sock: socket.socket, received: dict[str, int], key: str) -> None:
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return
        received[key] += 1


# --- 2. video: forwarding vs decode + re-encode, in a child process we measure ------------------------------


async def video_child(mode: str) -> None:
    """Answer pairs of offers from stdin: forward (the gateway's CallMedia) or decode + re-encode (aiortc)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = WebRtcConfig(ice_addresses=("127.0.0.1",), agent_address="127.0.0.1")
    metrics = WebRtcMetrics(CollectorRegistry())
    keep: list[Any] = []
    frames = [0]
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        request = json.loads(line)
        if request.get("quit"):
            break
        if mode == "forward":
            a = CallMedia(config, metrics, SystemClock(), lambda d: None, lambda s: None)
            b = CallMedia(config, metrics, SystemClock(), lambda d: None, lambda s: None)
            answers = [await a.answer_browser(request["in"]), await b.answer_browser(request["out"])]
            sip_answer, plan_b = await b.sip_answer(await a.sip_offer())
            keep += [a, b]
            asyncio.ensure_future(_start_when_connected(a, b, plan_from_answer(sip_answer), plan_b))
        else:
            pc_in, pc_out = (
                RTCPeerConnection(RTCConfiguration(iceServers=[])),
                RTCPeerConnection(RTCConfiguration(iceServers=[])),
            )
            await pc_in.setRemoteDescription(RTCSessionDescription(request["in"], "offer"))
            await pc_out.setRemoteDescription(RTCSessionDescription(request["out"], "offer"))
            feed = FeedTrack("video", lambda: None)
            pc_out.addTrack(feed)
            for pc in (pc_in, pc_out):
                restrict(pc)
                await pc.setLocalDescription(await pc.createAnswer())
            answers = [pc_in.localDescription.sdp, pc_out.localDescription.sdp]
            receiver = next(t.receiver for t in pc_in.getTransceivers() if t.kind == "video")
            keep += [pc_in, pc_out, asyncio.ensure_future(_pump(receiver, feed, frames))]
        print(json.dumps({"in": answers[0], "out": answers[1]}), flush=True)
    print(
        json.dumps(
            {
                "frames_transcoded": frames[0],
                "frames_decoded": metrics.frames_decoded.labels("video")._value.get(),
                "frames_encoded": metrics.frames_encoded.labels("video")._value.get(),
            }
        ),
        flush=True,
    )


async def _start_when_connected(a: CallMedia, b: CallMedia, plan_a: Any, plan_b: Any) -> None:
    await wait_for(lambda: a.connection_state == "connected" and b.connection_state == "connected", 30, "legs")
    a.start(plan_a)
    b.start(plan_b)


async def _pump(receiver: Any, feed: FeedTrack, frames: list[int]) -> None:
    while True:
        frame = await receiver.track.recv()
        frames[0] += 1
        feed.push(frame)


async def video_streams(mode: str, streams: int, seconds: float, vp8: list[bytes]) -> float:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--video-child",
        mode,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    peers: list[RTCPeerConnection] = []
    received = [0]
    try:
        await asyncio.wait_for(child.stdout.readline(), 30)  # imports done: what follows is idle
        idle = await measure(child.pid, 1.0)
        for _ in range(streams):
            sender, receiver = (
                RTCPeerConnection(RTCConfiguration(iceServers=[])),
                RTCPeerConnection(RTCConfiguration(iceServers=[])),
            )
            peers += [sender, receiver]
            sender.addTrack(PacketTrack("video", vp8, 90000, 3000, 1 / 30))
            sender.addTransceiver("audio", direction="recvonly")
            receiver.addTransceiver("video", direction="recvonly")
            receiver.addTransceiver("audio", direction="recvonly")
            for pc in (sender, receiver):
                restrict(pc)
                await pc.setLocalDescription(await pc.createOffer())
            aiortc_glue.tap_receiver(
                receiver.getTransceivers()[0].receiver, lambda p: received.__setitem__(0, received[0] + 1)
            )
            child.stdin.write(
                (json.dumps({"in": sender.localDescription.sdp, "out": receiver.localDescription.sdp}) + "\n").encode()
            )
            await child.stdin.drain()
            answers = json.loads(await child.stdout.readline())
            await sender.setRemoteDescription(RTCSessionDescription(answers["in"], "answer"))
            await receiver.setRemoteDescription(RTCSessionDescription(answers["out"], "answer"))
        await wait_for(lambda: received[0] > streams * 30, 60, f"{mode}ed video at the receivers")
        await asyncio.sleep(2.0)
        before = received[0]
        load = await measure(child.pid, seconds)
        packets = received[0] - before
        child.stdin.write(b'{"quit": true}\n')
        await child.stdin.drain()
        stats = json.loads(await asyncio.wait_for(child.stdout.readline(), 10))
        print(
            f"  {mode}: {streams} streams, {load:.1%} of a core (idle {idle:.1%}), "
            f"{packets} packets reached the receivers, child stats {stats}"
        )
        if packets < streams * 30 * seconds * 0.5:
            raise BenchFailed(f"{mode}: the video did not flow")
        if mode == "transcode" and stats["frames_transcoded"] == 0:
            raise BenchFailed("decode + re-encode baseline transcoded nothing")
        if mode == "forward" and (stats["frames_decoded"] or stats["frames_encoded"]):
            raise BenchFailed("the forwarding path decoded or encoded frames")
        return (load - idle) / streams
    finally:
        for pc in peers:
            await pc.close()
        if child.returncode is None:
            child.kill()
            await child.wait()


# --- main ----------------------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> int:
    print(f"machine: {os.cpu_count()} cores; {args.seconds:.0f} s measurements")
    print(f"1. bridged browser <-> SIP calls, Opus <-> PCMU, {args.calls} at once")
    ours = await gateway_bridged(args.calls, args.seconds)
    theirs = await rtpengine_transcoding(args.calls, args.seconds)
    print(f"  seabridge: {ours:.2%} of a core per call -> {1 / ours:.0f} bridged calls per core")
    print(f"  rtpengine: {theirs:.2%} of a core per call -> {1 / theirs:.0f} transcoded calls per core")
    print(f"  ratio seabridge/rtpengine calls per core: {theirs / ours:.2f}")
    print(f"2. browser <-> browser video, {args.streams} streams of 640x480 VP8 at 30 fps")
    vp8 = vp8_frames()
    forward = await video_streams("forward", args.streams, args.seconds, vp8)
    transcode = await video_streams("transcode", args.streams, args.seconds, vp8)
    print(f"  forwarded: {forward:.2%} of a core per stream -> {1 / forward:.0f} streams per core")
    print(f"  decoded + re-encoded: {transcode:.2%} of a core per stream -> {1 / transcode:.0f} streams per core")
    print(f"  ratio forwarded/re-encoded streams per core: {transcode / forward:.1f}")
    return 0


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--video-child", choices=("forward", "transcode"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.video_child:
        asyncio.run(video_child(args.video_child))
        return 0
    try:
        return asyncio.run(main(args))
    except BenchFailed as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
