"""HTTP-TS fan-out: one ingest, many viewers, each at its own pace.

A new viewer starts at the most recent random access point (the tables plus everything
since the last keyframe are kept), so its player shows a picture at once instead of
waiting for the next keyframe. A viewer that falls more than ``max_backlog`` bytes behind
is cut off: it would only fall further behind, and its player reconnects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

_GOP_CACHE_LIMIT = 16 << 20  # a feed without keyframes must not grow the cache forever


@dataclass(eq=False)
class Viewer:
    token_id: str
    remote: str
    max_backlog: int
    expires: float = float("inf")  # the token's expiry, UTC seconds
    chunks: deque[bytes] = field(default_factory=deque)
    backlog: int = 0
    closed: bool = False
    reason: str = ""
    synced: bool = False
    bytes_out: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, data: bytes) -> None:
        if self.closed or not self.synced or not data:
            return
        self.chunks.append(data)
        self.backlog += len(data)
        if self.backlog > self.max_backlog:
            self.close("too slow")
        self._wakeup.set()

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            self.chunks.clear()
            self.backlog = 0
        self._wakeup.set()

    async def next_data(self) -> bytes:
        """Everything queued, as one chunk; b"" once closed."""
        while not self.chunks and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.closed:
            return b""
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.backlog = 0
        return data


@dataclass
class Fanout:
    max_backlog: int
    viewers: set[Viewer] = field(default_factory=set)
    _gop: list[bytes] = field(default_factory=list)
    _gop_size: int = 0
    _have_gop: bool = False

    def subscribe(self, token_id: str, remote: str, expires: float = float("inf")) -> Viewer:
        viewer = Viewer(token_id, remote, self.max_backlog, expires)
        # A cached GOP too big for the viewer's backlog (high rate, long GOP) would cut it off
        # at once: such a viewer waits for the next keyframe instead.
        if self._have_gop and self._gop_size <= self.max_backlog // 2:
            viewer.synced = True
            viewer.push(b"".join(self._gop))
        self.viewers.add(viewer)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def publish(self, data: bytes) -> None:
        if self._have_gop:
            self._gop.append(data)
            self._gop_size += len(data)
            if self._gop_size > _GOP_CACHE_LIMIT:
                self._gop.clear()
                self._gop_size = 0
                self._have_gop = False
        for viewer in self.viewers:
            viewer.push(data)

    def random_access(self, psi: bytes) -> None:
        """The data published next starts a keyframe; ``psi`` makes it decodable alone."""
        self._gop = [psi] if psi else []
        self._gop_size = len(psi)
        self._have_gop = True
        for viewer in self.viewers:
            if not viewer.synced:
                viewer.synced = True
                if psi:
                    viewer.push(psi)

    def restart(self) -> None:
        """The stream restarted: forget the cached picture."""
        self._gop.clear()
        self._gop_size = 0
        self._have_gop = False

    def close_all(self, reason: str) -> None:
        for viewer in list(self.viewers):
            viewer.close(reason)
        self.viewers.clear()

    def close_where(self, token_ids: frozenset[str] | set[str], reason: str) -> int:
        gone = [v for v in self.viewers if v.token_id in token_ids]
        for viewer in gone:
            viewer.close(reason)
            self.viewers.discard(viewer)
        return len(gone)
