"""HTTP routes of recorded channels: time-shift and catch-up, under the viewer's token::

    /iptv/<token>/ch/<n>/dvr/shift-<seconds>.m3u8   the channel <seconds> ago, as live HLS
    /iptv/<token>/ch/<n>/dvr/shift-<seconds>.ts     the same as continuous MPEG-TS
    /iptv/<token>/ch/<n>/dvr/<start>-<stop>.m3u8    a programme from its start (UTC seconds):
                                                    VOD once recorded to its end, EVENT before
    /iptv/<token>/ch/<n>/dvr/<run>-<seq>.ts         recorded segments

and, for players in the "shift"/"append" catch-up conventions, ``?utc=<start>`` on the live
URLs (``ch/<n>/index.m3u8``, ``ch/<n>.ts``) plays the channel from ``start`` onwards.
A tenant reaches only its own channels' recordings (403 otherwise).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from media.tv.catchup import available, render_catchup, select
from media.tv.channel import Channel
from media.tv.config import ChannelConfig
from media.tv.epg import Guide, Programme, to_iso
from media.tv.m3u import Archive
from media.tv.recorder import Recorder
from media.tv.service import ChannelNotFound, TvService
from media.tv.timeshift import NothingRecorded, SegmentDue, ShiftCursor, WaitUntil, render_shifted, shift_label
from media.tv.tokens import TokenClaims, TokenRejected
from media.tv.webcommon import (
    HLS_TYPE,
    NO_CACHE,
    SEGMENT_CACHE,
    TS_TYPE,
    channel_of,
    claims_of,
    viewer_key,
)

_SECONDS = r"\d{1,7}"
_TIME = r"\d{9,11}"
_SEGMENT = re.compile(r"^[0-9a-f]{8}-\d{1,12}\.ts$")
_TOKEN_CHECK_S = 1.0  # a shifted HTTP-TS stream re-checks its token at least this often


def add_dvr_routes(app: web.Application, service: TvService, prefix: str) -> DvrHandlers:
    h = DvrHandlers(service)
    base = prefix + "/{token}/ch/{number:\\d{1,5}}/dvr/"
    r = app.router
    r.add_get(base + "shift-{seconds:" + _SECONDS + "}.m3u8", h.shift_playlist)
    r.add_get(base + "shift-{seconds:" + _SECONDS + "}.ts", h.shift_stream)
    r.add_get(base + "{start:" + _TIME + "}-{stop:" + _TIME + "}.m3u8", h.catchup_playlist)
    r.add_get(base + "{segment}", h.segment)
    return h


class DvrHandlers:
    def __init__(self, service: TvService) -> None:
        self.service = service

    # -- helpers ------------------------------------------------------------------------------

    def recorded(self, request: web.Request, claims: TokenClaims) -> tuple[Channel, Recorder]:
        channel = channel_of(self.service, request, claims)
        try:
            return self.service.recorder_for(claims, channel.number)
        except ChannelNotFound as exc:
            raise web.HTTPNotFound(text=f"404: {exc}\n") from None

    def _shift(self, channel: Channel, seconds: int) -> int:
        window = self.service.tv.dvr_seconds(channel.config)
        if not 1 <= seconds <= window:
            raise web.HTTPNotFound(text=f"404: channel {channel.number} keeps {window:.0f} s, not {seconds} s\n")
        return seconds

    @staticmethod
    def _seen(recorder: Recorder, claims: TokenClaims, request: web.Request) -> None:
        recorder.seen(viewer_key(claims, request))

    @property
    def _target(self) -> int:
        return max(1, -(-int(self.service.tv.max_segment_s * 1000) // 1000))

    # -- time-shift ---------------------------------------------------------------------------

    async def shift_playlist(self, request: web.Request) -> web.Response:
        claims = claims_of(self.service, request)
        channel, recorder = self.recorded(request, claims)
        return self.shifted_playlist(request, claims, channel, recorder, int(request.match_info["seconds"]), "")

    def shifted_playlist(
        self,
        request: web.Request,
        claims: TokenClaims,
        channel: Channel,
        recorder: Recorder,
        seconds: int,
        uri_prefix: str,
    ) -> web.Response:
        shift = self._shift(channel, seconds)
        self._seen(recorder, claims, request)
        text = render_shifted(
            recorder.window.segments,
            self.service.wall(),
            shift,
            self.service.tv.window_segments,
            self._target,
            uri_prefix,
        )
        if text is None:
            raise web.HTTPNotFound(text=f"404: nothing recorded {shift_label(shift)} ago on channel {channel.number}\n")
        channel.stats.bytes_out += len(text)
        return web.Response(text=text, content_type=HLS_TYPE, headers=NO_CACHE)

    async def shift_stream(self, request: web.Request) -> web.StreamResponse:
        claims = claims_of(self.service, request)
        channel, recorder = self.recorded(request, claims)
        return await self.shifted_stream(request, claims, channel, recorder, int(request.match_info["seconds"]))

    async def shifted_stream(
        self, request: web.Request, claims: TokenClaims, channel: Channel, recorder: Recorder, seconds: int
    ) -> web.StreamResponse:
        cursor = ShiftCursor(self._shift(channel, seconds))
        step = cursor.step(recorder.window.segments, self.service.wall())
        if isinstance(step, NothingRecorded):
            raise web.HTTPNotFound(text=f"404: nothing recorded {shift_label(seconds)} ago\n")
        token = request.match_info["token"]
        response = web.StreamResponse(headers={"Content-Type": TS_TYPE, "Cache-Control": "no-store"})
        recorder.streams += 1
        try:
            await response.prepare(request)
            while self.service.running and not isinstance(step, NothingRecorded):
                if isinstance(step, SegmentDue):
                    found = recorder.path_of(step.segment.name)
                    if found is not None:
                        try:
                            data = await asyncio.to_thread(found[1].read_bytes)
                        except FileNotFoundError:
                            data = b""  # aged out while the viewer lagged: go on with the next
                        await response.write(data)
                        channel.stats.bytes_out += len(data)
                elif isinstance(step, WaitUntil):
                    delay = step.wall - self.service.wall()
                    if delay > 0:
                        await recorder.wait_recorded(min(delay, _TOKEN_CHECK_S))
                self.service.authorize(token)  # revoked or expired: the stream ends here
                step = cursor.step(recorder.window.segments, self.service.wall())
        except (ConnectionError, TokenRejected):
            pass
        finally:
            recorder.streams -= 1
        return response

    # -- catch-up -----------------------------------------------------------------------------

    async def catchup_playlist(self, request: web.Request) -> web.Response:
        claims = claims_of(self.service, request)
        channel, recorder = self.recorded(request, claims)
        start, stop = int(request.match_info["start"]), int(request.match_info["stop"])
        rng = select(recorder.window.segments, start, stop, self.service.wall())
        if rng is None:
            raise web.HTTPNotFound(text=f"404: {to_iso(start)} to {to_iso(stop)} is not in the recording\n")
        self._seen(recorder, claims, request)
        text = render_catchup(rng, self._target)
        channel.stats.bytes_out += len(text)
        return web.Response(text=text, content_type=HLS_TYPE, headers=NO_CACHE)

    # -- segments -----------------------------------------------------------------------------

    async def segment(self, request: web.Request) -> web.StreamResponse:
        claims = claims_of(self.service, request)
        channel, recorder = self.recorded(request, claims)
        name = request.match_info["segment"]
        found = recorder.path_of(name) if _SEGMENT.match(name) else None
        if found is None:
            raise web.HTTPNotFound(text="404: no such recorded segment\n")
        segment, path = found
        self._seen(recorder, claims, request)
        channel.stats.bytes_out += segment.size
        return web.FileResponse(path, headers={**SEGMENT_CACHE, "Content-Type": TS_TYPE})


# -- what lists and guides say about recordings ----------------------------------------------------


def archives_for(service: TvService, tenant: str, root: str) -> dict[int, Archive]:
    """The catch-up and time-shift entries of the tenant's recorded channels, for playlist.m3u."""
    out = {}
    for ch in service.lineup_for(tenant):
        if ch.record:
            source = f"{root}ch/{ch.number}/dvr/{{utc}}-{{utcend}}.m3u8"
            shifts = tuple(service.shifts_for(tenant, ch))
            out[ch.number] = Archive(service.tv.dvr_seconds(ch), source, shifts)
    return out


def catchup_marker(service: TvService, tenant: str) -> Callable[[Programme], str | None]:
    """For the guide: the programmes of recorded channels that play from their start."""
    recorded = {ch.epg_id: service.recorders[ch.number] for ch in service.lineup_for(tenant) if ch.record and ch.epg_id}
    now = service.wall()

    def mark(p: Programme) -> str | None:
        recorder = recorded.get(p.channel)
        if recorder is None or not available(recorder.window.segments, p.start, now):
            return None
        return f"{int(p.start)}-{int(p.stop)}"

    return mark


def dvr_listing(service: TvService, tenant: str, ch: ChannelConfig, guide: Guide | None) -> dict[str, Any] | None:
    """What the TV page shows of a recorded channel: its window, shifts and catch-up list."""
    recorder = service.recorders.get(ch.number)
    if recorder is None:
        return None
    window = recorder.window
    now = service.wall()
    programmes = []
    if guide is not None and ch.epg_id:
        for p in guide.programmes.get(ch.epg_id, []):
            if p.stop > p.start and available(window.segments, p.start, now):
                programmes.append(
                    {
                        "title": p.title,
                        "start": to_iso(p.start),
                        "stop": to_iso(p.stop),
                        "hls": f"ch/{ch.number}/dvr/{int(p.start)}-{int(p.stop)}.m3u8",
                    }
                )
    return {
        "recording": recorder.state.recording,
        "start": to_iso(window.start) if window.start is not None else None,
        "end": to_iso(window.end) if window.end is not None else None,
        "window_s": service.tv.dvr_seconds(ch),
        "shift_url": f"ch/{ch.number}/dvr/shift-{{seconds}}.m3u8",
        "shifts": [
            {"seconds": s, "label": shift_label(s), "hls": f"ch/{ch.number}/dvr/shift-{s}.m3u8"}
            for s in service.shifts_for(tenant, ch)
        ],
        "catchup": programmes,
    }
