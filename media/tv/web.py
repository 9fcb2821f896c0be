"""HTTP routes of the TV service (aiohttp): M3U, XMLTV, HLS, HTTP-TS, the TV page, status.

Every viewer URL carries the tenant's token as a path element, because set-top players drop
query strings when they fetch segments::

    /iptv/<token>/                       the browser TV page
    /iptv/<token>/playlist.m3u           channel list, HLS URLs (playlist-ts.m3u: HTTP-TS URLs)
    /iptv/<token>/epg.xml                the guide, only the tenant's channels
    /iptv/<token>/channels.json          lineup with now/next, for the page
    /iptv/<token>/ch/<n>/index.m3u8      live HLS playlist (first answer once 3 segments exist)
    /iptv/<token>/ch/<n>/quick.m3u8      the same, first answer on 1 segment (hls.js, VLC)
    /iptv/<token>/ch/<n>.ts              continuous MPEG-TS (HTTP-TS, udpxy style)
    /iptv/<token>/ch/<n>/dvr/...         time-shift and catch-up of recorded channels (dvrweb)
    /iptv/static/<file>                  page assets (no secrets)
    /api/tv/status                       per-channel status (add_tv_status_route, admin only)
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from aiohttp import web

from media.tv.channel import Channel
from media.tv.dvrweb import DvrHandlers, add_dvr_routes, archives_for, catchup_marker, dvr_listing
from media.tv.epg import Programme, to_iso
from media.tv.m3u import render_m3u
from media.tv.service import TvService
from media.tv.tokens import TokenClaims
from media.tv.webcommon import (
    HLS_TYPE,
    M3U_TYPE,
    NO_CACHE,
    SEGMENT_CACHE,
    TS_TYPE,
    channel_of,
    claims_of,
    viewer_key,
)
from media.tv.worker import STARTUP_SEGMENTS

log = logging.getLogger(__name__)

TV_SERVICE: web.AppKey[TvService] = web.AppKey("tv_service", TvService)

STATIC_DIR = Path(__file__).parent / "static"
WEB_DIR = Path(__file__).parent / "web"
HLS_JS = WEB_DIR / "node_modules" / "hls.js" / "dist" / "hls.min.js"
_STATIC = {
    "tv.js": (STATIC_DIR / "tv.js", "text/javascript"),
    "tv.css": (STATIC_DIR / "tv.css", "text/css"),
    "hls.min.js": (HLS_JS, "text/javascript"),
}
_SEGMENT_NAME = re.compile(r"^[0-9a-f]{8}-\d{1,12}\.ts$")

__all__ = ["HLS_TYPE", "M3U_TYPE", "NO_CACHE", "SEGMENT_CACHE", "TS_TYPE", "TV_SERVICE", "add_tv_routes"]


def add_tv_routes(app: web.Application, service: TvService, *, prefix: str = "/iptv") -> None:
    """Mount the viewer routes on ``app`` (the service under the ``TV_SERVICE`` key)."""
    app[TV_SERVICE] = service
    dvr = add_dvr_routes(app, service, prefix)
    h = _Handlers(service, prefix, dvr)
    r = app.router
    r.add_get(f"{prefix}/static/{{name}}", h.static)
    r.add_get(f"{prefix}/{{token}}", h.page_redirect)
    r.add_get(f"{prefix}/{{token}}/", h.page)
    r.add_get(f"{prefix}/{{token}}/playlist.m3u", h.playlist_hls)
    r.add_get(f"{prefix}/{{token}}/playlist-ts.m3u", h.playlist_ts)
    r.add_get(f"{prefix}/{{token}}/epg.xml", h.epg)
    r.add_get(f"{prefix}/{{token}}/channels.json", h.channels_json)
    r.add_get(f"{prefix}/{{token}}/ch/{{number:\\d{{1,5}}}}/index.m3u8", h.hls_playlist)
    r.add_get(f"{prefix}/{{token}}/ch/{{number:\\d{{1,5}}}}/quick.m3u8", h.hls_playlist_quick)
    r.add_get(f"{prefix}/{{token}}/ch/{{number:\\d{{1,5}}}}/{{segment}}", h.hls_segment)
    r.add_get(f"{prefix}/{{token}}/ch/{{number:\\d{{1,5}}}}.ts", h.http_ts)


def add_tv_status_route(app: web.Application, service: TvService, path: str = "/api/tv/status") -> None:
    """Per-channel status as JSON. It shows source addresses and audiences: mount it only
    where the gateway's admin login guards it."""

    async def status(request: web.Request) -> web.Response:
        body = service.status()
        body["hls_player"] = hls_player_available()
        return web.json_response(body, headers=NO_CACHE)

    app.router.add_get(path, status)


def hls_player_available() -> bool:
    return HLS_JS.is_file()


class _Handlers:
    def __init__(self, service: TvService, prefix: str, dvr: DvrHandlers) -> None:
        self.service = service
        self.prefix = prefix
        self.dvr = dvr

    # -- helpers ------------------------------------------------------------------------------

    def _claims(self, request: web.Request) -> TokenClaims:
        return claims_of(self.service, request)

    def _channel(self, request: web.Request, claims: TokenClaims) -> Channel:
        return channel_of(self.service, request, claims)

    def _base(self, request: web.Request) -> str:
        return self.service.tv.base_url.rstrip("/") or f"{request.scheme}://{request.host}"

    @staticmethod
    def _viewer_key(claims: TokenClaims, request: web.Request) -> str:
        return viewer_key(claims, request)

    def _shift_from_query(self, request: web.Request) -> int | None:
        """Seconds behind live asked for by ``?utc=<UTC seconds>`` (the "shift" and "append"
        catch-up conventions), or None for live."""
        utc = request.query.get("utc")
        if utc is None:
            return None
        try:
            start = float(utc)
        except ValueError:
            raise web.HTTPBadRequest(text="400: utc must be UTC seconds\n") from None
        behind = int(self.service.wall() - start)
        return behind if behind >= 1 else None

    # -- lists --------------------------------------------------------------------------------

    async def playlist_hls(self, request: web.Request) -> web.Response:
        return self._m3u(request, "ch/{number}/index.m3u8")

    async def playlist_ts(self, request: web.Request) -> web.Response:
        return self._m3u(request, "ch/{number}.ts")

    def _m3u(self, request: web.Request, path: str) -> web.Response:
        claims = self._claims(request)
        root = f"{self._base(request)}{self.prefix}/{request.match_info['token']}/"
        shift_path = "ch/{number}/dvr/shift-{seconds}" + (".ts" if path.endswith(".ts") else ".m3u8")
        text = render_m3u(
            self.service.lineup_for(claims.tenant),
            root + path,
            root + "epg.xml",
            archives_for(self.service, claims.tenant, root),
            root + shift_path,
        )
        return web.Response(text=text, content_type=M3U_TYPE, charset="utf-8", headers=NO_CACHE)

    async def epg(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        guide = self.service.guide
        if guide is None:
            raise web.HTTPServiceUnavailable(text="503: no guide loaded\n", headers={"Retry-After": "60"})
        ids = [ch.epg_id for ch in self.service.lineup_for(claims.tenant)]
        body = guide.filtered_xml(ids, catchup_marker(self.service, claims.tenant))
        return web.Response(
            body=body,
            content_type="application/xml",
            charset="utf-8",
            headers={"Cache-Control": "private, max-age=300"},
        )

    async def channels_json(self, request: web.Request) -> web.Response:
        claims = self._claims(request)
        guide = self.service.guide
        now = self.service.wall()
        items = []
        for ch in self.service.lineup_for(claims.tenant):
            current = upcoming = None
            if guide is not None and ch.epg_id:
                current, upcoming = guide.now_next(ch.epg_id, now)
            items.append(
                {
                    "number": ch.number,
                    "name": ch.name,
                    "group": ch.group,
                    "logo": ch.logo,
                    "hls": f"ch/{ch.number}/index.m3u8",
                    "hls_quick": f"ch/{ch.number}/quick.m3u8",
                    "ts": f"ch/{ch.number}.ts",
                    "now": _programme(current),
                    "next": _programme(upcoming),
                    "dvr": dvr_listing(self.service, claims.tenant, ch, guide),
                }
            )
        body = json.dumps({"tenant": claims.tenant, "expires": claims.expires, "channels": items})
        return web.Response(text=body, content_type="application/json", headers=NO_CACHE)

    # -- HLS ----------------------------------------------------------------------------------

    async def hls_playlist(self, request: web.Request) -> web.Response:
        return await self._hls_playlist(request, STARTUP_SEGMENTS)

    async def hls_playlist_quick(self, request: web.Request) -> web.Response:
        # For players that start on a single segment (hls.js, VLC, ffmpeg): a channel that
        # was idle answers two keyframe intervals sooner.
        return await self._hls_playlist(request, 1)

    async def _hls_playlist(self, request: web.Request, segments: int) -> web.Response:
        claims = self._claims(request)
        channel = self._channel(request, claims)
        shift = self._shift_from_query(request)
        if shift is not None:
            recorder = self.dvr.recorded(request, claims)[1]
            return self.dvr.shifted_playlist(request, claims, channel, recorder, shift, "dvr/")
        channel.touch(self._viewer_key(claims, request))
        await channel.ensure_running()
        wait = self.service.tv.start_timeout_s + (segments + 1) * self.service.tv.max_segment_s
        if not await channel.wait_ready(wait, segments):
            raise web.HTTPServiceUnavailable(text="503: the channel is not available\n", headers={"Retry-After": "2"})
        text = channel.window.render()
        channel.stats.bytes_out += len(text)
        return web.Response(text=text, content_type=HLS_TYPE, headers=NO_CACHE)

    async def hls_segment(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        channel = self._channel(request, claims)
        name = request.match_info["segment"]
        if not _SEGMENT_NAME.match(name):
            raise web.HTTPNotFound(text="404: no such segment\n")
        channel.touch(self._viewer_key(claims, request))
        found = channel.segment(name)
        if found is None:
            raise web.HTTPNotFound(text="404: segment no longer available\n")
        segment, path = found
        channel.stats.bytes_out += segment.size
        response = web.FileResponse(path, headers={**SEGMENT_CACHE, "Content-Type": TS_TYPE})
        return response

    # -- HTTP-TS ------------------------------------------------------------------------------

    async def http_ts(self, request: web.Request) -> web.StreamResponse:
        claims = self._claims(request)
        channel = self._channel(request, claims)
        shift = self._shift_from_query(request)
        if shift is not None:
            recorder = self.dvr.recorded(request, claims)[1]
            return await self.dvr.shifted_stream(request, claims, channel, recorder, shift)
        await channel.ensure_running()
        viewer = channel.open_stream(claims.token_id, request.remote or "", claims.expires)
        response = web.StreamResponse(headers={"Content-Type": TS_TYPE, "Cache-Control": "no-store"})
        try:
            await response.prepare(request)
            while True:
                data = await viewer.next_data()
                if not data:
                    break
                await response.write(data)
                viewer.bytes_out += len(data)
                channel.stats.bytes_out += len(data)
        except ConnectionError:
            pass  # the viewer went away
        finally:
            channel.close_stream(viewer)
        return response

    # -- page, assets, status -----------------------------------------------------------------

    async def page_redirect(self, request: web.Request) -> web.Response:
        self._claims(request)
        raise web.HTTPFound(f"{self.prefix}/{request.match_info['token']}/")

    async def page(self, request: web.Request) -> web.FileResponse:
        self._claims(request)
        return web.FileResponse(
            STATIC_DIR / "tv.html", headers={**NO_CACHE, "Content-Type": "text/html; charset=utf-8"}
        )

    async def static(self, request: web.Request) -> web.FileResponse:
        entry = _STATIC.get(request.match_info["name"])
        if entry is None or not entry[0].is_file():
            raise web.HTTPNotFound(text="404: no such file\n")
        path, content_type = entry
        return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "max-age=3600"})


def _programme(p: Programme | None) -> dict[str, object] | None:
    if p is None:
        return None
    return {"title": p.title, "description": p.description, "start": to_iso(p.start), "stop": to_iso(p.stop)}
