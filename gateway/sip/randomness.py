"""Random identifiers (tags, branches, Call-IDs, nonces) drawn from a buffer of OS randomness.

Every call mints about nine of them; ``secrets`` asks the kernel (one ``getrandom``
syscall) for each. Reading a few kilobytes at a time gives the same bytes from the same
source. A forked child drops what it inherited, so parent and child never share bytes.
"""

from __future__ import annotations

import os
import threading

_REFILL = 4096


class RandomBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._used = 0

    def token_bytes(self, n: int) -> bytes:
        with self._lock:
            if self._used + n > len(self._buffer):
                self._buffer = os.urandom(max(_REFILL, n))
                self._used = 0
            start = self._used
            self._used = start + n
            return self._buffer[start : start + n]

    def token_hex(self, n: int) -> str:
        return self.token_bytes(n).hex()

    def forget(self) -> None:
        self._buffer = b""
        self._used = 0


# Process-wide like os.urandom itself: it holds no configuration, only unread randomness.
_SHARED = RandomBuffer()
os.register_at_fork(after_in_child=_SHARED.forget)

token_bytes = _SHARED.token_bytes
token_hex = _SHARED.token_hex
