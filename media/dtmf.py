"""Key presses as RFC 4733 telephone-event packets, for digits that arrived as SIP INFO (sans-I/O).

Each sender is one RTP source of the gateway's own towards one phone: its SSRC,
sequence and timestamp carry on across digits, so the phone sees one continuous
event stream. ``packets`` says what to send when; the caller paces them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from media.rtp import RtpPacket, dtmf_events

STEP = 160  # 20 ms of an 8 kHz clock: the packet interval RFC 4733 suggests
# Silence between two presses that arrive faster than they can be played (INFOs back to back).
GAP_S = 0.06


@dataclass
class DtmfSender:
    payload_type: int
    clock_rate: int = 8000
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    sequence: int = field(default_factory=lambda: secrets.randbits(16))
    timestamp: int = field(default_factory=lambda: secrets.randbits(32))
    # When the last press queued so far ends: a press never overlaps the one before it.
    free_at: float = float("-inf")

    def packets(self, digit: str, duration_ms: int, now: float) -> list[tuple[float, bytes]]:
        """(send at, datagram) for one key press of ``duration_ms`` starting at ``now``, or after
        the press before it has been played out."""
        now = max(now, self.free_at)
        step = self.clock_rate * 20 // 1000
        duration = max(step, self.clock_rate * duration_ms // 1000)
        out: list[tuple[float, bytes]] = []
        start = self.timestamp
        for i, event in enumerate(dtmf_events(digit, duration=duration, step=step)):
            packet = RtpPacket(
                payload_type=self.payload_type,
                sequence=self.sequence,
                timestamp=start,
                ssrc=self.ssrc,
                payload=bytes(event),
                marker=i == 0,
            )
            self.sequence = (self.sequence + 1) & 0xFFFF
            # An update as each 20 ms of the key press passes; the end packets when it is released.
            elapsed = event.duration if event.end else event.duration - step
            at = now + elapsed / self.clock_rate
            out.append((at, bytes(packet)))
        # The next event starts after this one in RTP time.
        self.timestamp = (start + duration + step) & 0xFFFFFFFF
        self.free_at = out[-1][0] + GAP_S
        return out
