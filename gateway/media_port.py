"""What the SIP service needs from the media relay, whichever relay implements it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Addr = tuple[str, int]
Leg = Literal["a", "b"]


@dataclass(frozen=True)
class MediaStats:
    """Counts seen from leg A's side: "in" came from the caller, "out" went to the caller."""

    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def __add__(self, other: MediaStats) -> MediaStats:
        return MediaStats(
            self.packets_in + other.packets_in,
            self.packets_out + other.packets_out,
            self.bytes_in + other.bytes_in,
            self.bytes_out + other.bytes_out,
        )


class MediaStream(Protocol):
    """One relayed RTP stream (one m= line): a port pair facing each leg."""

    @property
    def a_port(self) -> int: ...

    @property
    def b_port(self) -> int: ...

    def set_remote(self, leg: Leg, rtp: Addr | None) -> None: ...

    def stats(self) -> MediaStats: ...

    def idle_seconds(self, now: float) -> float:
        """Seconds since the last packet on either leg (since opening if none)."""
        ...

    async def close(self) -> MediaStats: ...


class MediaAllocator(Protocol):
    async def open_stream(self, session_id: str) -> MediaStream: ...

    def total_packets_relayed(self) -> int: ...

    async def close(self) -> None: ...
