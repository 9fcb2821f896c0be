"""What the SIP service needs from the media relay, whichever relay implements it."""

from __future__ import annotations

from collections.abc import Callable
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
    def stream_id(self) -> str: ...

    @property
    def a_port(self) -> int: ...

    @property
    def b_port(self) -> int: ...

    async def set_remote(self, leg: Leg, rtp: Addr | None) -> None: ...

    def set_remote_now(self, leg: Leg, rtp: Addr | None) -> bool:
        """``set_remote`` done at once if the relay can without waiting; False: await ``set_remote``."""
        ...

    async def stats(self) -> MediaStats: ...

    async def inject(self, leg: Leg, datagrams: list[bytes]) -> int:
        """Send RTP of the gateway's own to ``leg``'s phone; returns how many went out."""
        ...

    async def arm_timeout(self) -> None:
        """From now on, a leg silent for the relay's RTP timeout is reported."""
        ...

    async def close(self) -> MediaStats: ...


class MediaAllocator(Protocol):
    async def open_stream(self, stream_id: str) -> MediaStream: ...

    def on_timeout(self, handler: Callable[[str], None]) -> None:
        """``handler(stream_id)`` is called when a stream's media stops."""
        ...

    async def total_packets_relayed(self) -> int: ...

    async def close(self) -> None: ...
