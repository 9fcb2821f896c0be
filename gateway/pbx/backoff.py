"""Reconnect delays: exponential with jitter, capped; pure (the caller supplies the randomness)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    # +/- this fraction, so gateways that lost the same PBX do not all come back in step.
    jitter: float = 0.2
    _attempt: int = 0

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.factor >= 1 and 0 <= self.jitter < 1):
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")

    def next_delay(self, rand: float) -> float:
        """The delay before the next attempt; ``rand`` is uniform in [0, 1)."""
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        if base < self.maximum:
            self._attempt += 1
        return base * (1 - self.jitter + 2 * self.jitter * rand)

    def reset(self) -> None:
        """A connection worked: the next failure starts from ``initial`` again."""
        self._attempt = 0
