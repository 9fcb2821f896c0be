"""Per-path rate cap: a token bucket in front of strict-priority class queues.

Rates are fixed from configuration, not probed: a loss-driven congestion
controller would collapse on a satellite hop whose loss is interference, not
congestion. Frames that cannot go within their class's queue budget are dropped
(and counted), voice first among the waiting, TV last to be sent.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gateway.tunnel.classes import POLICIES, PRIORITY
from gateway.tunnel.frame import TrafficClass

_ORDER = sorted(TrafficClass, key=lambda c: PRIORITY[c])
# Counted on the wire: IPv4 + UDP headers as well as the datagram.
WIRE_OVERHEAD = 28


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "_updated")

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float, now: float) -> None:
        self.rate = rate_bytes_per_s
        self.burst = burst_bytes
        self.tokens = burst_bytes
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
            self._updated = now

    def try_take(self, size: int, now: float) -> bool:
        self._refill(now)
        if self.tokens >= size:
            self.tokens -= size
            return True
        return False

    def ready_at(self, size: int, now: float) -> float:
        self._refill(now)
        return now if self.tokens >= size else now + (size - self.tokens) / self.rate


@dataclass
class ShaperStats:
    sent_frames: int = 0
    queued_frames: int = 0
    dropped_frames: int = 0


class PathShaper:
    """``submit`` returns the frames to send now; ``poll`` at ``next_deadline`` releases the rest."""

    def __init__(self, rate_kbps: int, now: float, burst_ms: int = 50) -> None:
        self.uncapped = rate_kbps <= 0
        rate = rate_kbps * 1000 / 8
        # At least two full-size frames, or a cap below one frame per burst would stall.
        self._bucket = TokenBucket(rate, max(rate * burst_ms / 1000, 3000), now)
        self._queues: dict[TrafficClass, deque[tuple[float, bytes]]] = {c: deque() for c in _ORDER}
        self._waiting = 0
        self.stats = ShaperStats()

    def submit(self, frame: bytes, traffic_class: TrafficClass, now: float) -> list[bytes]:
        if self.uncapped or (not self._waiting and self._bucket.try_take(len(frame) + WIRE_OVERHEAD, now)):
            self.stats.sent_frames += 1
            return [frame]
        self._queues[traffic_class].append((now, frame))
        self._waiting += 1
        self.stats.queued_frames += 1
        return self.poll(now)

    def poll(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        for traffic_class in _ORDER:
            queue = self._queues[traffic_class]
            budget = POLICIES[traffic_class].max_queue_delay
            while queue:
                queued_at, frame = queue[0]
                if now >= queued_at + budget:
                    queue.popleft()
                    self._waiting -= 1
                    self.stats.dropped_frames += 1
                    continue
                if not self._bucket.try_take(len(frame) + WIRE_OVERHEAD, now):
                    self.stats.sent_frames += len(out)
                    return out
                queue.popleft()
                self._waiting -= 1
                out.append(frame)
        self.stats.sent_frames += len(out)
        return out

    def next_deadline(self, now: float) -> float | None:
        if not self._waiting:
            return None
        for traffic_class in _ORDER:
            queue = self._queues[traffic_class]
            if queue:
                queued_at, frame = queue[0]
                expiry = queued_at + POLICIES[traffic_class].max_queue_delay
                return min(self._bucket.ready_at(len(frame) + WIRE_OVERHEAD, now), expiry)
        return None

    @property
    def waiting(self) -> int:
        return self._waiting
