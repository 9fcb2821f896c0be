"""HLS pull sources without I/O: parse playlists (RFC 8216) and decide what to fetch and when.

Only MPEG-TS segments are relayed (the usual IPTV head-end output); a master playlist is
followed to its highest-bandwidth variant unless told otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urljoin

from media.tv import TvError


class PlaylistError(TvError):
    """A playlist we cannot use."""


@dataclass(frozen=True)
class SegmentRef:
    seq: int
    uri: str  # absolute
    duration: float
    discontinuity: bool = False


@dataclass(frozen=True)
class MediaPlaylist:
    target_duration: float
    media_sequence: int
    segments: tuple[SegmentRef, ...]
    ended: bool


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int


def _attributes(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.find("=", i)
        if eq < 0:
            break
        key = text[i:eq].strip()
        if eq + 1 < len(text) and text[eq + 1] == '"':
            close = text.find('"', eq + 2)
            close = len(text) if close < 0 else close
            attrs[key] = text[eq + 2 : close]
            i = close + 2
        else:
            comma = text.find(",", eq)
            comma = len(text) if comma < 0 else comma
            attrs[key] = text[eq + 1 : comma]
            i = comma + 1
    return attrs


def parse_playlist(text: str, base_url: str) -> MediaPlaylist | tuple[Variant, ...]:
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0].lstrip("\ufeff") != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U)")
    variants: list[Variant] = []
    segments: list[SegmentRef] = []
    target = 0.0
    sequence = 0
    ended = False
    duration: float | None = None
    discontinuity = False
    pending_variant: int | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending_variant = int(_attributes(line[18:]).get("BANDWIDTH", "0") or 0)
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line[22:])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line[22:])
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",", 1)[0])
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#EXT-X-KEY:") and "METHOD=NONE" not in line:
            raise PlaylistError("encrypted HLS sources are not supported")
        elif line.startswith("#EXT-X-MAP:"):
            raise PlaylistError("fragmented-MP4 HLS sources are not supported (MPEG-TS only)")
        elif line.startswith("#"):
            continue
        elif pending_variant is not None:
            variants.append(Variant(urljoin(base_url, line), pending_variant))
            pending_variant = None
        else:
            segments.append(
                SegmentRef(sequence + len(segments), urljoin(base_url, line), duration or target, discontinuity)
            )
            duration, discontinuity = None, False
    if variants:
        return tuple(variants)
    if target <= 0:
        raise PlaylistError("media playlist without #EXT-X-TARGETDURATION")
    return MediaPlaylist(target, sequence, tuple(segments), ended)


def pick_variant(variants: tuple[Variant, ...], max_bandwidth: int = 0) -> Variant:
    """The best variant under ``max_bandwidth`` (0 = no limit), else the leanest."""
    fitting = [v for v in variants if not max_bandwidth or v.bandwidth <= max_bandwidth]
    if fitting:
        return max(fitting, key=lambda v: v.bandwidth)
    return min(variants, key=lambda v: v.bandwidth)


@dataclass(frozen=True)
class PullPlan:
    fetch: tuple[SegmentRef, ...]
    reload_at: float  # monotonic time to fetch the playlist again
    skipped: int  # segments lost because we fell behind the window
    restarted: bool  # the source's sequence went backwards (its packager restarted)


@dataclass
class HlsPuller:
    """Follows a live media playlist: the segments to fetch next and the next reload time."""

    live_start: int = 2  # segments fetched from the live edge when joining
    _last_seq: int | None = None
    _last_uri: str = ""
    _target: float = 0.0
    skipped: int = field(default=0)

    def on_playlist(self, playlist: MediaPlaylist, now: float) -> PullPlan:
        segments = playlist.segments
        self._target = playlist.target_duration
        restarted = False
        skipped = 0
        if self._last_seq is None:
            new = segments[-self.live_start :] if self.live_start else segments[-1:]
        else:
            last_seq = self._last_seq
            if segments and (segments[-1].seq < last_seq or self._renumbered(segments)):
                restarted = True
                new = segments[-self.live_start :]
            else:
                new = tuple(s for s in segments if s.seq > last_seq)
                if new and new[0].seq > last_seq + 1:
                    skipped = new[0].seq - last_seq - 1
        if new:
            self._last_seq = new[-1].seq
            self._last_uri = new[-1].uri
        self.skipped += skipped
        # RFC 8216 6.3.4: reload after the target duration, half of it when nothing changed.
        wait = playlist.target_duration if new else playlist.target_duration / 2
        return PullPlan(tuple(new), now + max(0.1, wait), skipped, restarted)

    def _renumbered(self, segments: tuple[SegmentRef, ...]) -> bool:
        for s in segments:
            if s.seq == self._last_seq:
                return s.uri != self._last_uri
        return False

    def retry_at(self, now: float) -> float:
        """When to try again after a failed playlist fetch."""
        return now + max(0.5, self._target / 2 if self._target else 1.0)
