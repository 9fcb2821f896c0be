"""A byte pipe from the event loop (source readers) to an ingest thread (PyAV's demuxer).

The loop side never blocks: ``write`` appends, and when the reader falls more than
``limit`` bytes behind, the oldest bytes are dropped (a live feed has no use for stale
data, and the demuxer resynchronises). The thread side's ``read`` blocks until some bytes
arrive or the pipe is closed, then returns what is there, so the demuxer sees data as
soon as it lands instead of waiting for a full buffer.
"""

from __future__ import annotations

import threading
from collections import deque


class BytePipe:
    def __init__(self, limit: int = 8 << 20) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.total = 0

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def exhausted(self) -> bool:
        """Closed, and every byte read."""
        with self._cond:
            return self._closed and not self._chunks

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            if self._closed:
                return
            self._chunks.append(data)
            self._size += len(data)
            self.total += len(data)
            while self._size > self._limit and len(self._chunks) > 1:
                gone = self._chunks.popleft()
                self._size -= len(gone)
                self.dropped += len(gone)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                return b""
            if n < 0:
                n = self._size
            out = bytearray()
            while self._chunks and len(out) < n:
                chunk = self._chunks.popleft()
                take = n - len(out)
                if len(chunk) > take:
                    self._chunks.appendleft(chunk[take:])
                    chunk = chunk[:take]
                out += chunk
            self._size -= len(out)
            return bytes(out)

    def drain_to(self, keep: int) -> None:
        """Drop all but the newest ``keep`` bytes (a probe promoted to live starts near now)."""
        with self._cond:
            while self._size > keep and len(self._chunks) > 1:
                gone = self._chunks.popleft()
                self._size -= len(gone)
                self.dropped += len(gone)
