"""The TV service under test, and the clients that watch it (helpers for the TV tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry

from media.tv.service import TvService
from media.tv.tokens import TokenRejected

GROUP = "239.255.77.1"
CLOCK_GROUP = "239.255.77.2"  # the channel whose pictures show the time
FAST = {  # short timers so the suite stays quick; the real defaults are in TvConfig
    "segment_s": 1.0,
    "max_segment_s": 2.0,
    "window_segments": 6,
    "idle_timeout_s": 2.0,
    "stall_s": 1.5,
    "start_timeout_s": 8.0,
    "retry_primary_s": 2.0,
}


@dataclass
class Gateway:
    service: TvService
    port: int
    client: aiohttp.ClientSession
    registry: CollectorRegistry

    def url(self, token: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/iptv/{token}/{path}"

    def token(self, tenant: str = "acme") -> str:
        return self.service.issue(tenant, 1)[0]


def channel(number: int, *sources: str, tenants: tuple[str, ...] = ("acme",), **kw: Any) -> dict[str, Any]:
    return {
        "number": number,
        "name": f"Test {number}",
        "sources": list(sources),
        "tenants": list(tenants),
        **kw,
    }


async def get_segments(gw: Gateway, token: str, number: int, count: int) -> tuple[list[str], list[float], bytes]:
    """Reload the live playlist until it lists ``count`` segments; fetch them in order."""
    url = gw.url(token, f"ch/{number}/index.m3u8")
    text = ""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while True:
        async with gw.client.get(url) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
            assert r.headers["Cache-Control"] == "no-cache"
            text = await r.text()
        names = [line for line in text.splitlines() if line.endswith(".ts")]
        if len(names) >= count:
            break
        assert loop.time() < deadline, f"playlist never reached {count} segments:\n{text}"
        await asyncio.sleep(0.5)
    durations = [float(line[8:].rstrip(",")) for line in text.splitlines() if line.startswith("#EXTINF:")]
    body = b""
    for name in names[:count]:
        async with gw.client.get(gw.url(token, f"ch/{number}/{name}")) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "video/mp2t"
            assert "max-age" in r.headers["Cache-Control"] and "no-cache" not in r.headers["Cache-Control"]
            body += await r.read()
    return names[:count], durations[:count], body


class StreamReader:
    """An HTTP-TS viewer: reads the continuous stream in the background."""

    def __init__(self, gw: Gateway, url: str) -> None:
        self.gw = gw
        self.url = url
        self.data = bytearray()
        self.status = 0
        self.ended = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async with self.gw.client.get(self.url) as r:
                self.status = r.status
                if r.status == 200:
                    async for chunk in r.content.iter_any():
                        self.data += chunk
        except aiohttp.ClientError:
            pass
        finally:
            self.ended.set()

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def refused(service: TvService, token: str) -> bool:
    try:
        service.authorize(token)
    except TokenRejected:
        return True
    return False


def save(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path
