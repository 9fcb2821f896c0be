"""One browser call's media: the browser's peer connection and the SIP side's RTP ports.

The browser leg is an aiortc peer connection negotiated Opus (+ VP8); the SIP
leg is plain RTP to the gateway's relay, negotiated by ``sip_sdp``. When the
SIP side agreed on the browser's codec, packets cross untouched (forwarded);
when it chose G.711, audio is transcoded. Until the SIP side has answered,
every receiver is tapped with no sink, so nothing is decoded meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av.audio.frame import AudioFrame
from av.frame import Frame

from gateway.clock import Clock
from gateway.sip.sdp import parse_sdp
from gateway.webrtc import aiortc_glue
from gateway.webrtc.config import WebRtcConfig
from gateway.webrtc.forwarding import KeyframeGate, StreamRewriter
from gateway.webrtc.metrics import WebRtcMetrics
from gateway.webrtc.rtp_port import Addr, RtpPort, open_rtp_port
from gateway.webrtc.sip_sdp import Direction, MediaPlan, answer_offer, build_offer
from gateway.webrtc.transcode import G711Transcoder
from media.errors import PacketError
from media.rtp import RtpPacket, TelephoneEvent, dtmf_events, is_rtcp

log = logging.getLogger("seabridge.webrtc.media")
Kind = Literal["audio", "video"]
_PSFB = 206
_PLI, _FIR = 1, 4
# Silence between two queued key presses, so the far end hears two presses, not one long one.
_DTMF_GAP_S = 0.06


class FeedTrack(MediaStreamTrack):
    """A track we feed frames into; aiortc's sender encodes each one (``on_encode`` counts it)."""

    def __init__(self, kind: Kind, on_encode: Callable[[], None]) -> None:
        super().__init__()
        self.kind = kind
        self._on_encode = on_encode
        self._frames: asyncio.Queue[Frame | None] = asyncio.Queue()

    async def recv(self) -> Frame:
        frame = await self._frames.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        self._on_encode()
        return frame

    def push(self, frame: Frame) -> None:
        # Keep latency bounded if the encoder falls behind: drop the oldest.
        while self._frames.qsize() > 10:
            self._frames.get_nowait()
        self._frames.put_nowait(frame)

    def finish(self) -> None:
        self._frames.put_nowait(None)


@dataclass(frozen=True)
class BrowserCodec:
    """What the browser leg negotiated for one kind: payload type, RTX types, clock rate."""

    payload_type: int
    rtx: dict[int, int]
    clock_rate: int


def browser_codecs(answer_sdp: str) -> dict[str, BrowserCodec]:
    """The first (chosen) codec per media kind in our answer to the browser."""
    sdp = parse_sdp(answer_sdp.encode())
    out: dict[str, BrowserCodec] = {}
    for media in sdp.media:
        if media.port == 0 or media.kind in out or not media.formats:
            continue
        mapping = media.rtpmap()
        rtx: dict[int, int] = {}
        for attr in media.attributes:
            if attr.startswith("fmtp:") and "apt=" in attr:
                pt, _, params = attr[5:].partition(" ")
                for param in params.split(";"):
                    key, _, value = param.strip().partition("=")
                    if key == "apt" and value.isdigit():
                        rtx[int(pt)] = int(value)
        chosen = next((pt for pt in media.formats if not mapping.get(pt, "").lower().startswith("rtx/")), None)
        if chosen is None:
            continue
        rate = int(mapping.get(chosen, "x/90000").split("/")[1])
        out[media.kind] = BrowserCodec(int(chosen), rtx, rate)
    return out


class _Injector:
    """Sends forwarded packets to the browser in order, from one task (aiortc's send is a coroutine)."""

    def __init__(self, injector: aiortc_glue.RtpInjector) -> None:
        self.injector = injector
        self._queue: collections.deque[RtpPacket] = collections.deque()
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    def push(self, packet: RtpPacket) -> None:
        if len(self._queue) > 500:
            self._queue.popleft()
        self._queue.append(packet)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                p = self._queue.popleft()
                await self.injector.send(p.payload_type, p.sequence, p.timestamp, p.marker, p.payload)

    def close(self) -> None:
        self._task.cancel()


@dataclass
class _Stream:
    kind: Kind
    receiver: RTCRtpReceiver
    sender: RTCRtpSender
    track: FeedTrack
    codec: BrowserCodec | None = None
    port: RtpPort | None = None
    up: StreamRewriter | None = None  # browser -> SIP
    down: StreamRewriter | None = None  # SIP -> browser
    injector: _Injector | None = None
    browser_ssrc: int | None = None  # the browser's sending SSRC, for keyframe requests
    sip_ssrc: int | None = None  # the far end's SSRC on the SIP side
    gate_up: KeyframeGate | None = None
    gate_down: KeyframeGate | None = None
    gate_timer: asyncio.TimerHandle | None = None


class CallMedia:
    def __init__(
        self,
        config: WebRtcConfig,
        metrics: WebRtcMetrics,
        clock: Clock,
        on_dtmf: Callable[[str], None],
        on_state: Callable[[str], None],
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._on_dtmf = on_dtmf
        self._on_state = on_state
        self._pc: RTCPeerConnection | None = None
        self._streams: dict[str, _Stream] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._plan: MediaPlan | None = None
        self._transcoder: G711Transcoder | None = None
        self._sdp_version = 1
        self._dtmf_seen: set[int] = set()
        self._dtmf_pending: collections.deque[str] = collections.deque()
        self._dtmf_player: asyncio.Task[None] | None = None
        self.held = False
        self.mode = "pending"
        self.closed = False

    # --- the browser leg -------------------------------------------------------------------------

    async def answer_browser(self, offer_sdp: str) -> str:
        servers = [
            RTCIceServer(urls=list(s.urls), username=s.username or None, credential=s.credential or None)
            for s in self._config.ice_servers
        ]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self._pc = pc
        pc.on("connectionstatechange", self._connection_state)
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        for transceiver in pc.getTransceivers():
            kind: Kind = "video" if transceiver.kind == "video" else "audio"
            if kind in self._streams:
                continue  # one stream of each kind: extra m-lines are refused by having no track
            wanted = ("audio/opus",) if kind == "audio" else ("video/vp8", "video/rtx")
            prefs = [c for c in RTCRtpSender.getCapabilities(kind).codecs if c.mimeType.lower() in wanted]
            transceiver.setCodecPreferences(prefs)
            aiortc_glue.count_decodes(transceiver.receiver, self._metrics.frames_decoded.labels(kind).inc)
            aiortc_glue.tap_receiver(transceiver.receiver, None)
            track = FeedTrack(kind, self._metrics.frames_encoded.labels(kind).inc)
            sender = pc.addTrack(track)
            self._streams[kind] = _Stream(kind, transceiver.receiver, sender, track)
        if "audio" not in self._streams:
            raise ValueError("the browser's offer has no audio")
        aiortc_glue.restrict_gathering(pc, self._config.ice_addresses, self._config.ice_port_range)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        for name, codec in browser_codecs(answer).items():
            if name in self._streams:
                self._streams[name].codec = codec
        return answer

    @property
    def browser_video(self) -> bool:
        stream = self._streams.get("video")
        return stream is not None and stream.codec is not None

    def _connection_state(self) -> None:
        if self._pc is not None:
            self._on_state(self._pc.connectionState)

    @property
    def connection_state(self) -> str:
        return self._pc.connectionState if self._pc is not None else "new"

    # --- the SIP leg -----------------------------------------------------------------------------

    async def _open_ports(self, video: bool) -> None:
        address, ports = self._config.agent_address, self._config.rtp_port_range
        self._streams["audio"].port = await open_rtp_port(address, ports)
        if video and "video" in self._streams:
            self._streams["video"].port = await open_rtp_port(address, ports)

    async def sip_offer(self) -> bytes:
        await self._open_ports(self.browser_video)
        audio = self._streams["audio"].port
        video = self._streams["video"].port if "video" in self._streams else None
        assert audio is not None
        return build_offer(self._config.agent_address, audio.port, video.port if video else None)

    async def sip_answer(self, offer: bytes) -> tuple[bytes, MediaPlan]:
        await self._open_ports(self.browser_video)
        audio = self._streams["audio"].port
        video = self._streams["video"].port if "video" in self._streams else None
        assert audio is not None
        return answer_offer(offer, self._config.agent_address, audio.port, video.port if video else None)

    def reoffer(self, hold: bool) -> bytes:
        """A new offer for hold (sendonly) or resume (sendrecv), same ports."""
        self._sdp_version += 1
        audio = self._streams["audio"].port
        video = self._streams["video"].port if "video" in self._streams else None
        assert audio is not None
        direction: Direction = "sendonly" if hold else "sendrecv"
        video_port = video.port if video is not None and self._plan is not None and self._plan.video else None
        return build_offer(self._config.agent_address, audio.port, video_port, self._sdp_version, direction)

    def answer_reoffer(self, offer: bytes) -> bytes:
        self._sdp_version += 1
        audio = self._streams["audio"].port
        video = self._streams["video"].port if "video" in self._streams else None
        assert audio is not None
        answer, plan = answer_offer(
            offer, self._config.agent_address, audio.port, video.port if video else None, self._sdp_version
        )
        self.held = plan.direction in ("recvonly", "inactive")
        self._update_remotes(plan)
        return answer

    def _update_remotes(self, plan: MediaPlan) -> None:
        audio = self._streams["audio"]
        if audio.port is not None and plan.audio.remote is not None:
            audio.port.remote = plan.audio.remote
        video = self._streams.get("video")
        if video is not None and video.port is not None and plan.video is not None and plan.video.remote:
            video.port.remote = plan.video.remote

    # --- media flow once both sides agreed ------------------------------------------------------

    def start(self, plan: MediaPlan) -> None:
        self._plan = plan
        self._update_remotes(plan)
        audio = self._streams["audio"]
        if plan.audio.transcoded:
            self.mode = "transcoded"
            self._start_transcoding(audio, plan)
        else:
            self.mode = "forwarded"
            self._start_forwarding(audio, plan.audio.payload_type, plan.audio.clock_rate)
        video = self._streams.get("video")
        if video is not None and video.codec is not None and plan.video is not None and video.port is not None:
            self._start_forwarding(video, plan.video.payload_type, 90000)

    def _start_forwarding(self, stream: _Stream, sip_pt: int, clock_rate: int) -> None:
        codec, port = stream.codec, stream.port
        assert codec is not None and port is not None
        now = self._clock.monotonic
        forwarded = self._metrics.forwarded.labels(stream.kind)
        stream.up = StreamRewriter(secrets.randbits(32), {codec.payload_type: sip_pt}, clock_rate, rtx=codec.rtx)
        stream.down = StreamRewriter(0, {sip_pt: codec.payload_type}, clock_rate)
        interval = self._config.keyframe_interval_ms / 1000
        stream.gate_up, stream.gate_down = KeyframeGate(interval), KeyframeGate(interval)

        def from_browser(packet: RtpPacket) -> None:
            if packet.payload_type not in codec.rtx:
                stream.browser_ssrc = packet.ssrc
            assert stream.up is not None
            out = stream.up.rewrite(packet, now())
            if out is not None and not self.held:
                port.send_rtp(bytes(out))
                forwarded.inc()

        injector = aiortc_glue.RtpInjector(stream.sender, lambda: self._browser_wants_keyframe(stream))
        stream.down.out_ssrc = injector.ssrc
        stream.injector = _Injector(injector)

        def from_sip(data: bytes, source: Addr) -> None:
            packet = self._parse_rtp(data)
            if packet is None:
                return
            if self._plan is not None and packet.payload_type == self._plan.audio.telephone_event:
                self._dtmf_received(packet)
                return
            stream.sip_ssrc = packet.ssrc
            assert stream.down is not None and stream.injector is not None
            out = stream.down.rewrite(packet, now())
            if out is not None and not self.held:
                stream.injector.push(out)
                forwarded.inc()

        port.on_rtp(from_sip)
        port.on_rtcp(lambda data, source: self._sip_rtcp(stream, data))
        aiortc_glue.tap_receiver(stream.receiver, from_browser)

    def _start_transcoding(self, stream: _Stream, plan: MediaPlan) -> None:
        port = stream.port
        assert port is not None and plan.audio.codec != "opus"
        transcoder = G711Transcoder(plan.audio.codec)
        self._transcoder = transcoder
        stream.up = StreamRewriter(secrets.randbits(32), {0: plan.audio.payload_type}, 8000)
        seq_ts = [0, 0]

        async def pump_up() -> None:
            track = stream.receiver.track
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if not isinstance(frame, AudioFrame):
                    continue
                for payload in transcoder.to_g711(frame):
                    seq_ts[0] = (seq_ts[0] + 1) % 65536
                    seq_ts[1] = (seq_ts[1] + 160) % (1 << 32)
                    source = RtpPacket(0, seq_ts[0], seq_ts[1], 1, payload)
                    assert stream.up is not None
                    out = stream.up.rewrite(source, self._clock.monotonic())
                    if out is not None and not self.held:
                        port.send_rtp(bytes(out))

        def from_sip(data: bytes, source: Addr) -> None:
            packet = self._parse_rtp(data)
            if packet is None:
                return
            if packet.payload_type == plan.audio.telephone_event:
                self._dtmf_received(packet)
            elif packet.payload_type == plan.audio.payload_type and not self.held:
                for frame in transcoder.from_g711(packet.payload):
                    stream.track.push(frame)

        port.on_rtp(from_sip)
        aiortc_glue.set_opus_bitrate(stream.sender, self._config.opus_bitrate_kbps * 1000)
        aiortc_glue.untap_receiver(stream.receiver)
        self._spawn(pump_up())

    @staticmethod
    def _parse_rtp(data: bytes) -> RtpPacket | None:
        if is_rtcp(data):
            return None
        try:
            return RtpPacket.parse(data)
        except PacketError:
            return None

    # --- keyframe requests -------------------------------------------------------------------------

    def _browser_wants_keyframe(self, stream: _Stream) -> None:
        """The receiving browser lost a picture: ask the far end (over the SIP side) for a keyframe."""
        assert stream.gate_down is not None
        if stream.gate_down.request(self._clock.monotonic()):
            self._metrics.keyframe_requests.labels("passed").inc()
            self._send_pli(stream)
        else:
            self._metrics.keyframe_requests.labels("suppressed").inc()
        self._arm_gate_timer(stream)

    def _send_pli(self, stream: _Stream) -> None:
        if stream.port is None or stream.up is None:
            return
        media = stream.sip_ssrc or 0
        stream.port.send_rtcp(struct.pack("!BBHII", 0x80 | _PLI, _PSFB, 2, stream.up.out_ssrc, media))

    def _sip_rtcp(self, stream: _Stream, data: bytes) -> None:
        """RTCP from the SIP side: a keyframe request goes on to the sending browser."""
        offset = 0
        while offset + 4 <= len(data):
            first, packet_type, words = struct.unpack_from("!BBH", data, offset)
            if packet_type == _PSFB and (first & 0x1F) in (_PLI, _FIR):
                assert stream.gate_up is not None
                if stream.gate_up.request(self._clock.monotonic()):
                    self._metrics.keyframe_requests.labels("passed").inc()
                    self._ask_browser_for_keyframe(stream)
                else:
                    self._metrics.keyframe_requests.labels("suppressed").inc()
                self._arm_gate_timer(stream)
            offset += 4 * (words + 1)

    def _ask_browser_for_keyframe(self, stream: _Stream) -> None:
        if stream.browser_ssrc is not None:
            self._spawn(aiortc_glue.request_keyframe(stream.receiver, stream.browser_ssrc))

    def _arm_gate_timer(self, stream: _Stream) -> None:
        deadlines = [g.next_deadline() for g in (stream.gate_up, stream.gate_down) if g is not None]
        due = [d for d in deadlines if d is not None]
        if not due or stream.gate_timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, min(due) - self._clock.monotonic())

        def fire() -> None:
            stream.gate_timer = None
            now = self._clock.monotonic()
            if stream.gate_up is not None and stream.gate_up.on_timer(now):
                self._ask_browser_for_keyframe(stream)
            if stream.gate_down is not None and stream.gate_down.on_timer(now):
                self._send_pli(stream)
            self._arm_gate_timer(stream)

        stream.gate_timer = loop.call_later(delay, fire)

    # --- DTMF -------------------------------------------------------------------------------------------

    def _dtmf_received(self, packet: RtpPacket) -> None:
        try:
            event = TelephoneEvent.parse(packet.payload)
        except PacketError:
            return
        if packet.timestamp in self._dtmf_seen or event.digit is None:
            return  # one report per key press (its packets share the event's timestamp)
        self._dtmf_seen.add(packet.timestamp)
        self._on_dtmf(event.digit)

    def send_dtmf(self, digit: str) -> bool:
        """Queue one key press as RFC 4733 events on the SIP side; False if none was negotiated.

        Presses play one after another, as a phone's keypad sends them: two events overlapping
        in one stream would read as a garbled press (or none) at the far end.
        """
        if self._dtmf_stream() is None:
            return False
        self._dtmf_pending.append(digit)
        if self._dtmf_player is None or self._dtmf_player.done():
            self._dtmf_player = asyncio.ensure_future(self._play_dtmf())
            self._tasks.add(self._dtmf_player)
            self._dtmf_player.add_done_callback(self._tasks.discard)
        return True

    def _dtmf_stream(self) -> tuple[int, int, _Stream] | None:
        """(telephone-event payload type, clock rate, audio stream) when digits can be sent."""
        plan, stream = self._plan, self._streams.get("audio")
        if plan is None or plan.audio.telephone_event is None or stream is None or stream.up is None:
            return None
        if stream.port is None:
            return None
        return plan.audio.telephone_event, plan.audio.clock_rate, stream

    async def _play_dtmf(self) -> None:
        while self._dtmf_pending:
            digit = self._dtmf_pending.popleft()
            target = self._dtmf_stream()
            if target is None:
                return
            payload_type, rate, stream = target
            assert stream.up is not None and stream.port is not None
            events = dtmf_events(digit, duration=rate // 10 * 2, step=rate // 50)
            # One timestamp for the whole event (RFC 4733); sequence numbers taken as each packet
            # leaves, so they interleave in order with the audio sent meanwhile.
            timestamp = stream.up.timestamp_at(self._clock.monotonic())
            ssrc = stream.up.out_ssrc
            for i, event in enumerate(events):
                packet = RtpPacket(payload_type, stream.up.reserve(1), timestamp, ssrc, bytes(event), i == 0)
                stream.port.send_rtp(bytes(packet))
                await asyncio.sleep(0.02)
            await asyncio.sleep(_DTMF_GAP_S)

    # --- the end -----------------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int]:
        out = {"packets_out": 0, "bytes_out": 0}
        for stream in self._streams.values():
            if stream.port is not None:
                out["packets_out"] += stream.port.packets_out
                out["bytes_out"] += stream.port.bytes_out
        return out

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for stream in self._streams.values():
            if stream.gate_timer is not None:
                stream.gate_timer.cancel()
            if stream.injector is not None:
                stream.injector.close()
            if stream.port is not None:
                stream.port.close()
            stream.track.finish()
        if self._pc is not None:
            await self._pc.close()
