"""Hop-by-hop retransmission (NACK) for TV and control flows, and de-duplication for all flows.

The receiver delivers in order. A gap is NACKed after a short reorder grace (two
paths reorder), again every round trip while it stays open, and given up after the
latency window (a few round trips): then the frames behind it are delivered and
the loss is counted. The sender keeps what it sent for that window.

Flow sequence numbers are 16 bits on the wire; both sides unwrap them to an
ever-growing integer near the highest seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from gateway.tunnel.frame import MAX_NACK_SEQS

SEQ_MOD = 1 << 16
_HALF = SEQ_MOD // 2


def unwrap(seq16: int, reference: int) -> int:
    """The integer congruent to ``seq16`` mod 2**16 nearest to ``reference``."""
    candidate = (reference & ~0xFFFF) | seq16
    if candidate - reference > _HALF:
        candidate -= SEQ_MOD
    elif reference - candidate > _HALF:
        candidate += SEQ_MOD
    return candidate


@dataclass(frozen=True)
class ArqSettings:
    reorder_grace: float = 0.03
    min_window: float = 1.0
    window_rtts: float = 5.0  # four NACK rounds (see ArqReceiver.poll)
    max_window: float = 10.0
    default_rtt: float = 0.7
    max_gap: int = 4096

    def window(self, rtt: float | None) -> float:
        rtt = self.default_rtt if rtt is None else rtt
        return min(self.max_window, max(self.min_window, self.window_rtts * rtt))


class ArqSender:
    """Keeps sent payloads by flow sequence for the latency window."""

    def __init__(self, settings: ArqSettings) -> None:
        self.settings = settings
        self._sent: OrderedDict[int, tuple[float, bytes]] = OrderedDict()
        self.retransmitted = 0
        self.unavailable = 0

    def record(self, seq16: int, payload: bytes, now: float, rtt: float | None) -> None:
        self._sent[seq16] = (now, payload)
        self._sent.move_to_end(seq16)
        # The receiver's window starts when it notices a gap, half a round trip after we sent,
        # and its last NACK needs another half to reach us: keep frames that much longer.
        horizon = now - self.settings.window(rtt) - 2 * (rtt if rtt is not None else self.settings.default_rtt)
        while self._sent:
            first = next(iter(self._sent.values()))
            if first[0] >= horizon and len(self._sent) < SEQ_MOD // 2:
                break
            self._sent.popitem(last=False)

    def on_nack(self, seqs: list[int]) -> list[tuple[int, bytes]]:
        out = []
        for seq in seqs:
            entry = self._sent.get(seq)
            if entry is None:
                self.unavailable += 1
            else:
                out.append((seq, entry[1]))
        self.retransmitted += len(out)
        return out


class _Gap:
    __slots__ = ("first_seen", "nack_at", "nacks")

    def __init__(self, first_seen: float, nack_at: float) -> None:
        self.first_seen = first_seen
        self.nack_at = nack_at
        self.nacks = 0


class ArqReceiver:
    """In-order delivery with NACKs; ``on_frame`` and ``poll`` return payloads ready to deliver.

    ``first_seq`` is where the sender starts a flow (links open flows at 0 on both sides), so a
    lost first frame is a gap to NACK like any other; ``None`` starts at the first frame seen.
    """

    def __init__(self, settings: ArqSettings, first_seq: int | None = None) -> None:
        self.settings = settings
        self._next: int | None = first_seq
        self._highest = -1 if first_seq is None else first_seq - 1
        self._fresh = True
        self._buffer: dict[int, bytes] = {}
        self._gaps: dict[int, _Gap] = {}
        self.lost = 0
        self.recovered = 0
        self.duplicates = 0
        self.nacks_sent = 0

    def on_frame(self, seq16: int, payload: bytes, now: float) -> list[bytes]:
        if self._next is None:
            self._next = seq16
            self._highest = seq16 - 1
        seq = unwrap(seq16, self._next if self._fresh else self._highest)
        if self._fresh:
            self._fresh = False
            if seq < self._next:
                # Nothing seen yet and the flow is already behind us: the sender did not start
                # where we expected (it kept the flow across our restart); follow it.
                self._next = seq
                self._highest = seq - 1
        if seq < self._next or seq in self._buffer:
            self.duplicates += 1
            return []
        if seq - self._next > self.settings.max_gap:
            return self._resync(seq, payload)
        if seq in self._gaps:
            del self._gaps[seq]
            self.recovered += 1
        for missing in range(self._highest + 1, seq):
            if missing >= self._next:
                self._gaps[missing] = _Gap(now, now + self.settings.reorder_grace)
        self._highest = max(self._highest, seq)
        self._buffer[seq] = payload
        return self._drain()

    def _drain(self) -> list[bytes]:
        out = []
        assert self._next is not None
        while self._next in self._buffer:
            out.append(self._buffer.pop(self._next))
            self._next += 1
        return out

    def _resync(self, seq: int, payload: bytes) -> list[bytes]:
        """The sender jumped far ahead (restart, long outage): flush and start again at ``seq``."""
        out = [self._buffer[s] for s in sorted(self._buffer)]
        self.lost += len(self._gaps)
        self._buffer.clear()
        self._gaps.clear()
        self._next = seq + 1
        self._highest = seq
        return [*out, payload]

    def poll(self, now: float, rtt: float | None) -> tuple[list[bytes], list[int]]:
        """Give up on gaps older than the window; return (payloads to deliver, seqs to NACK)."""
        window = self.settings.window(rtt)
        out: list[bytes] = []
        for seq in sorted(self._gaps):
            gap = self._gaps.get(seq)
            if gap is not None and now >= gap.first_seen + window and self._next is not None:
                # Skip the hole and everything missing before it; deliver what we hold up to the next hole.
                for skipped in range(self._next, seq + 1):
                    if skipped in self._gaps:
                        del self._gaps[skipped]
                        self.lost += 1
                    elif skipped in self._buffer:
                        out.append(self._buffer.pop(skipped))
                self._next = seq + 1
                out += self._drain()
        nacks: list[int] = []
        # A NACK's answer is due a round trip later: ask again a quarter of one after that.
        retry = max(rtt if rtt is not None else self.settings.default_rtt, 0.05) * 1.25
        for seq, gap in self._gaps.items():
            if gap.nack_at <= now and len(nacks) < MAX_NACK_SEQS:
                nacks.append(seq & 0xFFFF)
                gap.nacks += 1
                gap.nack_at = now + retry
        self.nacks_sent += len(nacks)
        return out, nacks

    def next_deadline(self, rtt: float | None) -> float | None:
        if not self._gaps:
            return None
        window = self.settings.window(rtt)
        return min(min(g.nack_at, g.first_seen + window) for g in self._gaps.values())


class Dedup:
    """Drops second copies of a frame (voice duplicated on two paths) by unwrapped flow sequence."""

    __slots__ = ("_highest", "_bits", "duplicates")

    SIZE = 1024

    def __init__(self) -> None:
        self._highest: int | None = None
        self._bits = 0
        self.duplicates = 0

    def first_time(self, seq16: int) -> bool:
        if self._highest is None:
            self._highest = seq16
            self._bits = 1
            return True
        seq = unwrap(seq16, self._highest)
        if seq > self._highest:
            shift = seq - self._highest
            self._bits = ((self._bits << shift) | 1) & ((1 << self.SIZE) - 1) if shift < self.SIZE else 1
            self._highest = seq
            return True
        offset = self._highest - seq
        if offset >= self.SIZE or (self._bits >> offset) & 1:
            self.duplicates += 1
            return False
        self._bits |= 1 << offset
        return True
