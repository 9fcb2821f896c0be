from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.cdr_store import CDR_SCHEMA, SqliteCdrStore
from gateway.pbx.ami import AmiClient, AmiEndpoint, ClientEvent
from gateway.pbx.ami_session import SessionSettings
from gateway.pbx.backoff import Backoff
from gateway.pbx.config import PbxConfig
from gateway.pbx.service import PbxService
from gateway.storage.sqlite import SqliteDatabase
from tests.pbx.asterisk import AsteriskInstance, AsteriskPlan, ensure_chroot

ASTERISK_VERSION = pytest.StashKey[str]()
TRUNK_ACCOUNT = "acme/hq-trunk"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    version = config.stash.get(ASTERISK_VERSION, None)
    if version:
        terminalreporter.write_line(f"PBX tests ran against {version} (Debian unstable, cached chroot)")


@pytest_asyncio.fixture(scope="session")
async def asterisk_root(request: pytest.FixtureRequest) -> Path:
    root = await ensure_chroot()
    request.config.stash[ASTERISK_VERSION] = (root / ".seabridge-version").read_text().splitlines()[0].partition("=")[2]
    return root


@contextlib.asynccontextmanager
async def running_asterisk(root: Path, log_dir: Path) -> AsyncIterator[AsteriskInstance]:
    ast = AsteriskInstance(root, AsteriskPlan.fresh(), log_dir)
    ast.write_configs()
    try:
        await ast.start()
        yield ast
    finally:
        await ast.stop()
        ast.remove()


@pytest_asyncio.fixture(scope="session")
async def asterisk(asterisk_root: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsteriskInstance]:
    async with running_asterisk(asterisk_root, tmp_path_factory.mktemp("asterisk")) as ast:
        yield ast


class EventLog:
    """Collects client events; tests wait for the one they expect instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[ClientEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(self, match: Callable[[ClientEvent], bool], timeout: float = 20, start: int = 0) -> ClientEvent:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[start:]:
                    if match(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


def make_client(ast: AsteriskInstance, secret: str | None = None) -> AmiClient:
    plan = ast.plan
    endpoint = AmiEndpoint("127.0.0.1", plan.ami_port, plan.ami_user, plan.ami_secret if secret is None else secret)
    # Short back-off and keep-alive: the restart test should not wait the production 30 s.
    return AmiClient(endpoint, settings=SessionSettings(ping_interval=5), backoff=Backoff(initial=0.1, maximum=1.0))


@pytest_asyncio.fixture
async def ami(asterisk: AsteriskInstance) -> AsyncIterator[tuple[AmiClient, EventLog]]:
    client = make_client(asterisk)
    log = EventLog()
    client.add_listener(log)
    client.start()
    try:
        async with asyncio.timeout(20):
            await client.wait_ready()
        yield client, log
    finally:
        await client.close()


def pbx_config(ast: AsteriskInstance, **overrides: object) -> PbxConfig:
    values: dict[str, object] = {
        "enabled": True,
        "ami_port": ast.plan.ami_port,
        "ami_username": ast.plan.ami_user,
        "trunk_endpoint": ast.plan.trunk_user,
        "trunk_account": TRUNK_ACCOUNT,
        "tenant": "acme",
        "site": "beijing",
    }
    values.update(overrides)
    return PbxConfig(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def cdr_store(tmp_path: Path) -> AsyncIterator[SqliteCdrStore]:
    db = SqliteDatabase(tmp_path / "cdr.sqlite3", CDR_SCHEMA)
    try:
        yield SqliteCdrStore(db)
    finally:
        db.close()


@pytest_asyncio.fixture
async def pbx(asterisk: AsteriskInstance, cdr_store: SqliteCdrStore) -> AsyncIterator[tuple[PbxService, EventLog]]:
    service = PbxService(pbx_config(asterisk), make_client(asterisk), node="hq-gw", record_sink=cdr_store.write)
    log = EventLog()
    service.client.add_listener(log)
    service.start()
    try:
        async with asyncio.timeout(20):
            await service.client.wait_ready()
        yield service, log
    finally:
        await service.close()


class LogWaiter(logging.Handler):
    """Log records of one logger, awaitable."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    async def wait_for(self, match: Callable[[logging.LogRecord], bool], timeout: float = 20) -> logging.LogRecord:
        async with asyncio.timeout(timeout):
            while True:
                for record in self.records:
                    if match(record):
                        return record
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def security_logs() -> Iterator[LogWaiter]:
    logger = logging.getLogger("seabridge.security")
    waiter = LogWaiter()
    old_level = logger.level
    logger.addHandler(waiter)
    logger.setLevel(logging.DEBUG)
    try:
        yield waiter
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(old_level)
