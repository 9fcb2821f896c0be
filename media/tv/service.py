"""The TV service: channels, tokens, the guide and housekeeping, with async start/stop.

Built once (by the gateway's ``run`` command or a test) and handed to ``add_tv_routes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from media.tv import TvError
from media.tv.channel import Channel, Reader
from media.tv.config import ChannelConfig, TvConfig
from media.tv.epg import Guide, GuideError, parse_xmltv
from media.tv.recorder import Recorder
from media.tv.sources import read_source
from media.tv.timeshift import SHIFT_MARGIN_SEGMENTS, channel_shifts, zone_offset
from media.tv.tokens import TokenClaims, TokenRejected, verify
from media.tv.tokenstore import TokenRecord, TokenStore

log = logging.getLogger(__name__)

_HOUSEKEEPING_S = 1.0  # revocations reach running streams within this (plus one segment)


class ChannelForbidden(TvError):
    status = 403


class ChannelNotFound(TvError):
    status = 404


HQ_ZONE = "Asia/Shanghai"  # where channels come from, unless a tenant says otherwise


class TvService:
    def __init__(
        self,
        tv: TvConfig,
        data_dir: Path,
        *,
        registry: Any = None,
        wall: Callable[[], float] = time.time,
        reader: Reader = read_source,
        tenant_zone: Callable[[str], str] = lambda tenant: HQ_ZONE,
    ) -> None:
        self.tv = tv
        self.directory = data_dir / "tv"
        self.live_dir = self.directory / "live"
        self.dvr_dir = Path(tv.dvr.dir) if tv.dvr.dir else self.directory / "dvr"
        self.recorders: dict[int, Recorder] = {}
        self.tenant_zone = tenant_zone
        self.tokens = TokenStore(self.directory)
        self.wall = wall
        self.guide: Guide | None = None
        self.guide_error = ""
        self.channels: dict[int, Channel] = {}
        self._reader = reader
        self._secret = b""
        self._revoked: frozenset[str] = frozenset()
        self._tokens_identity: tuple[int, int, int] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._guide_due = 0.0
        self._guide_task: asyncio.Task[None] | None = None
        self._started = False
        if registry is not None:
            from media.tv.metrics import TvCollector

            registry.register(TvCollector(self))

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._secret = await asyncio.to_thread(self.tokens.secret)
        await asyncio.to_thread(self._reload_revoked)
        # Segments of an earlier run are stale (their names are per run): start clean.
        await asyncio.to_thread(shutil.rmtree, self.live_dir, True)
        for config in self.tv.channels:
            self.channels[config.number] = Channel(
                config,
                self.tv,
                self.live_dir / str(config.number),
                always_on=self.tv.pulled_always(config),
                reader=self._reader,
            )
        for config in self.tv.recorded:
            recorder = Recorder(
                config.number,
                self.dvr_dir / str(config.number),
                max_age=self.tv.dvr_seconds(config),
                max_bytes=self.tv.dvr_max_bytes(config),
                min_free=self.tv.dvr.min_free_bytes,
                retry_s=self.tv.dvr.retry_s,
                wall=self.wall,
            )
            await recorder.open()
            self.recorders[config.number] = recorder
            self.channels[config.number].recorder = recorder
        self._started = True
        for config in self.tv.channels:
            if self.tv.pulled_always(config):
                await self.channels[config.number].start()
        if self.tv.epg_source:
            await self.refresh_guide()
        self._arm()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._guide_task is not None:
            self._guide_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._guide_task
        await asyncio.gather(*(ch.stop("shutdown") for ch in self.channels.values()))
        for recorder in self.recorders.values():
            await recorder.close()

    @property
    def running(self) -> bool:
        return self._started

    # -- tokens -------------------------------------------------------------------------------

    def authorize(self, token: str) -> TokenClaims:
        """The claims of a token that grants access now, else TokenRejected (403)."""
        return verify(self._secret, token, self.wall(), self._revoked)

    def issue(self, tenant: str, days: int | None = None) -> tuple[str, TokenRecord]:
        return self.tokens.create(tenant, days or self.tv.token_days, int(self.wall()))

    def revoke(self, token_or_id: str) -> TokenRecord:
        record = self.tokens.revoke(token_or_id, int(self.wall()))
        self._reload_revoked()
        return record

    def _reload_revoked(self) -> None:
        identity = self.tokens.identity()
        if identity == self._tokens_identity:
            return
        self._tokens_identity = identity
        revoked = self.tokens.revoked_ids()
        fresh = revoked - self._revoked
        self._revoked = revoked
        if fresh:
            for recorder in self.recorders.values():
                for tid in fresh:
                    recorder.viewers.forget(f"{tid}|")
            # Shifted HTTP-TS streams check their token before each segment and end by themselves.
            cut = sum(ch.forget_viewers(fresh) for ch in self.channels.values())
            log.info("tv: %d token(s) revoked, %d stream(s) cut", len(fresh), cut)

    # -- lineup -------------------------------------------------------------------------------

    def lineup_for(self, tenant: str) -> list[ChannelConfig]:
        return [ch for ch in self.tv.channels if ch.allows(tenant)]

    def channel_for(self, claims: TokenClaims, number: int) -> Channel:
        channel = self.channels.get(number)
        if channel is None:
            raise ChannelNotFound(f"no channel {number}")
        if not channel.config.allows(claims.tenant):
            raise ChannelForbidden(f"channel {number} is not in tenant {claims.tenant}'s lineup")
        return channel

    def recorder_for(self, claims: TokenClaims, number: int) -> tuple[Channel, Recorder]:
        """A channel of the tenant's lineup that is recorded (ChannelNotFound otherwise)."""
        channel = self.channel_for(claims, number)
        recorder = self.recorders.get(number)
        if recorder is None:
            raise ChannelNotFound(f"channel {number} is not recorded")
        return channel, recorder

    def shifts_for(self, tenant: str, channel: ChannelConfig) -> list[int]:
        """The time-shifted entries (seconds behind live) a tenant sees for a recorded channel."""
        if not channel.record:
            return []
        now = self.wall()
        return channel_shifts(
            self.tv.dvr.timeshift_hours,
            zone_offset(self.tenant_zone(tenant), now),
            zone_offset(self.tv.site_timezone, now),
            self.tv.dvr_seconds(channel),
            SHIFT_MARGIN_SEGMENTS * self.tv.max_segment_s,
        )

    # -- guide --------------------------------------------------------------------------------

    async def refresh_guide(self) -> None:
        source = self.tv.epg_source
        self._guide_due = asyncio.get_running_loop().time() + self.tv.epg_refresh_s
        try:
            if source.startswith(("http://", "https://")):
                timeout = aiohttp.ClientTimeout(total=120)
                async with aiohttp.ClientSession(timeout=timeout) as session, session.get(source) as resp:
                    if resp.status != 200:
                        raise GuideError(f"HTTP {resp.status}")
                    data = await resp.read()
            else:
                data = await asyncio.to_thread(Path(source).read_bytes)
            self.guide = await asyncio.to_thread(parse_xmltv, data)
            self.guide_error = ""
        except (OSError, aiohttp.ClientError, TimeoutError, GuideError) as exc:
            # Keep the previous guide: an old guide beats none.
            self.guide_error = f"{source}: {exc}"
            log.warning("tv: cannot load the guide: %s", self.guide_error)

    # -- housekeeping -------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._started:
            self._timer = asyncio.get_running_loop().call_later(_HOUSEKEEPING_S, self._housekeeping)

    def _housekeeping(self) -> None:
        self._timer = None
        try:
            self._reload_revoked()
        except TvError as exc:
            log.warning("tv: %s", exc)
        now_wall = self.wall()
        for recorder in self.recorders.values():
            recorder.tick()
        for channel in self.channels.values():
            channel.sample_cpu()
            expired = {v.token_id for v in channel.fanout.viewers if v.expires <= now_wall}
            if expired:
                channel.fanout.close_where(expired, "token expired")
        loop = asyncio.get_running_loop()
        idle = self._guide_task is None or self._guide_task.done()
        if self.tv.epg_source and loop.time() >= self._guide_due and idle:
            self._guide_task = loop.create_task(self.refresh_guide())
        self._arm()

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "channels": [ch.status() for ch in self.channels.values()],
            "dvr_dir": str(self.dvr_dir),
            "guide": {
                "source": self.tv.epg_source,
                "channels": len(self.guide.channels) if self.guide else 0,
                "error": self.guide_error,
            },
        }


__all__ = ["ChannelForbidden", "ChannelNotFound", "TokenRejected", "TvService"]
