"""Every use of aiortc's and aioice's internals, in one place (pinned: aiortc==1.16.0, aioice 0.13).

aiortc is a complete WebRTC endpoint: its receivers always decode and its
senders always encode, its ICE gathering binds every non-loopback address on
ephemeral ports, and its STUN and consent timings are module constants. A
gateway needs to forward encoded media untouched, bind chosen addresses and
ports, and stretch timers for 600 ms satellite round trips. The hooks that
make that possible reach into private attributes; they all live here, and
``tests/webrtc/test_aiortc_glue.py`` fails if aiortc or aioice changes under
them (``check_internals`` also runs at start-up and refuses to start).

What is used, and why:
- ``aioice.stun.RETRY_RTO``/``RETRY_MAX``, ``aioice.ice.CONSENT_INTERVAL``/``CONSENT_FAILURES``:
  set from config once at start-up (``apply_transport_tuning``).
- ``RTCIceGatherer._connection.get_component_candidates``: replaced per connection so host
  candidates come from the configured addresses and port range (``restrict_gathering``).
- ``RTCRtpReceiver._handle_rtp_packet``: replaced per receiver to take encoded RTP before the
  jitter buffer and decoder (``tap_receiver``); nothing is decoded for a tapped receiver.
- ``RTCRtpReceiver.__decoder_queue``: wrapped before the decoder thread starts so every
  frame handed to a decoder is counted (``count_decodes``).
- ``RTCRtpReceiver._send_rtcp_pli``: asks the browser for a keyframe.
- ``RTCRtpSender.__encoder``: set before the first frame to an Opus encoder at our bitrate
  (aiortc's is fixed at 96 kbit/s, wasteful for narrowband phone audio on satellite links).
- ``RTCRtpSender``: ``_ssrc``, ``transport._send_rtp``, the header-extension map, MID, RTP
  history and sender-report counters, and ``_send_keyframe`` (replaced per sender to catch
  PLI/FIR), so forwarded packets leave with the sender's identity, are retransmitted on NACK
  and described in its sender reports (``RtpInjector``).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
import aioice.stun
from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc import clock as aiortc_clock
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtp import RTP_HISTORY_SIZE
from aiortc.rtp import RtpPacket as AiortcRtpPacket

from gateway.webrtc.config import WebRtcConfig
from gateway.webrtc.errors import AiortcChanged
from media.rtp import RtpPacket

log = logging.getLogger("seabridge.webrtc")

_RECEIVER = "_RTCRtpReceiver__"
_SENDER = "_RTCRtpSender__"


# --- start-up ----------------------------------------------------------------------------


def check_internals() -> None:
    """Raise AiortcChanged if an internal this module relies on is gone."""
    problems: list[str] = []
    modules: tuple[tuple[Any, tuple[str, ...]], ...] = (
        (aioice.stun, ("RETRY_RTO", "RETRY_MAX")),
        (aioice.ice, ("CONSENT_INTERVAL", "CONSENT_FAILURES", "StunProtocol", "server_reflexive_candidate")),
    )
    for module, names in modules:
        problems += [f"{module.__name__}.{n}" for n in names if not hasattr(module, n)]
    classes: tuple[tuple[type, tuple[str, ...]], ...] = (
        (RTCRtpReceiver, ("_handle_rtp_packet", "_send_rtcp_pli", "receive")),
        (RTCRtpSender, ("_send_keyframe", "_handle_rtcp_packet", "send")),
        (RTCDtlsTransport, ("_send_rtp",)),
        (aioice.ice.Connection, ("get_component_candidates", "gather_candidates")),
    )
    for cls, names in classes:
        problems += [f"{cls.__name__}.{n}" for n in names if not hasattr(cls, n)]
    if problems:
        raise AiortcChanged("aiortc/aioice internals missing: " + ", ".join(problems))


def apply_transport_tuning(config: WebRtcConfig) -> dict[str, float]:
    """Set aioice's STUN retransmission and consent constants from config (process-wide, once)."""
    check_internals()
    values: dict[str, float] = {
        "aioice.stun.RETRY_RTO": config.ice_retry_rto_ms / 1000,
        "aioice.stun.RETRY_MAX": config.ice_retry_max,
        "aioice.ice.CONSENT_INTERVAL": config.ice_consent_interval_s,
        "aioice.ice.CONSENT_FAILURES": config.ice_consent_failures,
    }
    aioice.stun.RETRY_RTO = config.ice_retry_rto_ms / 1000
    aioice.stun.RETRY_MAX = config.ice_retry_max
    aioice.ice.CONSENT_INTERVAL = config.ice_consent_interval_s
    aioice.ice.CONSENT_FAILURES = config.ice_consent_failures
    return values


# --- ICE gathering ---------------------------------------------------------------------------


def restrict_gathering(pc: RTCPeerConnection, bind: Sequence[str], ports: tuple[int, int] | None) -> None:
    """Make ``pc`` gather host candidates on ``bind`` (empty: aioice's choice), in ``ports``.

    Call after the transceivers exist (after setRemoteDescription) and before
    setLocalDescription, which gathers.
    """
    for transceiver in pc.getTransceivers():
        connection: Any = transceiver.receiver.transport.transport.iceGatherer._connection
        if getattr(connection, "_seabridge_gathering", False):
            continue  # BUNDLE: several transceivers share one transport
        original = connection.get_component_candidates
        connection._seabridge_gathering = True

        async def gather(
            component: int,
            addresses: list[str],
            timeout: int = 5,  # noqa: ASYNC109 (aioice's signature)
            connection: Any = connection,
            original: Any = original,
        ) -> list[Candidate]:
            chosen = list(bind) or addresses
            return await _gather_component(connection, original, component, chosen, ports, wait=timeout)

        setattr(connection, "get_component_candidates", gather)  # noqa: B010 (replacing a method)


async def _gather_component(
    connection: Any,
    original: Callable[..., Awaitable[list[Candidate]]],
    component: int,
    addresses: list[str],
    ports: tuple[int, int] | None,
    wait: int,
) -> list[Candidate]:
    loop = asyncio.get_running_loop()
    candidates: list[Candidate] = []
    protocols = []
    for address in addresses:
        try:
            transport, protocol = await _bind(loop, lambda: aioice.ice.StunProtocol(connection), address, ports)
        except OSError as exc:
            log.warning("cannot bind ICE socket", extra={"address": address, "error": str(exc)})
            continue
        host, port = transport.get_extra_info("sockname")[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        candidates.append(protocol.local_candidate)
        protocols.append(protocol)
    connection._protocols += protocols
    tasks = []
    if connection.stun_server:
        for protocol in protocols:
            if ":" not in protocol.local_candidate.host:
                query = aioice.ice.server_reflexive_candidate(protocol, connection.stun_server)
                tasks.append(asyncio.ensure_future(query))
    if tasks:
        done, pending = await asyncio.wait(tasks, timeout=wait)
        for task in pending:
            task.cancel()
        candidates += [t.result()[0] for t in done if t.exception() is None]
    if connection.turn_server:
        # With no addresses, aioice's own gathering does only the TURN allocation.
        candidates += await original(component=component, addresses=[], timeout=wait)
    return candidates


async def _bind(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], address: str, ports: tuple[int, int] | None
) -> tuple[asyncio.DatagramTransport, Any]:
    if ports is None:
        candidates = [0]
    else:
        first, last = ports
        start = random.randint(first, last)
        candidates = list(range(start, last + 1)) + list(range(first, start))
    for port in candidates:
        try:
            transport, protocol = await loop.create_datagram_endpoint(factory, local_addr=(address, port))
        except OSError:
            if port == candidates[-1]:
                raise
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 262144)
        return transport, protocol
    raise OSError(f"no free UDP port in {ports}")


# --- receivers -----------------------------------------------------------------------------


def _to_packet(packet: AiortcRtpPacket) -> RtpPacket:
    return RtpPacket(
        payload_type=packet.payload_type,
        sequence=packet.sequence_number,
        timestamp=packet.timestamp,
        ssrc=packet.ssrc,
        payload=packet.payload,
        marker=bool(packet.marker),
    )


def tap_receiver(receiver: RTCRtpReceiver, sink: Callable[[RtpPacket], None] | None) -> None:
    """Hand ``receiver``'s encoded RTP to ``sink`` (None: drop it); the receiver decodes nothing."""

    async def handle(packet: AiortcRtpPacket, arrival_time_ms: int) -> None:
        if sink is not None and packet.payload:
            sink(_to_packet(packet))

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def untap_receiver(receiver: RTCRtpReceiver) -> None:
    receiver.__dict__.pop("_handle_rtp_packet", None)


class _CountingQueue(queue.Queue):  # type: ignore[type-arg]
    """The decoder thread's input: each item it takes is one frame handed to a decoder."""

    def __init__(self, on_decode: Callable[[], None]) -> None:
        super().__init__()
        self._on_decode = on_decode

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        item = super().get(block, timeout)
        if item is not None:
            self._on_decode()
        return item


def count_decodes(receiver: RTCRtpReceiver, on_decode: Callable[[], None]) -> None:
    """Call ``on_decode`` (from the decoder thread) for every frame aiortc decodes for ``receiver``.

    Must run before ``receive()`` starts the decoder thread, i.e. before the
    connection is established.
    """
    name = _RECEIVER + "decoder_queue"
    if getattr(receiver, _RECEIVER + "decoder_thread", None) is not None or not hasattr(receiver, name):
        raise AiortcChanged("RTCRtpReceiver's decoder queue is not where count_decodes expects it")
    setattr(receiver, name, _CountingQueue(on_decode))


async def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the browser sending on ``receiver`` for a keyframe (RTCP PLI)."""
    await receiver._send_rtcp_pli(media_ssrc)


# --- senders -----------------------------------------------------------------------------------


def set_opus_bitrate(sender: RTCRtpSender, bitrate: int) -> None:
    """Make ``sender`` encode Opus at ``bitrate`` bit/s; call before its first frame."""
    name = _SENDER + "encoder"
    if not hasattr(sender, name):
        raise AiortcChanged("RTCRtpSender has no encoder attribute")
    if getattr(sender, name) is not None:
        return  # already encoding: aiortc's choice stays
    encoder = OpusEncoder()
    encoder.codec.bit_rate = bitrate
    setattr(sender, name, encoder)


class RtpInjector:
    """Sends already-encoded RTP through an aiortc sender, as if its own encoder had produced it.

    The sender keeps its SSRC (announced in the SDP), MID and header
    extensions; packets go to its RTP history (so aiortc answers NACKs by
    retransmitting them) and into its sender-report counters. A picture-loss
    or full-intra request the browser sends to this sender goes to
    ``on_keyframe_request`` instead of an encoder.
    """

    def __init__(self, sender: RTCRtpSender, on_keyframe_request: Callable[[], None]) -> None:
        self._sender = sender
        sender._send_keyframe = on_keyframe_request  # type: ignore[method-assign]
        for name in ("rtp_header_extensions_map", "rtp_history", "mid", "packet_count", "octet_count"):
            if not hasattr(sender, _SENDER + name):
                raise AiortcChanged(f"RTCRtpSender has no {name}")

    @property
    def ssrc(self) -> int:
        return int(self._sender._ssrc)

    async def send(self, payload_type: int, sequence: int, timestamp: int, marker: bool, payload: bytes) -> None:
        sender = self._sender
        packet = AiortcRtpPacket(
            payload_type=payload_type, marker=int(marker), sequence_number=sequence, timestamp=timestamp
        )
        packet.ssrc = sender._ssrc
        packet.payload = payload
        packet.extensions.abs_send_time = (aiortc_clock.current_ntp_time() >> 14) & 0x00FFFFFF
        packet.extensions.mid = getattr(sender, _SENDER + "mid")
        getattr(sender, _SENDER + "rtp_history")[sequence % RTP_HISTORY_SIZE] = packet
        data = packet.serialize(getattr(sender, _SENDER + "rtp_header_extensions_map"))
        try:
            await sender.transport._send_rtp(data)
        except ConnectionError:
            return
        setattr(sender, _SENDER + "ntp_timestamp", aiortc_clock.current_ntp_time())
        setattr(sender, _SENDER + "rtp_timestamp", timestamp)
        setattr(sender, _SENDER + "octet_count", getattr(sender, _SENDER + "octet_count") + len(payload))
        setattr(sender, _SENDER + "packet_count", getattr(sender, _SENDER + "packet_count") + 1)
