"""Private PostgreSQL and Redis servers for the tests, in a temp dir on a free port, always stopped.

Each server is a direct child started with PR_SET_PDEATHSIG, so even a test run
killed with SIGKILL (no teardown) takes its servers with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        # Polling a port has no event to wait on; a short pause between attempts.
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def _child_setup(as_postgres: bool):  # type: ignore[no-untyped-def]
    def setup() -> None:
        if as_postgres:
            pw = pwd.getpwnam("postgres")
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
        # After setuid, which clears it.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return setup


def _wait_until_accepting(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """The port opens before recovery ends ("the database system is starting up"): ask pg_isready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}")
        ready = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-t", "1"], capture_output=True
        )
        if ready.returncode == 0:
            return
        time.sleep(0.05)  # no event to wait on: poll
    raise TimeoutError("postgres did not accept connections")


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """initdb + pg_ctl in a temp dir; as the 'postgres' user when we are root (initdb refuses root)."""
    root = Path(tempfile.mkdtemp(prefix="sb-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = secrets.token_hex(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if as_user:
        shutil.chown(pwfile, "postgres")
    data = root / "data"
    port = free_port()
    subprocess.run(
        [*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-U", "billing", "--auth=scram-sha-256",
         f"--pwfile={pwfile}", "--no-sync", "-E", "UTF8"],
        check=True, capture_output=True,
    )  # fmt: skip
    log = (root / "log").open("wb")
    proc = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
         "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "synchronous_commit=off"],
        stdout=subprocess.DEVNULL, stderr=log,
        preexec_fn=_child_setup(as_postgres=bool(as_user)),
    )  # fmt: skip
    try:
        _wait_for_port(port, proc, 30)
        _wait_until_accepting(port, proc, 30)
        yield Postgres(port, "billing", password)
    finally:
        proc.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="sb-redis-"))
    port = free_port()
    password = secrets.token_hex(16)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(root), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_child_setup(as_postgres=False),
    )  # fmt: skip
    try:
        _wait_for_port(port, proc, 20)
        yield f"redis://:{password}@127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
