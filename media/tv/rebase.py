"""Timestamp rebasing: whatever a feed does to its clock, the output timeline only moves forward.

Feeds jump (splices, encoder restarts), wrap (33-bit PTS every 26.5 hours) and change
(failover to another source). The output must stay monotonic and continuous so that
players never see a jump. All times are integers in the 90 kHz MPEG clock.

Each stream keeps an offset (output = input + offset). A step in ``(0, max_step]``
is normal (a stream's DTS never stands still or goes back); a step that is normal modulo 2**33 is a wrap and
adjusts the offset by exactly 2**33 (A/V sync kept exactly); anything else is a jump.
The first stream to jump anchors a new *epoch* right after its own last output; the other
streams adopt the epoch's offset when they jump too, which keeps audio and video in the
relative position the feed gave them. Audio that would overlap the past is dropped
rather than shifted; video is nudged by one tick instead (dropping it would break decoding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media.tv.ts import PTS_WRAP, TS_CLOCK

ORIGIN = TS_CLOCK  # the first output timestamp: one second of headroom for early packets


@dataclass(frozen=True)
class Rebased:
    dts: int
    pts: int


@dataclass
class _Stream:
    is_video: bool
    offset: int = 0
    epoch: int = -1
    last_in: int | None = None
    last_out: int | None = None
    end: int = 0
    duration: int = 0
    reanchor: bool = False


@dataclass
class Rebaser:
    max_step: int  # a forward step above this is a jump (90 kHz ticks)
    origin: int = ORIGIN  # where the output starts (a restarted channel continues its old clock)
    jumps: int = 0
    wraps: int = 0
    dropped: int = 0
    nudged: int = 0
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _epoch: int = 0
    _epoch_offset: int | None = None

    def add_stream(self, index: int, *, is_video: bool) -> None:
        self._streams[index] = _Stream(is_video=is_video)

    def new_timeline(self) -> None:
        """The next packets come from another source: continue right after what was output."""
        for s in self._streams.values():
            s.reanchor = True
        self._epoch_offset = None

    @property
    def end(self) -> int:
        """The output time just after the last packet of any stream."""
        return max((s.end for s in self._streams.values() if s.last_out is not None), default=self.origin)

    def rebase(self, index: int, dts: int | None, pts: int | None, duration: int) -> Rebased | None:
        """Output times for one packet, or None when the packet must be dropped."""
        s = self._streams[index]
        raw = dts if dts is not None else pts
        if raw is None:  # no timestamps at all: continue where the stream was
            out = s.end if s.last_out is not None else self.end
            return self._commit(s, None, out, out, duration)
        if s.last_in is not None and not s.reanchor:
            step = raw - s.last_in
            if self._normal(step):
                return self._place(s, raw, pts, duration)
            wrapped = (step + PTS_WRAP // 2) % PTS_WRAP - PTS_WRAP // 2
            if self._normal(wrapped):
                s.offset += wrapped - step
                self.wraps += 1
                return self._place(s, raw, pts, duration)
            self.jumps += 1
        self._anchor(s, raw)
        return self._place(s, raw, pts, duration)

    def _normal(self, step: int) -> bool:
        return 0 < step <= self.max_step

    def _anchor(self, s: _Stream, raw: int) -> None:
        if self._epoch_offset is not None and s.epoch < self._epoch:
            floor = s.last_out if s.last_out is not None else self.end - self.max_step
            if not s.is_video:
                floor -= self.max_step  # audio may overlap a little: the overlap is dropped
            # The other stream may sit on the other side of a 33-bit wrap.
            for offset in (self._epoch_offset, self._epoch_offset + PTS_WRAP, self._epoch_offset - PTS_WRAP):
                if floor < raw + offset <= self._ceiling(s):
                    s.offset, s.epoch, s.reanchor = offset, self._epoch, False
                    return
        start = s.end if s.last_out is not None else self.end
        s.offset = start - raw
        self._epoch += 1
        self._epoch_offset = s.offset
        s.epoch, s.reanchor = self._epoch, False

    def _ceiling(self, s: _Stream) -> int:
        return (s.end if s.last_out is not None else self.end) + self.max_step

    def _place(self, s: _Stream, raw: int, pts: int | None, duration: int) -> Rebased | None:
        out = raw + s.offset
        out_pts = out if pts is None else pts + s.offset
        if s.last_out is not None and out <= s.last_out:
            if not s.is_video:
                s.last_in = raw  # keep following the feed's clock, or the next packet looks like a jump
                self.dropped += 1
                return None
            shift = s.last_out + 1 - out
            out += shift
            out_pts += shift
            self.nudged += 1
        return self._commit(s, raw, out, out_pts, duration)

    def _commit(self, s: _Stream, raw: int | None, out: int, out_pts: int, duration: int) -> Rebased:
        if duration <= 0 and s.last_out is not None and out > s.last_out:
            duration = s.duration or out - s.last_out
        if duration > 0:
            s.duration = duration
        if raw is not None:
            s.last_in = raw
        elif s.last_in is not None:
            s.last_in += s.duration
        s.last_out = out
        s.end = out + s.duration
        return Rebased(dts=out, pts=max(out_pts, out))


@dataclass
class StartGate:
    """Join a feed mid-stream: hold everything until a video keyframe, then start together.

    Audio older than the first picture is dropped so both start at the same instant. A feed
    whose keyframes never come (or are never flagged) starts anyway after ``keyframe_wait``
    ticks of media, at a video packet.
    """

    keyframe_wait: int
    has_video: bool
    started: bool = False
    skipped: int = 0
    _first_seen: int | None = None
    _start: int | None = None

    def __post_init__(self) -> None:
        if not self.has_video:
            self.started = True

    def admit(self, *, is_video: bool, keyframe: bool, dts: int | None) -> bool:
        if not self.started:
            if is_video and dts is not None and self._first_seen is None:
                self._first_seen = dts
            waited = dts is not None and self._first_seen is not None and dts - self._first_seen >= self.keyframe_wait
            if is_video and (keyframe or waited):
                self.started = True
                self._start = dts
                return True
            self.skipped += 1
            return False
        if not is_video and self._start is not None and dts is not None and dts < self._start:
            self.skipped += 1
            return False
        return True
