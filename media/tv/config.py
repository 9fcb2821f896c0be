"""The ``[tv]`` configuration section: channel lineup, transcode profiles, segmenting and timers.

Sources are written as URLs, in priority order::

    udp://239.1.1.1:5000?iface=eth1      multicast MPEG-TS (raw or RTP, detected per datagram)
    udp://@:5000                         unicast MPEG-TS to this host, any local address
    rtp://239.1.1.1:5004?source=10.0.0.5 source-specific multicast
    http://hq.example/ch1.ts             HTTP-TS pull (udpxy-style)
    http://hq.example/ch1/index.m3u8     HLS pull (by the .m3u8 suffix, or hls+http://)
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from gateway.configschema import InvalidField, bounds

__all__ = ["ChannelConfig", "DvrConfig", "SourceSpec", "TranscodeProfile", "TvConfig", "parse_source"]

SourceKind = Literal["udp", "http", "hls"]
_TENANT = re.compile(r"^(\*|[A-Za-z0-9]([A-Za-z0-9.-]{0,250}))$")


@dataclass(frozen=True)
class SourceSpec:
    """One parsed source URL."""

    kind: SourceKind
    url: str  # what HTTP sources fetch (scheme hls+ removed)
    host: str = ""  # UDP: group or unicast address to bind ("" = any)
    port: int = 0
    iface: str = ""  # UDP multicast: interface name or local address to join on
    source_addr: str = ""  # UDP source-specific multicast: the sender

    @property
    def multicast(self) -> bool:
        return bool(self.host) and ipaddress.ip_address(self.host).is_multicast

    def describe(self) -> str:
        """The URL without credentials, for logs and status."""
        parts = urlsplit(self.url)
        if parts.username or parts.password:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return parts._replace(netloc=netloc).geturl()
        return self.url


def parse_source(url: str) -> SourceSpec:
    """Parse a source URL, raising ValueError with a reason."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("udp", "rtp"):
        return _parse_udp(url, parts.netloc, parts.query)
    if scheme in ("hls+http", "hls+https"):
        return SourceSpec(kind="hls", url=url[4:])
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"{url!r} has no host")
        kind: SourceKind = "hls" if parts.path.lower().endswith((".m3u8", ".m3u")) else "http"
        return SourceSpec(kind=kind, url=url)
    raise ValueError(f"{url!r}: unsupported scheme (use udp://, rtp://, http://, https:// or hls+http://)")


def _parse_udp(url: str, netloc: str, query: str) -> SourceSpec:
    host, sep, port_text = netloc.lstrip("@").rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{url!r}: expected udp://[@]address:port")
    host = host.strip("[]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{url!r}: {host!r} is not an IP address") from None
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"iface", "source"}
    if unknown:
        raise ValueError(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))} (known: iface, source)")
    source_addr = options.get("source", "")
    if source_addr:
        ipaddress.ip_address(source_addr)
    return SourceSpec(
        kind="udp",
        url=url,
        host=host,
        port=int(port_text),
        iface=options.get("iface", ""),
        source_addr=source_addr,
    )


@dataclass(frozen=True)
class TranscodeProfile:
    """Re-encode video for thin links (H.264, libx264); audio is copied unless given a bitrate."""

    width: int = field(metadata=bounds(16, 7680))
    height: int = field(metadata=bounds(16, 4320))
    video_kbps: int = field(metadata=bounds(50, 50000))
    audio_kbps: int = field(default=0, metadata=bounds(0, 512))  # 0 copies the audio
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    gop_s: float = field(default=2.0, metadata=bounds(0.2, 10.0))

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (4:2:0 video)")


@dataclass(frozen=True)
class ChannelConfig:
    number: int = field(metadata=bounds(1, 99999))
    name: str
    sources: tuple[str, ...]
    # Tenants allowed to watch; "*" means every tenant. Empty: nobody (a safe default).
    tenants: tuple[str, ...]
    group: str = ""
    logo: str = ""
    epg_id: str = ""
    profile: str = ""  # a key of [tv.profiles]; empty = remux without re-encoding
    # Record the channel (time-shift and catch-up): it is then pulled all the time.
    record: bool = False
    # This channel's DVR window and byte cap; 0 takes [tv.dvr] window_hours / max_gb.
    dvr_hours: float = field(default=0.0, metadata=bounds(0.0, 720.0))
    dvr_max_gb: float = field(default=0.0, metadata=bounds(0.0, 100000.0))

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise InvalidField("name", "must not be empty")
        if not self.sources:
            raise InvalidField("sources", "a channel needs at least one source")
        for i, url in enumerate(self.sources):
            try:
                parse_source(url)
            except ValueError as exc:
                raise InvalidField(f"sources[{i}]", str(exc)) from None
        for i, tenant in enumerate(self.tenants):
            if not _TENANT.match(tenant):
                raise InvalidField(f"tenants[{i}]", f"{tenant!r} is not a tenant domain or '*'")

    @property
    def source_specs(self) -> tuple[SourceSpec, ...]:
        return tuple(parse_source(url) for url in self.sources)

    def allows(self, tenant: str) -> bool:
        return "*" in self.tenants or tenant.lower() in (t.lower() for t in self.tenants)


@dataclass(frozen=True)
class DvrConfig:
    """Recording of the channels marked ``record = true``: time-shift and catch-up."""

    # Where recordings live; empty: data_dir/tv/dvr. A disk of its own is best: a full DVR
    # disk then cannot starve the gateway's database (see min_free_mb either way).
    dir: str = ""
    # How far back a recorded channel can be watched, and its size cap (per channel; the
    # oldest segments go first when either is reached).
    window_hours: float = field(default=8.0, metadata=bounds(0.001, 720.0))
    max_gb: float = field(default=20.0, metadata=bounds(0.0001, 100000.0))
    # Recording stops (with a status, a metric and a log line) while the disk has less free
    # space than this, and resumes by itself when space returns. Live TV keeps playing.
    min_free_mb: float = field(default=1024.0, metadata=bounds(0.0, 10_000_000.0))
    # After a write error (a failing or read-only disk), try again after this long.
    retry_s: float = field(default=30.0, metadata=bounds(0.1, 3600.0))
    # Time-shifted entries in the channel list ("CCTV-1 (+7h)"), in hours behind live, for
    # every recorded channel. Absent: one entry at the tenant's offset from the site (the
    # tenant's timezone minus tv.site_timezone), when that is positive. [] turns them off.
    timeshift_hours: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.timeshift_hours is not None:
            for i, hours in enumerate(self.timeshift_hours):
                if not 0 < hours < self.window_hours:
                    raise InvalidField(
                        "timeshift_hours",
                        f"entry {i} ({hours}) must be above 0 and below window_hours ({self.window_hours})",
                    )
            if len(set(self.timeshift_hours)) != len(self.timeshift_hours):
                raise InvalidField("timeshift_hours", "lists the same shift twice")

    @property
    def max_bytes(self) -> int:
        return int(self.max_gb * 1e9)

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 1e6)


@dataclass(frozen=True)
class TvConfig:
    enabled: bool = False
    # Where set-top boxes, phones and browsers on the site's LAN fetch playlists and media. Plain
    # HTTP: set-top boxes rarely accept a self-signed certificate; the signed token in every URL
    # is the access control. The TV page is also served on the HTTPS port of the browser phone.
    http_bind: str = "0.0.0.0"
    http_port: int = field(default=8088, metadata=bounds(0, 65535))
    channels: tuple[ChannelConfig, ...] = ()
    profiles: Mapping[str, TranscodeProfile] = field(default_factory=lambda: MappingProxyType({}))
    # Channels pulled all the time (by number); the rest only while someone watches, and for
    # idle_timeout_s after (never less than three HLS target durations: players go quiet
    # while their buffer is full).
    always_on: tuple[int, ...] = ()
    idle_timeout_s: float = field(default=30.0, metadata=bounds(1.0, 86400.0))
    # HLS: cut at the first keyframe after segment_s; cut anyway at max_segment_s
    # (feeds with missing keyframes). EXT-X-TARGETDURATION is ceil(max_segment_s).
    segment_s: float = field(default=2.0, metadata=bounds(0.5, 10.0))
    max_segment_s: float = field(default=4.0, metadata=bounds(1.0, 30.0))
    window_segments: int = field(default=6, metadata=bounds(3, 100))
    # Segments kept on disk behind the window, for players that lag.
    keep_extra_segments: int = field(default=4, metadata=bounds(0, 1000))
    # Failover: no output for stall_s (start_timeout_s right after a switch) fails a source;
    # while on a backup, the better sources are probed every retry_primary_s.
    stall_s: float = field(default=4.0, metadata=bounds(0.5, 120.0))
    start_timeout_s: float = field(default=10.0, metadata=bounds(1.0, 300.0))
    retry_primary_s: float = field(default=30.0, metadata=bounds(1.0, 86400.0))
    # Joining mid-stream: wait this long (media time) for a keyframe, then start anyway.
    keyframe_wait_s: float = field(default=5.0, metadata=bounds(0.0, 60.0))
    # A source timestamp step larger than this (either way) is a jump, not jitter.
    max_timestamp_step_s: float = field(default=1.0, metadata=bounds(0.1, 60.0))
    # XMLTV guide: a file path or an http(s) URL; refreshed every epg_refresh_s.
    epg_source: str = ""
    epg_refresh_s: int = field(default=3600, metadata=bounds(60, 604800))
    token_days: int = field(default=30, metadata=bounds(1, 3650))
    # An HTTP-TS viewer further behind than this is disconnected (it will reconnect).
    viewer_backlog_kb: int = field(default=4096, metadata=bounds(64, 1048576))
    # Absolute URL prefix for links in playlist.m3u (e.g. "https://tv.site.example");
    # empty: built from each request's Host header.
    base_url: str = ""
    # The site's IANA time zone (e.g. "Africa/Kinshasa"); empty: this machine's local zone.
    # The default time shift is each tenant's zone (HQ, [[tenants]] timezone) minus this.
    site_timezone: str = ""
    dvr: DvrConfig = field(default_factory=DvrConfig)

    def __post_init__(self) -> None:
        numbers: set[int] = set()
        for channel in self.channels:
            if channel.number in numbers:
                raise InvalidField("channels", f"channel number {channel.number} is used twice")
            numbers.add(channel.number)
            if channel.profile and channel.profile not in self.profiles:
                raise InvalidField("channels", f"channel {channel.number} names unknown profile {channel.profile!r}")
        for number in self.always_on:
            if number not in numbers:
                raise InvalidField("always_on", f"no channel number {number} in the lineup")
        if self.max_segment_s < self.segment_s:
            raise InvalidField("max_segment_s", "must not be below segment_s")
        if self.base_url and not re.match(r"^https?://[^/]+", self.base_url):
            raise InvalidField("base_url", "must be an absolute http(s) URL")
        if self.epg_source.startswith(("http:", "https:")) and not urlsplit(self.epg_source).hostname:
            raise InvalidField("epg_source", "URL has no host")
        if self.site_timezone:
            _check_zone("site_timezone", self.site_timezone)
        for channel in self.channels:
            if channel.record and self.dvr_seconds(channel) < 3 * self.max_segment_s:
                raise InvalidField("channels", f"channel {channel.number}: the DVR window must hold 3 segments")

    def dvr_seconds(self, channel: ChannelConfig) -> float:
        """How far back ``channel`` can be watched (its DVR window)."""
        return 3600.0 * (channel.dvr_hours or self.dvr.window_hours)

    def dvr_max_bytes(self, channel: ChannelConfig) -> int:
        return int(channel.dvr_max_gb * 1e9) if channel.dvr_max_gb else self.dvr.max_bytes

    @property
    def recorded(self) -> tuple[ChannelConfig, ...]:
        return tuple(ch for ch in self.channels if ch.record)

    def pulled_always(self, channel: ChannelConfig) -> bool:
        """Recorded channels are pulled all the time, like the always-on ones."""
        return channel.record or channel.number in self.always_on

    def channel(self, number: int) -> ChannelConfig | None:
        for channel in self.channels:
            if channel.number == number:
                return channel
        return None


def _check_zone(key: str, name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidField(key, f"unknown IANA time zone {name!r}") from None
