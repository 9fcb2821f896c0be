"""One channel's recording: the live segments kept for hours, for time-shift and catch-up.

Each segment the live ingest finishes is hard-linked into ``<dvr dir>/<channel>/`` (copied
when the DVR is on another filesystem): no re-encoding, no second muxer, and on the same
disk not even a copy. The decisions live in the cores: ``DvrWindow`` (what is kept) and
``RecordingState`` (disk full, disk failing, back); this class does the file work in a
worker thread, one job at a time per channel, and keeps the durable index.

Disk trouble never reaches the live channel: a write that fails, or a disk whose free
space falls under ``min_free`` bytes, stops the recording with a status, a metric and a
log line; live TV keeps playing from its own small window, and recording resumes by
itself when space returns (checked on every segment) or, after an I/O error, every
``retry_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.tv import TvError
from media.tv.demand import ViewerTracker
from media.tv.dvrindex import DvrIndex
from media.tv.dvrwindow import DvrWindow, Recorded
from media.tv.epg import to_iso
from media.tv.recstate import FailureKind, RecordingResumed, RecordingState, RecordingStopped
from media.tv.window import Segment

log = logging.getLogger(__name__)

_QUEUE = 64  # segments waiting for a slow disk before new ones are dropped
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_NO_LINK_ERRNOS = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP}


class _ReserveReached(TvError):
    def __init__(self, free: int) -> None:
        super().__init__(f"{free} bytes free")
        self.free = free


class _SourceGone(TvError):
    """The live segment was deleted before it could be kept (the channel stopped)."""


@dataclass(frozen=True)
class _Store:
    segment: Segment
    path: Path


@dataclass(frozen=True)
class _Forget:
    segments: list[Recorded]


@dataclass
class RecorderStats:
    recorded: int = 0
    evicted: int = 0  # dropped to stay under the byte cap
    expired: int = 0  # dropped for age
    skipped: int = 0  # not recorded (recording stopped, queue full, live segment lost)
    write_errors: int = 0
    free_bytes: int | None = None


class Recorder:
    def __init__(
        self,
        number: int,
        directory: Path,
        *,
        max_age: float,
        max_bytes: int,
        min_free: int,
        retry_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.number = number
        self.directory = directory
        self.max_age = max_age
        self.min_free = min_free
        self.window = DvrWindow(max_age, max_bytes)
        self.state = RecordingState(retry_s)
        self.stats = RecorderStats()
        self._index = DvrIndex(directory)
        self._clock = clock
        self._wall = wall
        self._changed_wall = wall()
        self._queue: asyncio.Queue[_Store | _Forget | None] = asyncio.Queue(_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._recorded = asyncio.Event()
        self._too_big_logged = False
        # Time-shift and catch-up audiences: HLS viewers by presence, HTTP-TS by connection.
        self.viewers = ViewerTracker(presence_s=10.0)
        self.streams = 0

    # -- life cycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Read the index back (recordings survive restarts) and start taking segments."""
        try:
            kept = await asyncio.to_thread(self._index.load)
        except OSError as exc:
            kept = []
            self._apply_failure(_kind(exc), f"cannot read the recording: {exc.strerror or exc}")
        self.window = DvrWindow.restore(self.max_age, self.window.max_bytes, kept)
        stale = self.window.expire(self._wall()) + self.window.make_room(0)
        if stale:
            await asyncio.to_thread(self._unlink, stale)
        if kept:
            log.info(
                "tv channel %s: %d recorded segment(s) kept from before (%s to %s)",
                self.number,
                len(self.window.segments),
                to_iso(self.window.start or 0),
                to_iso(self.window.end or 0),
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"tv-{self.number}-recorder")

    async def close(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            if self._queue.full():
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- from the channel (on the loop) -------------------------------------------------------

    def segment_written(self, segment: Segment, path: Path) -> None:
        try:
            self._queue.put_nowait(_Store(segment, path))
        except asyncio.QueueFull:
            self.stats.skipped += 1
            log.warning("tv channel %s: the DVR disk lags; segment %s not recorded", self.number, path.name)

    def segment_lost(self, error: int, reason: str) -> None:
        """The live ingest could not write a segment: there is nothing to record."""
        self.stats.skipped += 1
        self._apply_failure("full" if error in _FULL_ERRNOS else "error", f"live segment not written: {reason}")

    def tick(self) -> None:
        """Drop what aged out (call about once a second, even while nothing is recorded)."""
        expired = self.window.expire(self._wall())
        if expired:
            self.stats.expired += len(expired)
            with contextlib.suppress(asyncio.QueueFull):  # a later tick deletes them at load
                self._queue.put_nowait(_Forget(expired))

    # -- for viewers --------------------------------------------------------------------------

    def path_of(self, name: str) -> tuple[Recorded, Path] | None:
        segment = self.window.find(name)
        if segment is None:
            return None
        return segment, self.directory / name

    async def wait_recorded(self, within: float) -> None:
        """Return when the next segment is recorded, or after ``within`` seconds."""
        event = self._recorded
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()

    # -- the worker ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if job is None:
                    return
                if isinstance(job, _Forget):
                    await asyncio.to_thread(self._unlink, job.segments)
                else:
                    await self._store(job)
            except Exception:  # a bug must not end the recording for good
                log.exception("tv channel %s: recorder failed on a job", self.number)
            finally:
                self._queue.task_done()

    async def flush(self) -> None:
        """Wait until every segment handed over so far is stored (or given up on)."""
        await self._queue.join()

    async def _store(self, job: _Store) -> None:
        now = self._clock()
        if not self.state.may_write(now):
            self.stats.skipped += 1
            return
        live = job.segment
        if not self.window.fits(live.size):
            self.stats.skipped += 1
            if not self._too_big_logged:
                self._too_big_logged = True
                log.warning(
                    "tv channel %s: a %d-byte segment exceeds the DVR cap (%d bytes): raise dvr max_gb",
                    self.number,
                    live.size,
                    self.window.max_bytes,
                )
            return
        gone = self.window.expire(self._wall())
        self.stats.expired += len(gone)
        evicted = self.window.make_room(live.size)
        self.stats.evicted += len(evicted)
        run = live.name.split("-", 1)[0]
        record = self.window.prepare(
            run, live.seq, live.wall_start, live.duration, live.size, restarted=live.discontinuity
        )
        # The index is rewritten from a snapshot taken here: the loop may drop segments meanwhile.
        compact = [*self.window.segments, record] if self._index.lines > 2 * len(self.window.segments) + 256 else None
        try:
            self.stats.free_bytes = await asyncio.to_thread(self._write, job.path, record, gone + evicted, compact)
        except _SourceGone:
            self.stats.skipped += 1
            return
        except _ReserveReached as exc:
            self.stats.free_bytes = exc.free
            self.stats.skipped += 1
            if exc.free < live.size:
                reason = f"the disk is full ({exc.free / 1e6:.2f} MB free)"
            else:
                reason = f"{exc.free / 1e6:.2f} MB free on the disk, kept in reserve ({self.min_free / 1e6:.2f} MB)"
            self._apply_failure("full", reason)
            return
        except OSError as exc:
            self.stats.write_errors += 1
            self.stats.skipped += 1
            self._apply_failure(_kind(exc), exc.strerror or str(exc))
            return
        self.window.append(record)
        self.stats.recorded += 1
        self._apply_resumed()
        self._recorded.set()
        self._recorded = asyncio.Event()

    def _write(self, source: Path, record: Recorded, forget: list[Recorded], compact: list[Recorded] | None) -> int:
        """Thread: delete what left the window, check the reserve, link or copy, index."""
        self._unlink(forget)
        self.directory.mkdir(parents=True, exist_ok=True)  # removed by hand? start it again
        stat = os.statvfs(self.directory)
        free = stat.f_bavail * stat.f_frsize
        if free - record.size < self.min_free:
            raise _ReserveReached(free)
        if not source.exists():
            raise _SourceGone()
        target = self.directory / record.name
        target.unlink(missing_ok=True)  # a stray of an earlier run with the same name
        try:
            os.link(source, target)
        except FileNotFoundError:
            raise _SourceGone() from None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            self._copy(source, target)
        try:
            if compact is not None:
                self._index.rewrite(compact)
            else:
                self._index.append(record)
        except OSError:
            target.unlink(missing_ok=True)
            raise
        return free

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        part = target.with_name(target.name + ".part")
        try:
            shutil.copyfile(source, part)
            os.replace(part, target)
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            raise _SourceGone() from None
        except OSError:
            with contextlib.suppress(OSError):
                part.unlink(missing_ok=True)
            raise

    def _unlink(self, segments: list[Recorded]) -> None:
        for segment in segments:
            with contextlib.suppress(OSError):  # a stray is removed at the next load
                (self.directory / segment.name).unlink(missing_ok=True)

    # -- state --------------------------------------------------------------------------------

    def _apply_failure(self, kind: FailureKind, reason: str) -> None:
        event = self.state.failed(kind, reason, self._clock())
        if isinstance(event, RecordingStopped):
            self._changed_wall = self._wall()
            log.warning(
                "tv channel %s: recording stopped (%s): %s; live TV continues",
                self.number,
                event.state.replace("_", " "),
                event.reason,
            )

    def _apply_resumed(self) -> None:
        event = self.state.succeeded(self._clock())
        if isinstance(event, RecordingResumed):
            self._changed_wall = self._wall()
            log.warning(
                "tv channel %s: recording resumed after %.0f s (%s)",
                self.number,
                event.stopped_for,
                event.previous.replace("_", " "),
            )

    def seen(self, viewer_key: str) -> None:
        self.viewers.seen(viewer_key, self._clock())

    def viewer_count(self) -> int:
        return self.viewers.count(self._clock()) + self.streams

    def status(self) -> dict[str, Any]:
        window = self.window
        return {
            "viewers": self.viewer_count(),
            "recording": self.state.recording,
            "state": self.state.state,
            "reason": self.state.reason,
            "since": to_iso(self._changed_wall),
            "segments": len(window.segments),
            "bytes": window.bytes,
            "max_bytes": window.max_bytes,
            "window_hours": round(self.max_age / 3600, 4),
            "start": to_iso(window.start) if window.start is not None else None,
            "end": to_iso(window.end) if window.end is not None else None,
            "seconds": round((window.end or 0) - (window.start or 0), 1),
            "free_bytes": self.stats.free_bytes,
            "min_free_bytes": self.min_free,
            "recorded": self.stats.recorded,
            "evicted": self.stats.evicted,
            "expired": self.stats.expired,
            "skipped": self.stats.skipped,
            "write_errors": self.stats.write_errors,
        }


def _kind(exc: OSError) -> FailureKind:
    return "full" if exc.errno in _FULL_ERRNOS else "error"
