"""One SQLite database file, used from one worker thread so the event loop never blocks.

SQLite connections are not safe to share across threads, and a commit can take
milliseconds on a slow SD card; every call runs on a single dedicated thread in
submission order, so writes are serialised without locks.

``run_grouped`` is for small durable writes that arrive in bursts (call records,
checkpoints): whatever is queued together is committed in one transaction (one fsync);
one failure does not undo the others (the group runs again, each job in its own
savepoint). With ``linger_s`` a write that nobody needs at once (a checkpoint) waits up to that long to
ride along with the next write's commit instead of paying a commit of its own; any
job that is not such a write flushes the waiting ones first, so jobs still take
effect in the order they were submitted.

Jobs submitted from the event loop are handed to the thread in batches, once per loop pass
(or when the earliest lingering write is due): waking the thread costs a system call and a
hand-off of the interpreter lock, and a call set-up submits several writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MAX_GROUP = 256


def _wait_behind_the_event_loop() -> None:
    """Put the calling thread in SCHED_BATCH: when it wakes, it does not preempt the thread
    running on its core (Linux's wake-up preemption skips batch threads).

    A hand-over wakes this thread while the event loop is busy. As a normal thread, having
    slept, it would preempt the loop at once, only to block on the interpreter lock that the
    loop holds: two context switches for nothing, several times per call. Measured with two
    SIP workers at 600 calls/s: the loops' involuntary switches fell from 3.0-4.2 to
    1.8-3.0 per call, and CPU per call by 1.6%. It still runs at once on an idle core, and
    otherwise within a tick, when the loop waits for input or the scheduler rotates."""
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):  # a sandbox may refuse it: then it is only slower
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


# Writes of one kind, many at once: the items of several jobs in, one result per item out,
# in order. A statement releases the interpreter lock while SQLite works and must take it
# back after; while the event loop is busy, taking it back waits for the loop's switch
# interval (5 ms). So a group of a hundred one-row statements waits half a second, and the
# same rows in one statement wait once.
Batch = Callable[[sqlite3.Connection, list[Any]], list[Any]]


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    grouped: bool
    # run_sync (the CLI, start-up) waits on a thread future; the loop's callers on an asyncio
    # future, settled from here with call_soon_threadsafe (one wake-up per commit group,
    # instead of a thread future, a condition variable and a chained asyncio future per job).
    future: Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[Any] | None = None
    # run_batched: consecutive jobs of a group with an equal batch run as one batch call.
    batch: Batch | None = None
    item: Any = None


Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _resolve(outcomes: list[Outcome]) -> None:
    for waiter, result, error in outcomes:
        if waiter.cancelled():
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)


class SqliteDatabase:
    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self._schema = schema
        self._conn: sqlite3.Connection | None = None
        # What the thread takes: one job (run_sync), a batch from the loop, or None to stop.
        self._jobs: queue.SimpleQueue[_Job | list[_Job] | None] = queue.SimpleQueue()
        # The loop side's batch, not yet handed over. The lock is for close(), which may run
        # on another thread (an executor) while the loop still has a batch waiting.
        self._lock = threading.Lock()
        self._batch: list[_Job] = []
        self._batch_loop: asyncio.AbstractEventLoop | None = None
        self._flush_at = math.inf  # when the scheduled hand-over runs (loop time)
        self._handover = 0  # counts hand-overs, so a timer made stale by one does nothing
        self._thread = threading.Thread(target=self._serve, name=f"sqlite-{path.stem}", daemon=True)
        self._thread.start()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed call record survives a power cut, which is the promise we make.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(self._schema)
            self._conn = conn
        return self._conn

    # --- the database thread ------------------------------------------------------------

    def _serve(self) -> None:
        _wait_behind_the_event_loop()
        queued: deque[_Job | None] = deque()

        def take(block: bool) -> bool:
            try:
                item = self._jobs.get() if block else self._jobs.get_nowait()
            except queue.Empty:
                return False
            if isinstance(item, list):
                queued.extend(item)
            else:
                queued.append(item)
            return True

        while True:
            if not queued:
                take(block=True)
            job = queued.popleft()
            if job is None:
                break
            if not job.grouped:
                self._execute(job)
                continue
            # The grouped writes that follow, this batch's and any already queued behind it,
            # share the commit; the first job that is not one ends the group.
            group = [job]
            while len(group) < _MAX_GROUP and (queued or take(block=False)):
                nxt = queued[0]
                if nxt is None or not nxt.grouped:
                    break
                queued.popleft()
                group.append(nxt)
            self._execute_group(group)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @staticmethod
    def _settle(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        SqliteDatabase._settle_all([(job, result, error)])

    @staticmethod
    def _settle_all(outcomes: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for job, result, error in outcomes:
            if job.waiter is not None and job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.waiter, result, error))
            elif job.future is not None and job.future.set_running_or_notify_cancel():
                if error is not None:
                    job.future.set_exception(error)
                else:
                    job.future.set_result(result)
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, settled)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

    def _execute(self, job: _Job) -> None:
        try:
            result = job.fn(self._connect())
        except BaseException as exc:
            self._settle(job, error=exc)
        else:
            self._settle(job, result)

    def _execute_group(self, group: list[_Job]) -> None:
        if len(group) == 1:
            self._execute_alone(group[0])
            return
        # Optimistic: no savepoints, whose two statements per job would each cost a hand-off
        # of the interpreter lock with the event loop. If a job fails, its partial writes
        # cannot be undone alone: the group is rolled back and run again with a savepoint
        # per job (a job writes only through the connection, so running it again is safe).
        conn = self._begin(group)
        if conn is None:
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        start = 0
        while start < len(group):
            job = group[start]
            end = start + 1
            if job.batch is not None:
                while end < len(group) and group[end].batch == job.batch:
                    end += 1
            try:
                if job.batch is not None and end - start > 1:
                    run = group[start:end]
                    results = job.batch(conn, [j.item for j in run])
                    outcomes.extend((j, result, None) for j, result in zip(run, results, strict=True))
                else:
                    outcomes.append((job, job.fn(conn), None))
            except BaseException:
                conn.execute("ROLLBACK")
                self._execute_isolated(group)
                return
            start = end
        self._commit(conn, group, outcomes)

    def _begin(self, group: list[_Job]) -> sqlite3.Connection | None:
        """The connection, in a write transaction; None (and the group failed) if it cannot be."""
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                self._settle(job, error=exc)
            return None
        return conn

    def _execute_isolated(self, group: list[_Job]) -> None:
        """Each job in its own savepoint, so one that fails leaves the others' writes."""
        conn = self._begin(group)
        if conn is None:
            return
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        for job in group:
            conn.execute("SAVEPOINT job")
            try:
                result = job.fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO SAVEPOINT job")
                conn.execute("RELEASE SAVEPOINT job")
                outcomes.append((job, None, exc))
            else:
                conn.execute("RELEASE SAVEPOINT job")
                outcomes.append((job, result, None))
        self._commit(conn, group, outcomes)

    def _commit(
        self, conn: sqlite3.Connection, group: list[_Job], outcomes: list[tuple[_Job, Any, BaseException | None]]
    ) -> None:
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            for job in group:
                self._settle(job, error=exc)
            return
        self._settle_all(outcomes)

    def _execute_alone(self, job: _Job) -> None:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._settle(job, error=exc)
            return
        try:
            result = job.fn(conn)
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._settle(job, error=exc)
        else:
            self._settle(job, result)

    # --- callers ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread and wait (for the CLI and start-up)."""
        self._check_open()
        future: Future[T] = Future()
        with self._lock:
            self._hand_over()  # what the loop submitted before runs before
            self._jobs.put(_Job(fn, False, future=future))
        return future.result()

    def _submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        grouped: bool,
        linger_s: float = 0.0,
        batch: Batch | None = None,
        item: Any = None,
    ) -> asyncio.Future[T]:
        self._check_open()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        job = _Job(fn, grouped, loop=loop, waiter=waiter, batch=batch, item=item)
        with self._lock:
            if self._batch and self._batch_loop is not loop:
                self._hand_over()  # another loop's jobs came first
            self._batch.append(job)
            self._batch_loop = loop
            if grouped and linger_s > 0:
                due = loop.time() + linger_s
                if due < self._flush_at:
                    self._flush_at = due
                    loop.call_at(due, self._flush, self._handover)
            elif self._flush_at > 0.0:
                self._flush_at = 0.0  # "this pass": earlier than any loop time
                loop.call_soon(self._flush, self._handover)
        return waiter

    def _flush(self, handover: int) -> None:
        with self._lock:
            if handover == self._handover:
                self._hand_over()

    def _hand_over(self) -> None:
        """Give the batch to the thread (with the lock held)."""
        self._handover += 1
        self._flush_at = math.inf
        if self._batch:
            self._jobs.put(self._batch)
            self._batch = []

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, grouped=False)

    async def run_grouped(self, fn: Callable[[sqlite3.Connection], T], linger_s: float = 0.0) -> T:
        """Run ``fn`` in a transaction shared with other grouped writes queued at the same time.

        ``fn`` must not begin or commit a transaction itself, and must write only through the
        connection: if another job of its group fails, it runs again. With ``linger_s``, when nothing
        else is queued, ``fn`` waits up to that long for another write to share its commit
        (it still runs before any later job that is not such a write).
        """
        return await self._submit(fn, grouped=True, linger_s=linger_s)

    async def run_batched(self, batch: Batch, item: Any, linger_s: float = 0.0) -> Any:
        """``run_grouped`` for writes of one kind: the items of the jobs of a group that come
        one after another with an equal ``batch`` are written by one call, ``batch(conn,
        items)``, which returns one result per item, in order (this job's is returned). It
        must accept a single item too: alone, or when its group runs again job by job."""
        alone: Callable[[sqlite3.Connection], Any] = lambda conn: batch(conn, [item])[0]  # noqa: E731
        return await self._submit(alone, grouped=True, linger_s=linger_s, batch=batch, item=item)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._hand_over()  # lingering writes commit before the thread stops
        self._jobs.put(None)
        self._thread.join()


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str = "BEGIN IMMEDIATE") -> T:
    """Run ``fn`` inside ``begin`` ... COMMIT (rolled back on error)."""
    conn.execute(begin)
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def read_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside BEGIN ... COMMIT without taking the write lock: one snapshot for all its reads."""
    return transaction(conn, fn, begin="BEGIN")
