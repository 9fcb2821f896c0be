"""The ingest thread of one channel: demux (PyAV), gate, rebase, remux, segment, write.

It reads MPEG-TS from a :class:`BytePipe` the event loop fills, and produces one continuous
MPEG-TS stream through a muxer that lives as long as the channel runs: when the loop
switches source it closes the old pipe and attaches a new one, and the next demuxer's
packets are rebased onto the same timeline and muxed into the same stream, so players see
no restart. Segment files are written here (off the loop); the loop receives events in
batches through ``emit`` (called from this thread: wrap it in ``call_soon_threadsafe``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from media.tv.config import TranscodeProfile
from media.tv.pipe import BytePipe
from media.tv.rebase import ORIGIN, Rebaser, StartGate
from media.tv.segmenter import (
    DataProduced,
    RandomAccessReached,
    SegmentClosed,
    Segmenter,
    SegmenterEvent,
    SegmentOpened,
)
from media.tv.transcode import AudioTranscoder, VideoTranscoder
from media.tv.ts import adts_duration
from media.tv.window import Segment

log = logging.getLogger(__name__)

TB90K = Fraction(1, 90000)
_VIDEO, _AUDIO = 0, 1
STARTUP_SEGMENTS = 3  # what strict HLS players need listed before they start
_FLUSH_EVERY_S = 0.02  # batch events to the loop: at most ~50 wake-ups a second per channel


@dataclass(frozen=True)
class IngestOpened:
    feed: int  # the id given to attach()
    video: str  # codec names ("" when absent)
    audio: str
    width: int
    height: int


@dataclass(frozen=True)
class IngestEnded:
    feed: int
    reason: str


@dataclass(frozen=True)
class PacketsMuxed:
    feed: int
    packets: int


@dataclass(frozen=True)
class SegmentWritten:
    segment: Segment
    path: Path


@dataclass(frozen=True)
class SegmentDropped:
    """A segment file could not be written (disk full or failing): HLS players skip it,
    HTTP-TS viewers never notice (their data does not go through the disk)."""

    seq: int
    error: int  # errno
    reason: str


WorkerEvent = (
    IngestOpened | IngestEnded | PacketsMuxed | SegmentWritten | SegmentDropped | DataProduced | RandomAccessReached
)


@dataclass(frozen=True)
class IngestSettings:
    segment_s: float
    max_segment_s: float
    keyframe_wait_s: float
    max_timestamp_step_s: float
    profile: TranscodeProfile | None = None
    # Joining a live feed: stop probing as soon as the streams are known. Remuxing needs no
    # frame rate or decode-delay estimate (fpsprobesize 0), and the pictures' size arrives
    # in-band with the first keyframe anyway: this saves about a second of zapping.
    probe_bytes: int = 500_000
    analyze_us: int = 500_000


class _Writer:
    """The muxer's output file: hands every write to the segmenter."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink(bytes(data))
        return len(data)


class IngestWorker:
    def __init__(
        self,
        *,
        name: str,
        segment_dir: Path,
        session: str,
        settings: IngestSettings,
        emit: Callable[[list[WorkerEvent]], None],
        first_seq: int = 0,
        origin: int | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.segment_dir = segment_dir
        self.session = session
        self.settings = settings
        self._emit = emit
        self._wall = wall
        self._inbox: queue.SimpleQueue[tuple[BytePipe, int] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=f"tv-ingest-{name}", daemon=True)
        self._pipe_lock = threading.Lock()
        self._pipe: BytePipe | None = None
        self._stopping = False
        self.cpu_seconds = 0.0
        self.packets = 0
        # Owned by the thread from here on.
        # A restarted channel continues its clock and numbering, so a player that kept polling
        # sees a discontinuity, not time going backwards.
        self._origin = ORIGIN if origin is None else origin
        self._segmenter = Segmenter(
            settings.segment_s,
            settings.max_segment_s,
            first_seq=first_seq,
            discontinuity_first=origin is not None,
        )
        self._rebaser = Rebaser(max_step=int(settings.max_timestamp_step_s * 90000), origin=self._origin)
        self.timeline_end = self._origin  # readable after join()
        self._mux: Any = None
        self._layout: tuple[str, str] | None = None
        self._out: dict[int, Any] = {}
        self._vx: VideoTranscoder | None = None
        self._ax: AudioTranscoder | None = None
        self._events: list[WorkerEvent] = []
        self._last_flush = 0.0
        self._file: IO[bytes] | None = None
        self._file_path: Path | None = None
        self._opened: SegmentOpened | None = None
        self._opened_wall = 0.0
        self._size = 0
        self._muxed = 0
        self._feed = -1

    # -- loop side ----------------------------------------------------------------------------

    def start(self) -> None:
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def attach(self, pipe: BytePipe, feed: int) -> None:
        """Demux from ``pipe`` next (after the current pipe, which the caller closes, ends).

        ``feed`` tags the events of this attachment, so the loop can tell a stale session
        from the current one even when the same source is re-attached."""
        self._inbox.put((pipe, feed))

    def stop(self) -> None:
        self._stopping = True
        with self._pipe_lock:
            if self._pipe is not None:
                self._pipe.close()
        self._inbox.put(None)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                item = self._inbox.get()
                if item is None or self._stopping:
                    break
                pipe, feed = item
                with self._pipe_lock:
                    self._pipe = pipe
                if not pipe.exhausted:
                    reason = self._session(pipe, feed)
                    self._events.append(IngestEnded(feed, reason))
                    self._flush(force=True)
                with self._pipe_lock:
                    self._pipe = None
        except Exception:  # a bug must not leave a zombie channel: report and end
            log.exception("tv channel %s: ingest thread failed", self.name)
            self._events.append(IngestEnded(self._feed, "internal error"))
        finally:
            self._finish()
            self.cpu_seconds = time.thread_time()
            self._flush(force=True)

    def _session(self, pipe: BytePipe, feed: int) -> str:
        self._feed = feed
        try:
            container = av.open(
                pipe,
                format="mpegts",
                options={
                    "probesize": str(self.settings.probe_bytes),
                    "analyzeduration": str(self.settings.analyze_us),
                    "fpsprobesize": "0",
                },
            )
        except (av.FFmpegError, OSError, ValueError) as exc:
            return f"cannot open the stream: {exc}"
        try:
            return self._demux(container, feed)
        finally:
            container.close()

    def _demux(self, container: Any, feed: int) -> str:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            return "no audio or video in the stream"
        self._events.append(
            IngestOpened(
                feed,
                video.codec_context.name if video is not None else "",
                audio.codec_context.name if audio is not None else "",
                int(video.codec_context.width or 0) if video is not None else 0,
                int(video.codec_context.height or 0) if video is not None else 0,
            )
        )
        self._prepare_output(video, audio)
        gate = StartGate(int(self.settings.keyframe_wait_s * 90000), has_video=video is not None)
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(streams):
                if packet.size == 0:
                    continue
                kind = _VIDEO if packet.stream is video else _AUDIO
                self._packet(packet, kind, gate)
                if self._stopping:
                    return "stopped"
        except (av.FFmpegError, OSError, ValueError) as exc:
            return f"demux error: {exc}"
        return "end of stream"

    def _prepare_output(self, video: Any, audio: Any) -> None:
        layout = (
            video.codec_context.name if video is not None else "",
            audio.codec_context.name if audio is not None else "",
        )
        if self._mux is not None and layout != self._layout:
            # A different stream layout cannot continue the same TS: start a new one (the
            # playlist marks a discontinuity; HTTP-TS players see new tables).
            self._close_mux()
            self._handle(self._segmenter.restart())
        if self._mux is None:
            self._open_mux(video, audio)
            self._layout = layout
            self._rebaser = Rebaser(max_step=self._rebaser.max_step, origin=self._rebaser.end)
            for kind, stream in ((_VIDEO, video), (_AUDIO, audio)):
                if stream is not None:
                    self._rebaser.add_stream(kind, is_video=kind == _VIDEO)
        else:
            self._rebaser.new_timeline()
        if self._vx is not None and video is not None:
            self._vx.new_input(video)
        if self._ax is not None and audio is not None:
            self._ax.new_input(audio)

    def _open_mux(self, video: Any, audio: Any) -> None:
        # max_delay: PCR leads DTS by 0.7 s (as the ffmpeg command line does), which is what
        # receivers buffer by; without it they see audio "later than PCR" and add delay.
        self._mux = av.open(
            _Writer(self._on_output),
            mode="w",
            format="mpegts",
            buffer_size=188 * 56,
            container_options={"max_delay": "700000"},
        )
        profile = self.settings.profile
        self._out = {}
        self._vx = self._ax = None
        if video is not None:
            if profile is not None:
                self._vx = VideoTranscoder(profile, self._mux, video.average_rate or video.guessed_rate)
                self._out[_VIDEO] = self._vx.stream
            else:
                self._out[_VIDEO] = self._mux.add_stream_from_template(video)
        if audio is not None:
            if profile is not None and profile.audio_kbps:
                self._ax = AudioTranscoder(profile.audio_kbps, self._mux)
                self._out[_AUDIO] = self._ax.stream
            else:
                self._out[_AUDIO] = self._mux.add_stream_from_template(audio)

    def _packet(self, packet: Any, kind: int, gate: StartGate) -> None:
        tb = packet.time_base or TB90K
        dts = _to90k(packet.dts, tb)
        pts = _to90k(packet.pts, tb)
        first = dts if dts is not None else pts
        if not gate.admit(is_video=kind == _VIDEO, keyframe=packet.is_keyframe, dts=first):
            return
        duration = _to90k(packet.duration, tb) or 0
        if not duration and kind == _AUDIO:
            duration = self._audio_duration(packet)
        times = self._rebaser.rebase(kind, dts, pts, duration)
        if times is None:
            return
        packet.dts = times.dts
        packet.pts = times.pts
        packet.time_base = TB90K
        transcoder = self._vx if kind == _VIDEO else self._ax
        try:
            if transcoder is not None:
                for out in transcoder.transcode(packet):
                    self._mux.mux(out)
            else:
                packet.stream = self._out[kind]
                packet.time_base = TB90K
                self._mux.mux(packet)
        except (av.FFmpegError, ValueError) as exc:
            log.debug("tv channel %s: dropped a packet the muxer refused: %s", self.name, exc)
            return
        self._muxed += 1
        self.packets += 1
        now = time.monotonic()
        if now - self._last_flush >= _FLUSH_EVERY_S:
            self._events.append(PacketsMuxed(self._feed, self._muxed))
            self._muxed = 0
            self.cpu_seconds = time.thread_time()
            self._flush(force=True)

    def _audio_duration(self, packet: Any) -> int:
        """A frame's duration when the demuxer, still probing, did not give one."""
        ctx = packet.stream.codec_context
        if ctx.frame_size and ctx.sample_rate:
            return int(ctx.frame_size * 90000 // ctx.sample_rate)
        return adts_duration(bytes(packet)[:7]) or 0

    # -- output -------------------------------------------------------------------------------

    def _on_output(self, data: bytes) -> None:
        self._handle(self._segmenter.feed(data, time.monotonic()))

    def _handle(self, events: list[SegmenterEvent]) -> None:
        for e in events:
            if isinstance(e, DataProduced):
                if self._file is not None:
                    try:
                        self._file.write(e.data)
                        self._size += len(e.data)
                    except OSError as exc:
                        self._drop_file(exc)
                self._events.append(e)
            elif isinstance(e, SegmentOpened):
                self._open_file(e)
            elif isinstance(e, SegmentClosed):
                self._close_file(e)
            else:
                self._events.append(e)

    def _open_file(self, opened: SegmentOpened) -> None:
        name = f"{self.session}-{opened.seq}.ts"
        self._file_path = self.segment_dir / name
        self._opened = opened
        self._opened_wall = self._wall()
        self._size = 0
        try:
            self._file = open(self.segment_dir / f"{name}.part", "wb")  # noqa: SIM115 (closed in _close_file)
        except OSError as exc:
            self._drop_file(exc)

    def _drop_file(self, exc: OSError) -> None:
        """The disk refused the segment: drop it; the stream itself goes on."""
        seq = self._opened.seq if self._opened is not None else -1
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._file_path is not None:
            with contextlib.suppress(OSError):
                self._file_path.with_name(self._file_path.name + ".part").unlink(missing_ok=True)
        self._file = None
        self._opened = None
        log.debug("tv channel %s: segment %d not written: %s", self.name, seq, exc)
        self._events.append(SegmentDropped(seq, exc.errno or 0, exc.strerror or str(exc)))

    def _close_file(self, closed: SegmentClosed) -> None:
        if self._file is None or self._file_path is None or self._opened is None:
            return
        part = self._file_path.with_name(self._file_path.name + ".part")
        try:
            self._file.close()
            os.replace(part, self._file_path)
        except OSError as exc:
            self._drop_file(exc)
            return
        segment = Segment(
            seq=closed.seq,
            name=self._file_path.name,
            duration=closed.duration,
            wall_start=self._opened_wall,
            size=self._size,
            discontinuity=self._opened.discontinuity,
        )
        self._events.append(SegmentWritten(segment, self._file_path))
        self._file = None
        self._opened = None

    def _flush(self, force: bool = False) -> None:
        if self._events and (force or time.monotonic() - self._last_flush >= _FLUSH_EVERY_S):
            events, self._events = self._events, []
            self._last_flush = time.monotonic()
            self._emit(events)

    def _close_mux(self) -> None:
        if self._mux is None:
            return
        try:
            for transcoder in (self._vx, self._ax):
                if transcoder is not None:
                    for out in transcoder.flush():
                        self._mux.mux(out)
            self._mux.close()
        except (av.FFmpegError, ValueError) as exc:
            log.debug("tv channel %s: closing the muxer: %s", self.name, exc)
        self._mux = None

    def _finish(self) -> None:
        self.timeline_end = self._rebaser.end + 90000  # a second of margin past the last packet
        self._close_mux()
        self._handle(self._segmenter.close())
        if self._file is not None:  # a segment with no end: drop it, it never got listed
            with contextlib.suppress(OSError):
                self._file.close()
                if self._file_path is not None:
                    self._file_path.with_name(self._file_path.name + ".part").unlink(missing_ok=True)
            self._file = None


def _to90k(value: int | None, tb: Fraction) -> int | None:
    if value is None:
        return None
    if tb == TB90K:
        return int(value)
    return int(value * tb.numerator * 90000 // tb.denominator)
