"""One channel at run time: its source readers, ingest thread, HLS window and HTTP-TS fan-out.

The decisions live in the cores (``SourceSelector``, ``Demand``, ``LiveWindow``); this
class feeds them events and ``now`` (the loop's monotonic clock), acts on what they return,
and keeps one timer armed at their next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.tv.config import ChannelConfig, SourceSpec, TvConfig
from media.tv.demand import Demand, ViewerTracker
from media.tv.failover import (
    ProbeStarted,
    ProbeStopped,
    SelectorAction,
    SourceSelector,
    SourceStarted,
    SourceStopped,
)
from media.tv.fanout import Fanout, Viewer
from media.tv.pipe import BytePipe
from media.tv.segmenter import DataProduced, RandomAccessReached
from media.tv.sources import SourceFailed, read_source
from media.tv.ts import PACKET_SIZE, TsFramer
from media.tv.window import LiveWindow, Segment
from media.tv.worker import (
    STARTUP_SEGMENTS,
    IngestEnded,
    IngestOpened,
    IngestSettings,
    IngestWorker,
    PacketsMuxed,
    SegmentDropped,
    SegmentWritten,
    WorkerEvent,
)

if TYPE_CHECKING:
    from media.tv.recorder import Recorder

log = logging.getLogger(__name__)

Reader = Callable[[SourceSpec, Callable[[bytes], None], Callable[[float], None]], Awaitable[None]]
_PROBE_PACKETS = 200  # aligned TS packets a probe must deliver before it is trusted


@dataclass(eq=False)
class _Feed:
    """One running source reader and the pipe it fills."""

    id: int
    index: int
    pipe: BytePipe
    probe: bool
    task: asyncio.Task[None] | None = None
    framer: TsFramer = field(default_factory=TsFramer)
    probe_packets: int = 0


@dataclass
class ChannelStats:
    bytes_in: int = 0
    bytes_out: int = 0
    switches: int = 0
    starts: int = 0
    segments: int = 0
    segment_errors: int = 0  # segments the disk refused (HTTP-TS viewers did not notice)
    cpu_seconds: float = 0.0  # of ingest threads that already ended
    cpu_percent: float = 0.0
    last_error: str = ""
    video: str = ""
    audio: str = ""
    width: int = 0
    height: int = 0


class Channel:
    def __init__(
        self,
        config: ChannelConfig,
        tv: TvConfig,
        live_dir: Path,
        *,
        always_on: bool = False,
        reader: Reader = read_source,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self.tv = tv
        self.specs = config.source_specs
        self.profile = tv.profiles[config.profile] if config.profile else None
        self.live_dir = live_dir
        self.window = LiveWindow(tv.window_segments, tv.keep_extra_segments, tv.max_segment_s)
        self.fanout = Fanout(tv.viewer_backlog_kb * 1024)
        # HLS players may go quiet for a few target durations while their buffer is full.
        idle = max(tv.idle_timeout_s, 3 * self.window.target_duration)
        self.demand = Demand(idle, always_on=always_on)
        self.hls_viewers = ViewerTracker(presence_s=max(10.0, 3 * tv.max_segment_s))
        self.stats = ChannelStats()
        self.recorder: Recorder | None = None  # set by the service for recorded channels
        self._disk_failing = False
        self.state = "stopped"
        self._reader = reader
        self._selector: SourceSelector | None = None
        self._worker: IngestWorker | None = None
        self._session = ""
        self._feeds: dict[int, _Feed] = {}
        self._feed_ids = 0
        self._live: _Feed | None = None
        self._probe: _Feed | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._segment_added = asyncio.Event()  # pulsed on every new segment
        self._next_seq = 0
        self._last_index: int | None = None
        self._timeline_end: int | None = None  # output clock where the last session ended
        self._stopping: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock = asyncio.Lock()
        self._background: set[asyncio.Future[Any]] = set()
        self._cpu_mark: tuple[float, float] | None = None

    @property
    def number(self) -> int:
        return self.config.number

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def active_source(self) -> int | None:
        return self._selector.active if self._selector is not None else None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._starting:
            if self._stopping is not None:
                await self._stopping
            if self.state == "running":
                return
            loop = asyncio.get_running_loop()
            self._session = secrets.token_hex(4)
            session = self._session

            def emit(events: list[WorkerEvent]) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                    loop.call_soon_threadsafe(self._on_worker_events, session, events)

            self._worker = IngestWorker(
                name=str(self.number),
                segment_dir=self.live_dir,
                session=session,
                settings=IngestSettings(
                    segment_s=self.tv.segment_s,
                    max_segment_s=self.tv.max_segment_s,
                    keyframe_wait_s=self.tv.keyframe_wait_s,
                    max_timestamp_step_s=self.tv.max_timestamp_step_s,
                    profile=self.profile,
                ),
                emit=emit,
                first_seq=self._next_seq,
                origin=self._timeline_end,
            )
            await asyncio.to_thread(self._worker.start)
            self._selector = SourceSelector(
                count=len(self.specs),
                stall_s=self.tv.stall_s,
                start_timeout_s=self.tv.start_timeout_s,
                retry_primary_s=self.tv.retry_primary_s,
            )
            self.state = "running"
            self.stats.starts += 1
            self._cpu_mark = None
            log.info("tv channel %s (%s): starting", self.number, self.config.name)
            self._apply(self._selector.start(self._clock()))
            self._arm()

    async def stop(self, reason: str = "idle") -> None:
        if self.state != "running":
            if self._stopping is not None:
                await self._stopping
            return
        self._stopping = asyncio.current_task()
        self.state = "stopping"
        try:
            log.info("tv channel %s (%s): stopping (%s)", self.number, self.config.name, reason)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            assert self._selector is not None and self._worker is not None
            self._apply(self._selector.stop())
            for feed in list(self._feeds.values()):
                await self._end_feed(feed)
            worker = self._worker
            worker.stop()
            await asyncio.to_thread(worker.join, 30.0)
            self.stats.cpu_seconds += worker.cpu_seconds
            self._timeline_end = worker.timeline_end
            self.fanout.close_all("channel stopped")
            self.fanout.restart()
            listed = self.window.listed
            if listed:
                self._next_seq = listed[-1].seq + 1
            self.window.clear()
            self._worker = None
            self._selector = None
            self.stats.cpu_percent = 0.0
            session = self._session
            await asyncio.to_thread(_remove_session_files, self.live_dir, session)
        finally:
            self.state = "stopped"
            self._stopping = None

    # -- viewers ------------------------------------------------------------------------------

    def touch(self, viewer_key: str | None = None) -> None:
        """A viewer asked for something: keep the channel (or start it)."""
        now = self._clock()
        self.demand.touched(now)
        if viewer_key is not None:
            self.hls_viewers.seen(viewer_key, now)
        self._arm()

    async def ensure_running(self) -> None:
        if self.state != "running":
            await self.start()

    def ready(self, segments: int = STARTUP_SEGMENTS) -> bool:
        """Whether the playlist lists ``segments`` segments. Strict players (Safari,
        Chromium's own HLS, many set-top boxes) start only with three (RFC 8216 section
        6.3.3); hls.js, VLC and ffmpeg start with one."""
        return len(self.window.listed) >= min(segments, self.window.size)

    async def wait_ready(self, within: float, segments: int = STARTUP_SEGMENTS) -> bool:
        """Wait until the playlist lists ``segments`` segments (a fresh start takes a few seconds)."""
        if self.ready(segments):
            return True
        # A viewer waiting for the first segments is watching: do not let the idle timer fire.
        self.demand.stream_opened(self._clock())
        try:
            async with asyncio.timeout(within):
                while not self.ready(segments):
                    self._segment_added.clear()
                    await self._segment_added.wait()
        except TimeoutError:
            return False
        finally:
            self.demand.stream_closed(self._clock())
            self._arm()
        return True

    def open_stream(self, token_id: str, remote: str, expires: float) -> Viewer:
        now = self._clock()
        self.demand.stream_opened(now)
        self._arm()
        return self.fanout.subscribe(token_id, remote, expires)

    def close_stream(self, viewer: Viewer) -> None:
        now = self._clock()
        self.fanout.unsubscribe(viewer)
        self.demand.stream_closed(now)
        self._arm()

    def viewer_count(self) -> int:
        now = self._clock()
        return self.hls_viewers.count(now) + len(self.fanout.viewers)

    def forget_viewers(self, token_ids: frozenset[str]) -> int:
        for tid in token_ids:
            self.hls_viewers.forget(f"{tid}|")
        return self.fanout.close_where(token_ids, "token revoked")

    def segment(self, name: str) -> tuple[Segment, Path] | None:
        segment = self.window.find(name)
        if segment is None:
            return None
        return segment, self.live_dir / segment.name

    # -- source readers -----------------------------------------------------------------------

    def _apply(self, actions: list[SelectorAction]) -> None:
        for action in actions:
            if isinstance(action, SourceStarted):
                self._source_started(action)
            elif isinstance(action, SourceStopped):
                if self._live is not None and self._live.index == action.index:
                    self._background_task(self._end_feed(self._live))
                    self._live = None
            elif isinstance(action, ProbeStarted):
                self._probe = self._open_feed(action.index, probe=True)
            elif isinstance(action, ProbeStopped):
                if self._probe is not None and self._probe.index == action.index:
                    self._background_task(self._end_feed(self._probe))
                    self._probe = None
        self._arm()

    def _source_started(self, action: SourceStarted) -> None:
        spec = self.specs[action.index]
        if action.reason != "start":
            if action.index != self._last_index:  # restarting the same source is no switch
                self.stats.switches += 1
            log.warning(
                "tv channel %s: source %d (%s) now active (%s)",
                self.number,
                action.index,
                spec.describe(),
                action.reason,
            )
        self._last_index = action.index
        if action.from_probe and self._probe is not None and self._probe.index == action.index:
            feed, self._probe = self._probe, None
            feed.probe = False
            feed.pipe.drain_to(256 * 1024)  # start close to live, not at the probe's beginning
        else:
            feed = self._open_feed(action.index, probe=False)
        self._live = feed
        assert self._worker is not None
        self._worker.attach(feed.pipe, feed.id)

    def _open_feed(self, index: int, *, probe: bool) -> _Feed:
        self._feed_ids += 1
        feed = _Feed(self._feed_ids, index, BytePipe(), probe)
        self._feeds[feed.id] = feed
        feed.task = asyncio.get_running_loop().create_task(
            self._run_feed(feed), name=f"tv-{self.number}-source-{index}"
        )
        return feed

    async def _run_feed(self, feed: _Feed) -> None:
        spec = self.specs[feed.index]

        def on_data(data: bytes) -> None:
            self.stats.bytes_in += len(data)
            feed.pipe.write(data)
            if feed.probe:
                feed.probe_packets += len(feed.framer.feed(data)) // PACKET_SIZE
                if feed.probe_packets >= _PROBE_PACKETS and self._selector is not None:
                    feed.probe_packets = -(1 << 60)  # report once
                    self._apply(self._selector.probe_ready(feed.index, self._clock()))

        def on_silence(seconds: float) -> None:
            if self._selector is not None:
                self._selector.set_grace(feed.index, seconds)

        try:
            await self._reader(spec, on_data, on_silence)
            reason = "source ended"
        except SourceFailed as exc:
            reason = str(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a reader bug must fail over, not kill the channel
            log.exception("tv channel %s: source reader failed", self.number)
            reason = f"reader error: {exc}"
        self._reader_failed(feed, reason)

    def _reader_failed(self, feed: _Feed, reason: str) -> None:
        feed.pipe.close()
        self._feeds.pop(feed.id, None)
        if self._selector is None or self.state != "running":
            return
        if feed is self._live or feed is self._probe:
            self.stats.last_error = reason
            log.warning("tv channel %s: source %d failed: %s", self.number, feed.index, reason)
            if feed is self._live:
                self._live = None
            else:
                self._probe = None
            self._apply(self._selector.failed(feed.index, self._clock()))

    async def _end_feed(self, feed: _Feed) -> None:
        feed.pipe.close()
        self._feeds.pop(feed.id, None)
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed.task

    def _background_task(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- ingest thread events (on the loop) ---------------------------------------------------

    def _on_worker_events(self, session: str, events: list[WorkerEvent]) -> None:
        if session != self._session or self.state != "running":
            return
        now = self._clock()
        live_id = self._live.id if self._live is not None else None
        for event in events:
            if isinstance(event, DataProduced):
                self.fanout.publish(event.data)
            elif isinstance(event, RandomAccessReached):
                self.fanout.random_access(event.psi)
            elif isinstance(event, PacketsMuxed):
                if event.feed == live_id and self._selector is not None:
                    self._selector.progress(now)
            elif isinstance(event, SegmentWritten):
                self._segment_written(event)
            elif isinstance(event, SegmentDropped):
                self._segment_dropped(event)
            elif isinstance(event, IngestOpened):
                if event.feed == live_id:
                    self.stats.video, self.stats.audio = event.video, event.audio
                    self.stats.width, self.stats.height = event.width, event.height
            elif isinstance(event, IngestEnded):
                feed = self._feeds.get(event.feed)
                if feed is not None and feed is self._live and not feed.pipe.closed:
                    # The demuxer gave up on bytes the reader still delivers (not MPEG-TS...).
                    self._background_task(self._end_feed(feed))
                    self._reader_failed(feed, event.reason)
        self._arm()

    def _segment_written(self, event: SegmentWritten) -> None:
        self.stats.segments += 1
        if self._disk_failing:
            self._disk_failing = False
            log.warning("tv channel %s: HLS segments are written again", self.number)
        expired = self.window.add(event.segment)
        self._segment_added.set()
        if self.recorder is not None:
            self.recorder.segment_written(event.segment, event.path)
        if expired:
            paths = [self.live_dir / s.name for s in expired]
            self._background_task(asyncio.to_thread(_unlink_all, paths))

    def _segment_dropped(self, event: SegmentDropped) -> None:
        self.stats.segment_errors += 1
        self.stats.last_error = f"HLS segment not written: {event.reason}"
        if not self._disk_failing:
            self._disk_failing = True
            log.warning(
                "tv channel %s: cannot write HLS segments (%s); HTTP-TS viewers keep watching",
                self.number,
                event.reason,
            )
        if self.recorder is not None:
            self.recorder.segment_lost(event.error, event.reason)

    # -- timer --------------------------------------------------------------------------------

    def _arm(self) -> None:
        if self.state != "running":
            return
        deadlines = [
            self.demand.deadline(),
            self._selector.deadline() if self._selector is not None else None,
        ]
        times = [t for t in deadlines if t is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if times:
            loop = asyncio.get_running_loop()
            delay = max(0.0, min(times) - self._clock()) + 0.002  # land just after, never just before
            self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state != "running" or self._selector is None:
            return
        now = self._clock()
        self._apply(self._selector.tick(now))
        if not self.demand.wanted(now):
            self._background_task(self.stop("idle"))
            return
        self._arm()

    # -- status -------------------------------------------------------------------------------

    def sample_cpu(self) -> None:
        """Update cpu_percent from the ingest thread's CPU time (call about once a second)."""
        if self._worker is None:
            return
        now = time.monotonic()
        cpu = self._worker.cpu_seconds
        if self._cpu_mark is not None and now > self._cpu_mark[0]:
            self.stats.cpu_percent = 100.0 * (cpu - self._cpu_mark[1]) / (now - self._cpu_mark[0])
        self._cpu_mark = (now, cpu)

    @property
    def cpu_seconds_total(self) -> float:
        return self.stats.cpu_seconds + (self._worker.cpu_seconds if self._worker is not None else 0.0)

    def status(self) -> dict[str, Any]:
        active = self.active_source
        return {
            "number": self.number,
            "name": self.config.name,
            "state": self.state,
            "always_on": self.demand.always_on,
            "source": self.specs[active].describe() if active is not None else None,
            "source_index": active,
            "sources": [s.describe() for s in self.specs],
            "viewers": self.viewer_count(),
            "http_ts_viewers": len(self.fanout.viewers),
            "bytes_in": self.stats.bytes_in,
            "bytes_out": self.stats.bytes_out,
            "source_switches": self.stats.switches,
            "starts": self.stats.starts,
            "segments": self.stats.segments,
            "segment_errors": self.stats.segment_errors,
            "video": self.stats.video,
            "audio": self.stats.audio,
            "resolution": f"{self.stats.width}x{self.stats.height}" if self.stats.width else "",
            "transcode": self.config.profile or None,
            "cpu_percent": round(self.stats.cpu_percent, 2),
            "last_error": self.stats.last_error,
            "dvr": self.recorder.status() if self.recorder is not None else None,
        }


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _remove_session_files(directory: Path, session: str) -> None:
    for path in directory.glob(f"{session}-*"):
        path.unlink(missing_ok=True)
