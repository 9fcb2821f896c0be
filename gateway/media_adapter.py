"""The SIP service's media interface, implemented by media.relay's RelayManager."""

from __future__ import annotations

from collections.abc import Callable

from gateway.config import MediaConfig
from gateway.media_port import Addr, Leg, MediaStats
from media.relay import LegTimedOut, RelayConfig, RelayManager, RelaySession, SessionLost
from media.relay_core import RelayEvent, SessionStats


def _stats(s: SessionStats) -> MediaStats:
    a = s.a
    return MediaStats(
        packets_in=a.rtp.packets_in + a.rtcp.packets_in,
        packets_out=a.rtp.packets_out + a.rtcp.packets_out,
        bytes_in=a.rtp.bytes_in + a.rtcp.bytes_in,
        bytes_out=a.rtp.bytes_out + a.rtcp.bytes_out,
    )


class RelayStream:
    def __init__(self, session: RelaySession) -> None:
        self._session = session

    @property
    def stream_id(self) -> str:
        return self._session.session_id

    @property
    def a_port(self) -> int:
        return self._session.leg_a.local_rtp_port

    @property
    def b_port(self) -> int:
        return self._session.leg_b.local_rtp_port

    async def set_remote(self, leg: Leg, rtp: Addr | None) -> None:
        rtcp = (rtp[0], rtp[1] + 1) if rtp is not None else None
        await self._session.set_remote(leg, rtp, rtcp)

    def set_remote_now(self, leg: Leg, rtp: Addr | None) -> bool:
        rtcp = (rtp[0], rtp[1] + 1) if rtp is not None else None
        return self._session.set_remote_now(leg, rtp, rtcp)

    async def arm_timeout(self) -> None:
        await self._session.arm_timeout()

    async def stats(self) -> MediaStats:
        return _stats(await self._session.stats())

    async def inject(self, leg: Leg, datagrams: list[bytes]) -> int:
        return await self._session.inject(leg, datagrams)

    async def close(self) -> MediaStats:
        return _stats(await self._session.close())


class RelayAllocator:
    def __init__(self, config: RelayConfig) -> None:
        self._handler: Callable[[str], None] | None = None
        self._relay = RelayManager(config, on_event=self._event)

    def _event(self, event: RelayEvent) -> None:
        if isinstance(event, LegTimedOut | SessionLost) and self._handler is not None:
            self._handler(event.session_id)

    async def start(self) -> None:
        await self._relay.start()

    async def open_stream(self, stream_id: str) -> RelayStream:
        return RelayStream(await self._relay.open(stream_id))

    def on_timeout(self, handler: Callable[[str], None]) -> None:
        self._handler = handler

    async def total_packets_relayed(self) -> int:
        return (await self._relay.totals()).packets_relayed

    async def close(self) -> None:
        await self._relay.aclose()


async def open_media(config: MediaConfig, advertised: str) -> RelayAllocator:
    allocator = RelayAllocator(RelayConfig.from_media(config, advertised))
    await allocator.start()
    return allocator
