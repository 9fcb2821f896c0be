"""Forwarded media, in process: two aiortc peers stand in for browsers, two CallMedia for the gateway's legs.

Sender -> gateway leg A -> plain RTP (the SIP side) -> gateway leg B -> receiver.
The payloads the receiver gets are byte for byte those the sender's encoder
produced (hash lists compared), the gateway encodes and decodes nothing, and
the receiver's picture-loss reports reach the sender, rate-limited.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import av
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from prometheus_client import CollectorRegistry

from gateway.clock import SystemClock
from gateway.webrtc import aiortc_glue
from gateway.webrtc.call_media import CallMedia
from gateway.webrtc.config import WebRtcConfig
from gateway.webrtc.metrics import WebRtcMetrics
from gateway.webrtc.sip_sdp import plan_from_answer

CONFIG = WebRtcConfig(ice_addresses=("127.0.0.1",), agent_address="127.0.0.1", keyframe_interval_ms=300)


class MovingPicture(VideoStreamTrack):
    """A synthetic camera: frames that change, so the encoder has something to send."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(320, 240, "yuv420p")
        for index, plane in enumerate(frame.planes):
            plane.update(bytes([(self.count * 7 + index * 50) % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.count += 1
        return frame


def payloads_of(data: bytes, video_pts: set[int]) -> bytes | None:
    if len(data) < 2 or 192 <= data[1] <= 223:  # RTCP
        return None
    packet = AiortcRtpPacket.parse(data)
    return packet.payload if packet.payload_type in video_pts and packet.payload else None


@pytest_asyncio.fixture
async def legs() -> AsyncIterator[dict[str, Any]]:
    metrics = WebRtcMetrics(CollectorRegistry())
    clock = SystemClock()
    states: dict[str, list[str]] = {"a": [], "b": []}
    gateway_a = CallMedia(CONFIG, metrics, clock, on_dtmf=lambda d: None, on_state=states["a"].append)
    gateway_b = CallMedia(CONFIG, metrics, clock, on_dtmf=lambda d: None, on_state=states["b"].append)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield {"a": gateway_a, "b": gateway_b, "sender": sender, "receiver": receiver, "metrics": metrics}
    finally:
        for item in (gateway_a, gateway_b):
            await item.close()
        for pc in (sender, receiver):
            await pc.close()


async def browser_offer(pc: RTCPeerConnection, camera: VideoStreamTrack | None) -> str:
    if camera is not None:
        pc.addTrack(camera)
    else:
        pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    aiortc_glue.restrict_gathering(pc, ["127.0.0.1"], None)
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_forwarded_payloads_are_the_senders_bytes_and_nothing_is_coded(legs: dict[str, Any]) -> None:
    sender, receiver = legs["sender"], legs["receiver"]
    gateway_a, gateway_b = legs["a"], legs["b"]
    camera = MovingPicture()

    # Browser A offers its camera; gateway leg A answers. Browser B (receive only) likewise with leg B.
    offer_a = await browser_offer(sender, camera)
    await sender.setRemoteDescription(RTCSessionDescription(await gateway_a.answer_browser(offer_a), "answer"))
    offer_b = await browser_offer(receiver, None)
    await receiver.setRemoteDescription(RTCSessionDescription(await gateway_b.answer_browser(offer_b), "answer"))

    # The SIP side: leg A offers, leg B answers (in the gateway the B2BUA and relay sit between them).
    sip_offer = await gateway_a.sip_offer()
    sip_answer, plan_b = await gateway_b.sip_answer(sip_offer)
    plan_a = plan_from_answer(sip_answer)
    assert plan_a.video is not None and plan_b.video is not None and not plan_a.audio.transcoded

    # Spy on both ends: what the sender's encoder emits, what reaches the receiver before it decodes.
    video_sender = next(t.sender for t in sender.getTransceivers() if t.kind == "video")
    sent: list[bytes] = []
    send_rtp = video_sender.transport._send_rtp

    async def spy_send(data: bytes) -> None:
        payload = payloads_of(data, {96, 97, 98, 99, 100, 101, 102})
        if payload is not None and len(payload) > 0:
            sent.append(payload)
        await send_rtp(data)

    video_sender.transport._send_rtp = spy_send
    video_receiver = next(t.receiver for t in receiver.getTransceivers() if t.kind == "video")
    received: list[bytes] = []
    handle = video_receiver._handle_rtp_packet

    async def spy_receive(packet: AiortcRtpPacket, arrival_time_ms: int) -> None:
        if packet.payload:
            received.append(packet.payload)
        await handle(packet, arrival_time_ms)

    video_receiver._handle_rtp_packet = spy_receive
    keyframes_asked = [0]
    original_keyframe = video_sender._send_keyframe

    def count_keyframe() -> None:
        keyframes_asked[0] += 1
        original_keyframe()

    video_sender._send_keyframe = count_keyframe

    await wait_until(lambda: gateway_a.connection_state == "connected" and gateway_b.connection_state == "connected")
    gateway_a.start(plan_a)
    gateway_b.start(plan_b)

    # The receiving browser really decodes what was forwarded.
    decoded = 0
    for _ in range(20):
        frame = await asyncio.wait_for(video_receiver.track.recv(), 10)
        assert isinstance(frame, av.VideoFrame)
        decoded += 1
    await wait_until(lambda: len(received) >= 60)

    digest = [hashlib.sha256(p).hexdigest() for p in sent]
    got = [hashlib.sha256(p).hexdigest() for p in received]
    start = digest.index(got[0])
    assert got == digest[start : start + len(got)], "forwarded payloads differ from the sender's"
    metrics = legs["metrics"]
    for kind in ("video", "audio"):
        assert metrics.frames_decoded.labels(kind)._value.get() == 0
        assert metrics.frames_encoded.labels(kind)._value.get() == 0
    assert metrics.forwarded.labels("video")._value.get() >= 2 * len(got)  # in at leg A, out at leg B

    # Picture loss at the receiver travels back to the sender, rate-limited by both legs.
    asked_before = keyframes_asked[0]
    media_ssrc = next(iter(video_receiver.getSynchronizationSources())).source
    for _ in range(6):
        await video_receiver._send_rtcp_pli(media_ssrc)
    await wait_until(lambda: keyframes_asked[0] >= asked_before + 2, timeout=5)
    await asyncio.sleep(CONFIG.keyframe_interval_ms / 1000 * 2)
    assert keyframes_asked[0] - asked_before == 2  # the first at once, one more when the interval ends
    assert metrics.keyframe_requests.labels("suppressed")._value.get() >= 5
