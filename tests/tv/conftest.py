"""Shared fixtures for the TV tests: test channels made by ffmpeg (testsrc2 + sine, H.264 + AAC)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from tv_gateway import CLOCK_GROUP, FAST, GROUP, Gateway
from tv_peers import HlsOrigin, MulticastNamespace

from gateway.config import parse_config
from media.tv.service import TvService
from media.tv.web import add_tv_routes, add_tv_status_route
from tests.support.ports import free_port


def make_ts(
    path: Path, *, seconds: float = 4, gop: int = 25, size: str = "160x120", extra: tuple[str, ...] = ()
) -> Path:
    """An MPEG-TS test channel: 25 fps video with a keyframe every ``gop`` frames, 1 kHz tone."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-sc_threshold",
            "0",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            *extra,
            "-f",
            "mpegts",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def ts_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seconds, one keyframe a second."""
    return make_ts(tmp_path_factory.mktemp("media") / "av4s.ts")


@pytest.fixture(scope="session")
def ts_sparse_keyframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve seconds with a single keyframe at the start (a feed that 'lost' its keyframes)."""
    return make_ts(tmp_path_factory.mktemp("media") / "sparse.ts", seconds=12, gop=1000)


# -- real peers and the gateway under test (end-to-end tests) -------------------------------


@pytest.fixture(scope="session")
def multicast() -> Iterator[tuple[MulticastNamespace, int]]:
    """A test channel multicast to GROUP from inside a namespace, over a veth pair."""
    ns = MulticastNamespace().create()
    port = free_port()
    sender = ns.sender(GROUP, port)
    try:
        sender.start()
        yield ns, port
    finally:
        sender.stop()
        ns.delete()


@pytest.fixture(scope="session")
def clock_channel(multicast: tuple[MulticastNamespace, int]) -> Iterator[str]:
    """A channel whose pictures show the wall-clock time they were made at (multicast to
    CLOCK_GROUP over the same veth pair); yields its source URL."""
    ns, _ = multicast
    port = free_port()
    sender = ns.sender(CLOCK_GROUP, port, clock=True)
    try:
        sender.start()
        yield f"udp://{CLOCK_GROUP}:{port}?iface={ns.host_if}"
    finally:
        sender.stop()


@pytest.fixture(scope="session")
def hls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HlsOrigin]:
    origin = HlsOrigin(tmp_path_factory.mktemp("origin"))
    try:
        origin.start()
        deadline = time.monotonic() + 20
        while not (origin.directory / "index.m3u8").exists():  # ffmpeg writes it after ~2 segments
            assert time.monotonic() < deadline, "ffmpeg did not start the HLS origin"
            time.sleep(0.1)
        yield origin
    finally:
        origin.stop()


# -- the gateway under test -------------------------------------------------------------------


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    made: list[tuple[TvService, web.AppRunner, aiohttp.ClientSession]] = []

    async def make(channels: list[dict[str, Any]], data_dir: Path | None = None, **tv: Any) -> Gateway:
        root = data_dir or tmp_path
        config = parse_config({"data_dir": str(root), "tv": {"enabled": True, **FAST, **tv, "channels": channels}})
        registry = CollectorRegistry()
        service = TvService(config.tv, config.data_path, registry=registry)
        app = web.Application()
        add_tv_routes(app, service)
        add_tv_status_route(app, service)
        await service.start()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        client = aiohttp.ClientSession()
        made.append((service, runner, client))
        return Gateway(service, port, client, registry)

    yield make
    for service, runner, client in made:
        await client.close()
        await service.stop()
        await runner.cleanup()
