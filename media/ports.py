"""RTP/RTCP port pairs from a configured range: even RTP port, RTCP on RTP + 1 (RFC 3550 11).

Released pairs go to the back of the queue, so a port is reused as late as
possible: stray packets of an ended call then rarely reach the next call that
gets its port (they would be dropped by the strict source anyway, but counted).
"""

from __future__ import annotations

from collections import deque

from media.errors import PortsExhausted, RelayError

__all__ = ["PortAllocator"]


class PortAllocator:
    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min % 2)
        if not 0 < port_min <= port_max <= 65535 or first + 1 > port_max:
            raise RelayError(f"port range {port_min}-{port_max} holds no even/odd RTP/RTCP pair")
        self.port_min = port_min
        self.port_max = port_max
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self._used)

    @property
    def in_use(self) -> int:
        return len(self._used)

    def allocate(self) -> int:
        """Take a free pair; return its (even) RTP port."""
        if not self._free:
            raise PortsExhausted(
                f"no free RTP/RTCP port pair in {self.port_min}-{self.port_max}: all {self.capacity} pairs are in use"
            )
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, rtp_port: int) -> None:
        if rtp_port not in self._used:
            raise RelayError(f"port {rtp_port} was not allocated")
        self._used.remove(rtp_port)
        self._free.append(rtp_port)
