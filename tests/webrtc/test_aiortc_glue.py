"""The contract with aiortc's internals (gateway/webrtc/aiortc_glue.py): fails if aiortc changes under us.

Each hook is exercised on real aiortc peer connections over loopback, so a
renamed private attribute or a changed call path shows up here, not as a
silent decode (or a dead call) in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib.metadata import version
from typing import Any

import aioice.ice
import aioice.stun
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from gateway.webrtc import aiortc_glue
from gateway.webrtc.call_media import FeedTrack
from gateway.webrtc.config import WebRtcConfig
from media.rtp import RtpPacket
from tests.support.ports import port_block
from tests.webrtc.test_forwarding_media import MovingPicture, wait_until


def test_the_pinned_versions_and_their_internals_are_there() -> None:
    assert version("aiortc") == "1.16.0", "aiortc_glue was checked against aiortc 1.16.0 only"
    assert version("aioice").startswith("0.13."), "aiortc_glue was checked against aioice 0.13 only"
    aiortc_glue.check_internals()


async def test_transport_tuning_sets_aioices_constants() -> None:
    saved = (aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX, aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES)
    try:
        cfg = WebRtcConfig(ice_retry_rto_ms=1200, ice_retry_max=8, ice_consent_interval_s=10, ice_consent_failures=9)
        applied = aiortc_glue.apply_transport_tuning(cfg)
        assert (aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX) == (1.2, 8)
        assert (aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES) == (10, 9)
        assert applied["aioice.stun.RETRY_RTO"] == 1.2
        # aioice reads the constant when a STUN transaction starts, so new checks use it.
        transaction = aioice.stun.Transaction(aioice.stun.Message(1, 1), ("127.0.0.1", 9), None)  # type: ignore[arg-type]
        assert transaction._Transaction__timeout_delay == 1.2  # type: ignore[attr-defined]
        assert transaction._Transaction__tries_max == 9  # type: ignore[attr-defined]
    finally:
        aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX, aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = saved


@pytest_asyncio.fixture
async def pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def connect(
    a: RTCPeerConnection, b: RTCPeerConnection, before_answer: Any = None, ports: tuple[int, int] | None = None
) -> None:
    a.addTrack(MovingPicture())
    aiortc_glue.restrict_gathering(a, ["127.0.0.1"], None)
    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(a.localDescription)
    if before_answer is not None:
        before_answer(b)
    aiortc_glue.restrict_gathering(b, ["127.0.0.1"], ports)
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(RTCSessionDescription(b.localDescription.sdp, "answer"))
    await wait_until(lambda: a.connectionState == "connected" and b.connectionState == "connected")


async def test_gathering_uses_the_configured_address_and_port_range(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    first, last = port_block(20)
    await connect(*pair, ports=(first, last))
    candidates = [line for line in pair[1].localDescription.sdp.splitlines() if line.startswith("a=candidate")]
    assert candidates
    for line in candidates:
        fields = line.split()
        assert fields[4] == "127.0.0.1" and first <= int(fields[5]) <= last and fields[7] == "host"


async def test_decodes_are_counted_and_a_tapped_receiver_decodes_nothing(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    decoded = [0]

    def count(b: RTCPeerConnection) -> None:
        for transceiver in b.getTransceivers():
            aiortc_glue.count_decodes(transceiver.receiver, lambda: decoded.__setitem__(0, decoded[0] + 1))

    await connect(*pair, before_answer=count)
    receiver = pair[1].getTransceivers()[0].receiver
    for _ in range(5):
        await asyncio.wait_for(receiver.track.recv(), 10)
    assert decoded[0] >= 5  # every decoded frame went through the counting queue

    tapped: list[RtpPacket] = []
    aiortc_glue.tap_receiver(receiver, tapped.append)
    await wait_until(lambda: len(tapped) >= 5)
    await asyncio.sleep(0.2)  # frames already queued before the tap drain from the decoder
    settled = decoded[0]
    count_tapped = len(tapped)
    await wait_until(lambda: len(tapped) >= count_tapped + 20)
    assert decoded[0] == settled, "a tapped receiver still decoded"
    assert all(p.payload for p in tapped)

    aiortc_glue.untap_receiver(receiver)
    await wait_until(lambda: decoded[0] > settled)


async def test_the_injector_sends_as_the_sender_and_catches_keyframe_requests(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    # b answers a's video with a sender of its own (sendrecv) whose track never yields a frame.
    await connect(a, b, before_answer=lambda b: b.addTrack(FeedTrack("video", lambda: None)))
    sender = next(t.sender for t in b.getTransceivers() if t.kind == "video")
    asked: list[int] = []
    injector = aiortc_glue.RtpInjector(sender, lambda: asked.append(1))
    assert injector.ssrc == sender._ssrc
    receiver = next(t.receiver for t in a.getTransceivers() if t.kind == "video")
    seen: list[RtpPacket] = []
    aiortc_glue.tap_receiver(receiver, seen.append)
    payload_type = int(b.localDescription.sdp.split("m=video")[1].split()[2])
    for seq in range(1000, 1010):
        await injector.send(payload_type, seq, seq * 3000, seq % 2 == 1, bytes([seq % 256]) * 50)
    await wait_until(lambda: len(seen) >= 10)
    assert [(p.sequence, p.ssrc, p.payload) for p in seen[-10:]] == [
        (seq, sender._ssrc, bytes([seq % 256]) * 50) for seq in range(1000, 1010)
    ]
    await receiver._send_rtcp_pli(sender._ssrc)
    await wait_until(lambda: len(asked) == 1)


def test_count_decodes_refuses_a_started_receiver() -> None:
    class Started:
        _RTCRtpReceiver__decoder_thread = object()
        _RTCRtpReceiver__decoder_queue = object()

    with pytest.raises(aiortc_glue.AiortcChanged):
        aiortc_glue.count_decodes(Started(), lambda: None)  # type: ignore[arg-type]


async def test_the_opus_bitrate_is_ours_when_set_before_the_first_frame(
    pair: tuple[RTCPeerConnection, RTCPeerConnection],
) -> None:
    a, b = pair
    sender = a.addTrack(FeedTrack("audio", lambda: None))
    aiortc_glue.set_opus_bitrate(sender, 24000)
    encoder = sender._RTCRtpSender__encoder  # type: ignore[attr-defined]
    assert encoder.codec.bit_rate == 24000
    aiortc_glue.set_opus_bitrate(sender, 16000)  # too late once an encoder exists: left alone
    assert sender._RTCRtpSender__encoder is encoder  # type: ignore[attr-defined]
