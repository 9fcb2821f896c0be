"""A sliding anti-replay window over 48-bit link sequence numbers (RFC 4303 section 3.4.3 style).

The window is wide (8192 by default) because duplicated voice and two paths of
very different delay (150 ms leased line, 600 ms satellite) reorder thousands of
frames at a busy hub. The bitmap is a Python int: bit i set means ``highest - i``
was seen.
"""

from __future__ import annotations


class ReplayWindow:
    __slots__ = ("size", "_highest", "_bits", "_mask")

    def __init__(self, size: int = 8192) -> None:
        if size < 64:
            raise ValueError("replay window must cover at least 64 packets")
        self.size = size
        self._highest = -1
        self._bits = 0
        self._mask = (1 << size) - 1

    def check(self, seq: int) -> bool:
        """Would ``seq`` be accepted? (Call before the costly decryption.)"""
        if seq > self._highest:
            return True
        offset = self._highest - seq
        return offset < self.size and not (self._bits >> offset) & 1

    def accept(self, seq: int) -> None:
        """Record ``seq`` as seen; only after its tag verified, so forgeries cannot move the window."""
        if seq > self._highest:
            shift = seq - self._highest
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1
            self._highest = seq
        else:
            self._bits |= 1 << (self._highest - seq)

    @property
    def highest(self) -> int:
        return self._highest
