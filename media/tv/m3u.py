"""The extended M3U channel list set-top players read (tvg-* attributes, group-title).

Recorded channels carry the catch-up attributes Kodi (IPTV Simple), TiviMate and OTT
players understand, in the "default" convention: ``catchup-source`` is the full URL of
the catch-up playlist with the programme's start and end as ``{utc}`` and ``{utcend}``
(UTC seconds), which the player fills in from the guide. Time-shifted entries follow their
channel ("CCTV-1 (+7h)"), with ``tvg-shift`` so players move the guide along with them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from media.tv.config import ChannelConfig
from media.tv.timeshift import shift_label


@dataclass(frozen=True)
class Archive:
    """What a recorded channel offers one tenant."""

    window_s: float
    catchup_source: str  # URL with {utc} and {utcend}
    shifts: tuple[int, ...] = ()  # seconds behind live, one entry each

    @property
    def days(self) -> int:
        return max(1, math.ceil(self.window_s / 86400))


def _attr(value: str) -> str:
    # Players split attributes on double quotes and lines on newlines: neither may appear.
    return value.replace('"', "'").replace("\r", " ").replace("\n", " ")


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:.4f}".rstrip("0").rstrip(".")


def render_m3u(
    channels: Iterable[ChannelConfig],
    media_url: str,
    epg_url: str,
    archives: Mapping[int, Archive] | None = None,
    shift_url: str = "",
) -> str:
    """``media_url`` is a format string with ``{number}``, e.g. ".../ch/{number}/index.m3u8";
    ``shift_url`` one with ``{number}`` and ``{seconds}`` for the time-shifted entries."""
    archives = archives or {}
    lines = [f'#EXTM3U x-tvg-url="{_attr(epg_url)}" url-tvg="{_attr(epg_url)}"']
    for ch in sorted(channels, key=lambda c: c.number):
        archive = archives.get(ch.number)
        attrs = _tvg(ch, ch.name)
        attrs.append(f'tvg-chno="{ch.number}"')
        if ch.group:
            attrs.append(f'group-title="{_attr(ch.group)}"')
        if archive is not None:
            attrs.append('catchup="default"')
            attrs.append(f'catchup-days="{archive.days}"')
            attrs.append(f'catchup-source="{_attr(archive.catchup_source)}"')
        lines.append(f"#EXTINF:-1 {' '.join(attrs)},{_title(ch.name)}")
        lines.append(media_url.format(number=ch.number))
        if archive is None or not shift_url:
            continue
        for seconds in archive.shifts:
            name = f"{ch.name} ({shift_label(seconds)})"
            attrs = _tvg(ch, name)
            attrs.append(f'tvg-shift="{_hours(seconds)}"')
            if ch.group:
                attrs.append(f'group-title="{_attr(ch.group)}"')
            lines.append(f"#EXTINF:-1 {' '.join(attrs)},{_title(name)}")
            lines.append(shift_url.format(number=ch.number, seconds=seconds))
    return "\n".join(lines) + "\n"


def _tvg(ch: ChannelConfig, name: str) -> list[str]:
    attrs = []
    if ch.epg_id:
        attrs.append(f'tvg-id="{_attr(ch.epg_id)}"')
    attrs.append(f'tvg-name="{_attr(name)}"')
    if ch.logo:
        attrs.append(f'tvg-logo="{_attr(ch.logo)}"')
    return attrs


def _title(name: str) -> str:
    return name.replace("\r", " ").replace("\n", " ")
