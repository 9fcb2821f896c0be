"""One SQLite database file, used from one worker thread so the event loop never blocks.

SQLite connections are not safe to share across threads, and a commit can take
milliseconds on a slow SD card; every call runs on a single dedicated thread in
submission order, so writes are serialised without locks.

``run_grouped`` is for small durable writes that arrive in bursts (call records,
checkpoints): whatever is queued together is committed in one transaction (one
fsync), each in its own savepoint so one failure does not undo the others. With
``linger_s`` a write that nobody needs at once (a checkpoint) waits up to that long to
ride along with the next write's commit instead of paying a commit of its own; any
job that is not such a write flushes the waiting ones first, so jobs still take
effect in the order they were submitted.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MAX_GROUP = 256


@dataclass(slots=True)
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    grouped: bool
    linger_s: float = 0.0
    # run_sync (the CLI, start-up) waits on a thread future; the loop's callers on an asyncio
    # future, settled from here with call_soon_threadsafe (one wake-up per commit group,
    # instead of a thread future, a condition variable and a chained asyncio future per job).
    future: Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[Any] | None = None


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
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
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
        pending: _Job | None = None
        held: list[_Job] = []  # lingering writes, waiting for a commit to share
        flush_at = 0.0
        while True:
            if pending is not None:
                job: _Job | None = pending
                pending = None
            elif held:
                try:
                    job = self._jobs.get(timeout=max(flush_at - time.monotonic(), 0.0))
                except queue.Empty:
                    self._execute_group(held)
                    held = []
                    continue
            else:
                job = self._jobs.get()
            if job is None or not job.grouped:
                if held:  # they were submitted first: they commit first
                    self._execute_group(held)
                    held = []
                if job is None:
                    break
                self._execute(job)
                continue
            if job.linger_s > 0 and self._jobs.empty():
                if not held:
                    flush_at = time.monotonic() + job.linger_s
                held.append(job)
                continue
            group = [*held, job]
            held = []
            while len(group) < _MAX_GROUP:
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None or not nxt.grouped:
                    pending = nxt
                    break
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
            # Alone, the job's own transaction isolates it: the savepoint's two statements
            # would each cost a GIL hand-off with the event loop, for nothing.
            self._execute_alone(group[0])
            return
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for job in group:
                self._settle(job, error=exc)
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
        self._jobs.put(_Job(fn, False, future=future))
        return future.result()

    def _submit(self, fn: Callable[[sqlite3.Connection], T], grouped: bool, linger_s: float = 0.0) -> asyncio.Future[T]:
        self._check_open()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[T] = loop.create_future()
        self._jobs.put(_Job(fn, grouped, linger_s, loop=loop, waiter=waiter))
        return waiter

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn, grouped=False)

    async def run_grouped(self, fn: Callable[[sqlite3.Connection], T], linger_s: float = 0.0) -> T:
        """Run ``fn`` in a transaction shared with other grouped writes queued at the same time.

        ``fn`` must not begin or commit a transaction itself. With ``linger_s``, when nothing
        else is queued, ``fn`` waits up to that long for another write to share its commit
        (it still runs before any later job that is not such a write).
        """
        return await self._submit(fn, grouped=True, linger_s=linger_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
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
