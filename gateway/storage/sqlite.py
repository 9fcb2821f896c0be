"""One SQLite database file, used from one worker thread so the event loop never blocks.

SQLite connections are not safe to share across threads, and a commit can take
milliseconds on a slow SD card; every call runs on a single dedicated thread in
submission order, so writes are serialised without locks.

``run_grouped`` is for small durable writes that arrive in bursts (call records,
checkpoints): whatever is queued together is committed in one transaction (one
fsync), each in its own savepoint so one failure does not undo the others.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_MAX_GROUP = 256


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any]
    grouped: bool


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
        while True:
            job = pending if pending is not None else self._jobs.get()
            pending = None
            if job is None:
                break
            if not job.grouped:
                self._execute(job)
                continue
            group = [job]
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
        if job.future.set_running_or_notify_cancel():
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

    def _execute(self, job: _Job) -> None:
        try:
            result = job.fn(self._connect())
        except BaseException as exc:
            self._settle(job, error=exc)
        else:
            self._settle(job, result)

    def _execute_group(self, group: list[_Job]) -> None:
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
        for job, result, error in outcomes:
            self._settle(job, result, error)

    # --- callers ------------------------------------------------------------------------

    def _submit(self, fn: Callable[[sqlite3.Connection], T], grouped: bool) -> Future[T]:
        if self._closed:
            raise RuntimeError(f"database {self.path} is closed")
        future: Future[T] = Future()
        self._jobs.put(_Job(fn, future, grouped))
        return future

    def run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database thread and wait (for the CLI and start-up)."""
        return self._submit(fn, grouped=False).result()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.wrap_future(self._submit(fn, grouped=False))

    async def run_grouped(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a transaction shared with other grouped writes queued at the same time.

        ``fn`` must not begin or commit a transaction itself.
        """
        return await asyncio.wrap_future(self._submit(fn, grouped=True))

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
