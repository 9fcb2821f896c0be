"""Source readers: the thin asyncio layer that pulls a channel's bytes from the network.

Each reader is a coroutine that delivers MPEG-TS bytes to ``on_data`` until it is cancelled
or the source fails (it then returns or raises :class:`SourceFailed`). A channel runs one
reader at a time (plus a short-lived probe while recovering), so the head-end sees one
connection per channel however many people watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
from collections.abc import Callable

import aiohttp

from media.tv import TvError
from media.tv.config import SourceSpec
from media.tv.hlsparse import HlsPuller, MediaPlaylist, PlaylistError, parse_playlist, pick_variant
from media.tv.ts import strip_rtp

DataSink = Callable[[bytes], None]
# Told how long the source may normally stay silent (HLS: about a segment), in seconds.
SilenceHint = Callable[[float], None]

_USER_AGENT = "Seabridge-TV/1"
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=10)


class SourceFailed(TvError):
    """A source that cannot deliver (refused, ended, malformed)."""


async def read_source(spec: SourceSpec, on_data: DataSink, on_silence: SilenceHint | None = None) -> None:
    if spec.kind == "udp":
        await read_udp(spec, on_data)
    elif spec.kind == "http":
        await read_http_ts(spec, on_data)
    else:
        await read_hls(spec, on_data, on_silence=on_silence)


# -- UDP / RTP, unicast and multicast ----------------------------------------------------------


def open_udp_socket(spec: SourceSpec) -> socket.socket:
    host = spec.host or "0.0.0.0"
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # a large buffer rides out the ingest thread's pauses
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        if spec.multicast:
            # Bind the group address so other groups on the same port stay out.
            sock.bind((host, spec.port))
            _join(sock, spec, family)
        else:
            sock.bind((host, spec.port))
    except OSError as exc:
        sock.close()
        raise SourceFailed(f"cannot listen on {spec.describe()}: {exc.strerror or exc}") from None
    return sock


def _join(sock: socket.socket, spec: SourceSpec, family: int) -> None:
    group = ipaddress.ip_address(spec.host)
    if family == socket.AF_INET6:
        index = socket.if_nametoindex(spec.iface) if spec.iface else 0
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group.packed + struct.pack("@I", index))
        return
    iface_addr, index = _interface(spec.iface)
    if spec.source_addr:
        # struct ip_mreq_source: group, interface, source (Linux order).
        mreq = group.packed + iface_addr + ipaddress.ip_address(spec.source_addr).packed
        sock.setsockopt(socket.IPPROTO_IP, 39, mreq)  # IP_ADD_SOURCE_MEMBERSHIP
    elif index:
        # struct ip_mreqn: group, address, ifindex: joins on the named interface.
        mreqn = group.packed + bytes(4) + struct.pack("@i", index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, group.packed + iface_addr)


def _interface(iface: str) -> tuple[bytes, int]:
    """(local address, interface index) for an ``iface`` option that is a name or an address."""
    if not iface:
        return bytes(4), 0
    try:
        return ipaddress.IPv4Address(iface).packed, 0
    except ValueError:
        pass
    try:
        return bytes(4), socket.if_nametoindex(iface)
    except OSError:
        raise SourceFailed(f"no network interface {iface!r}") from None


async def read_udp(spec: SourceSpec, on_data: DataSink) -> None:
    loop = asyncio.get_running_loop()
    sock = open_udp_socket(spec)
    failed: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        # Drain until EAGAIN: one wake-up per datagram would cap us near 30k packets/s.
        batch = bytearray()
        try:
            while len(batch) < 1 << 20:
                data = sock.recv(65536)
                batch += strip_rtp(data)
        except BlockingIOError:
            pass
        except OSError as exc:
            if not failed.done():
                failed.set_exception(SourceFailed(f"{spec.describe()}: {exc.strerror or exc}"))
        if batch:
            on_data(bytes(batch))

    loop.add_reader(sock.fileno(), readable)
    try:
        await failed
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


# -- HTTP-TS ------------------------------------------------------------------------------------


def _session() -> aiohttp.ClientSession:
    # One connection at most: the head-end sees a single client per channel.
    connector = aiohttp.TCPConnector(limit=1, limit_per_host=1, enable_cleanup_closed=True)
    headers = {"User-Agent": _USER_AGENT}
    return aiohttp.ClientSession(connector=connector, timeout=_HTTP_TIMEOUT, headers=headers)


async def read_http_ts(spec: SourceSpec, on_data: DataSink) -> None:
    async with _session() as session:
        try:
            async with session.get(spec.url) as resp:
                if resp.status != 200:
                    raise SourceFailed(f"{spec.describe()}: HTTP {resp.status}")
                async for chunk in resp.content.iter_any():
                    on_data(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceFailed(f"{spec.describe()}: {exc or type(exc).__name__}") from None
    raise SourceFailed(f"{spec.describe()}: stream ended")


# -- HLS pull -------------------------------------------------------------------------------------


async def read_hls(
    spec: SourceSpec, on_data: DataSink, *, on_silence: SilenceHint | None = None, max_bandwidth: int = 0
) -> None:
    loop = asyncio.get_running_loop()
    puller = HlsPuller()
    url = spec.url
    failures = 0
    async with _session() as session:
        while True:
            try:
                playlist = await _fetch_playlist(session, url)
                if isinstance(playlist, tuple):
                    url = pick_variant(playlist, max_bandwidth).uri
                    continue
                if on_silence is not None:
                    # Segments land one at a time: a reload interval plus a fetch apart.
                    on_silence(2 * playlist.target_duration)
                plan = puller.on_playlist(playlist, loop.time())
                for ref in plan.fetch:
                    await _fetch_segment(session, ref.uri, on_data)
                failures = 0
                if playlist.ended and not plan.fetch:
                    raise SourceFailed(f"{spec.describe()}: the playlist ended")
                wait_until = plan.reload_at
            except (aiohttp.ClientError, TimeoutError, PlaylistError, SourceFailed) as exc:
                failures += 1
                if failures >= 3 or isinstance(exc, PlaylistError):
                    raise SourceFailed(f"{spec.describe()}: {exc or type(exc).__name__}") from None
                wait_until = puller.retry_at(loop.time())
            await asyncio.sleep(max(0.0, wait_until - loop.time()))


async def _fetch_playlist(session: aiohttp.ClientSession, url: str) -> MediaPlaylist | tuple:  # type: ignore[type-arg]
    async with session.get(url) as resp:
        if resp.status != 200:
            raise SourceFailed(f"playlist HTTP {resp.status}")
        text = await resp.text(errors="replace")
        return parse_playlist(text, str(resp.url))


async def _fetch_segment(session: aiohttp.ClientSession, url: str, on_data: DataSink) -> None:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise SourceFailed(f"segment HTTP {resp.status}")
        async for chunk in resp.content.iter_any():
            on_data(chunk)
