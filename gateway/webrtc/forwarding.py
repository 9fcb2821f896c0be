"""Forwarding encoded RTP between two legs without touching payloads (sans-I/O).

A ``StreamRewriter`` maps one incoming stream onto one outgoing stream: the
outgoing SSRC and payload type are the leg's own, sequence numbers and
timestamps keep their spacing (a gap stays a gap, so the receiver knows a
packet is missing) and continue smoothly when the source restarts under a
new SSRC. The payload bytes go out exactly as they came in; RTX
retransmissions (RFC 4588) are unwrapped to the packet they repeat.

A ``KeyframeGate`` rate-limits keyframe requests travelling upstream: a
receiver that reports picture loss repeatedly gets one request through per
interval, plus one at the interval's end if more arrived meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from media.rtp import RtpPacket

_SEQ = 1 << 16
_TS = 1 << 32


@dataclass
class StreamRewriter:
    out_ssrc: int
    payload_types: Mapping[int, int]  # incoming payload type -> outgoing
    clock_rate: int
    rtx: Mapping[int, int] = field(default_factory=dict)  # incoming RTX payload type -> its media type
    # Timestamp step assumed across a source change (one 20 ms audio frame or one 30 fps video frame).
    restart_step: int = 0
    _source: int | None = None
    _seq_offset: int = 0
    _ts_offset: int = 0
    _last_seq: int | None = None  # last outgoing sequence number
    _last_ts: int = 0
    _last_at: float = 0.0
    forwarded: int = 0
    dropped: int = 0

    def rewrite(self, packet: RtpPacket, now: float) -> RtpPacket | None:
        """The packet to send for ``packet``, or None when it carries nothing to forward."""
        payload_type, sequence, payload = packet.payload_type, packet.sequence, packet.payload
        if payload_type in self.rtx:
            if len(payload) <= 2:
                self.dropped += 1  # padding-only probe
                return None
            sequence = int.from_bytes(payload[:2], "big")
            payload = payload[2:]
            payload_type = self.rtx[payload_type]
        elif packet.ssrc != self._source:
            self._restart(packet)
        out_type = self.payload_types.get(payload_type)
        if out_type is None or not payload or self._source is None:
            self.dropped += 1
            return None
        out_seq = (sequence + self._seq_offset) % _SEQ
        out_ts = (packet.timestamp + self._ts_offset) % _TS
        if self._last_seq is None or _newer(out_seq, self._last_seq):
            self._last_seq, self._last_ts, self._last_at = out_seq, out_ts, now
        self.forwarded += 1
        return RtpPacket(
            payload_type=out_type,
            sequence=out_seq,
            timestamp=out_ts,
            ssrc=self.out_ssrc,
            payload=payload,
            marker=packet.marker,
        )

    def _restart(self, packet: RtpPacket) -> None:
        self._source = packet.ssrc
        if self._last_seq is None:
            return  # the first source keeps its own numbering
        step = self.restart_step or max(1, self.clock_rate // 50)
        self._seq_offset = (self._last_seq + 1 - packet.sequence) % _SEQ
        self._ts_offset = (self._last_ts + step - packet.timestamp) % _TS

    def reserve(self, count: int) -> int:
        """Take ``count`` sequence numbers for packets we insert (DTMF); returns the first."""
        first = ((self._last_seq if self._last_seq is not None else -1) + 1) % _SEQ
        self._seq_offset = (self._seq_offset + count) % _SEQ
        self._last_seq = (first + count - 1) % _SEQ
        return first

    def timestamp_at(self, now: float) -> int:
        """The outgoing timestamp that corresponds to ``now`` (for inserted events)."""
        elapsed = max(0.0, now - self._last_at) if self._last_seq is not None else 0.0
        return (self._last_ts + int(elapsed * self.clock_rate)) % _TS


def _newer(a: int, b: int) -> bool:
    return a != b and (a - b) % _SEQ < _SEQ // 2


@dataclass
class KeyframeGate:
    interval: float
    _last_sent: float | None = None
    _pending: bool = False
    passed: int = 0
    suppressed: int = 0

    def request(self, now: float) -> bool:
        """A receiver asked for a keyframe: True if the request goes upstream now."""
        if self._last_sent is None or now - self._last_sent >= self.interval:
            self._last_sent = now
            self._pending = False
            self.passed += 1
            return True
        self._pending = True
        self.suppressed += 1
        return False

    def next_deadline(self) -> float | None:
        if not self._pending or self._last_sent is None:
            return None
        return self._last_sent + self.interval

    def on_timer(self, now: float) -> bool:
        """True if a held-back request is due now."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return False
        self._pending = False
        self._last_sent = now
        self.passed += 1
        return True
