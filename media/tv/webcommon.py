"""What the TV's HTTP handlers share: the token in the path, the tenant's channel, headers."""

from __future__ import annotations

from aiohttp import web

from media.tv.channel import Channel
from media.tv.service import ChannelForbidden, ChannelNotFound, TvService
from media.tv.tokens import TokenClaims, TokenRejected

NO_CACHE = {"Cache-Control": "no-cache"}
# Segment names are unique for a channel's lifetime: players may keep them.
SEGMENT_CACHE = {"Cache-Control": "private, max-age=3600, immutable"}
M3U_TYPE = "audio/x-mpegurl"
HLS_TYPE = "application/vnd.apple.mpegurl"
TS_TYPE = "video/mp2t"


def claims_of(service: TvService, request: web.Request) -> TokenClaims:
    """The claims of the token in the URL path, or 403."""
    try:
        return service.authorize(request.match_info["token"])
    except TokenRejected as exc:
        raise web.HTTPForbidden(text=f"403: {exc.reason}\n") from None


def channel_of(service: TvService, request: web.Request, claims: TokenClaims) -> Channel:
    """The channel numbered in the path, if the tenant may watch it (403) and it exists (404)."""
    try:
        return service.channel_for(claims, int(request.match_info["number"]))
    except ChannelForbidden as exc:
        raise web.HTTPForbidden(text=f"403: {exc}\n") from None
    except ChannelNotFound as exc:
        raise web.HTTPNotFound(text=f"404: {exc}\n") from None


def viewer_key(claims: TokenClaims, request: web.Request) -> str:
    return f"{claims.token_id}|{request.remote}|{request.headers.get('User-Agent', '')[:64]}"
