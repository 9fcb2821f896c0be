"""The extended M3U channel list set-top players read (tvg-* attributes, group-title)."""

from __future__ import annotations

from collections.abc import Iterable

from media.tv.config import ChannelConfig


def _attr(value: str) -> str:
    # Players split attributes on double quotes and lines on newlines: neither may appear.
    return value.replace('"', "'").replace("\r", " ").replace("\n", " ")


def render_m3u(channels: Iterable[ChannelConfig], media_url: str, epg_url: str) -> str:
    """``media_url`` is a format string with ``{number}``, e.g. ".../ch/{number}/index.m3u8"."""
    lines = [f'#EXTM3U x-tvg-url="{_attr(epg_url)}" url-tvg="{_attr(epg_url)}"']
    for ch in sorted(channels, key=lambda c: c.number):
        attrs = []
        if ch.epg_id:
            attrs.append(f'tvg-id="{_attr(ch.epg_id)}"')
        attrs.append(f'tvg-name="{_attr(ch.name)}"')
        if ch.logo:
            attrs.append(f'tvg-logo="{_attr(ch.logo)}"')
        attrs.append(f'tvg-chno="{ch.number}"')
        if ch.group:
            attrs.append(f'group-title="{_attr(ch.group)}"')
        title = ch.name.replace("\r", " ").replace("\n", " ")
        lines.append(f"#EXTINF:-1 {' '.join(attrs)},{title}")
        lines.append(media_url.format(number=ch.number))
    return "\n".join(lines) + "\n"
