"""A real gateway process for integration tests: `seabridge run` on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port, port_block

REPO = Path(__file__).resolve().parents[2]


def seabridge(
    *args: str, config: Path | None = None, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway.cli", *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, input=input_text, timeout=60)


@dataclass
class GatewayProcess:
    folder: Path
    extra_config: str = ""
    sip_extra: str = ""
    sip_port: int = 0
    http_port: int = 0
    process: asyncio.subprocess.Process | None = None
    media_range: tuple[int, int] = (0, 0)
    log_lines: list[str] = field(default_factory=list)
    log_level: str = "debug"
    t1_ms: int = 100

    @property
    def config_path(self) -> Path:
        return self.folder / "gateway.toml"

    @property
    def data_dir(self) -> Path:
        return self.folder / "var"

    @property
    def sip_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def tls_port(self) -> int:
        return self.sip_port + 1

    @property
    def certificate(self) -> Path:
        return self.data_dir / "tls" / "gateway.crt"

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.sip_port:
            self.sip_port = free_port()
        if not self.http_port:
            self.http_port = free_port(host="127.0.0.1")
        if self.media_range == (0, 0):
            self.media_range = port_block()
        first, last = self.media_range
        self.config_path.write_text(
            f"""
node_name = "test-gw"
data_dir = "{self.data_dir}"

[log]
level = "{self.log_level}"
format = "json"

[sip]
bind = "127.0.0.1"
udp_port = {self.sip_port}
tcp_port = {self.sip_port}
tls_port = {self.sip_port + 1}
ring_timeout_s = 30
# Loopback: short timers so transactions finish quickly between tests.
t1_ms = {self.t1_ms}
t2_ms = 400
t4_ms = 500
checkpoint_interval_s = 0.5
{self.sip_extra}

[media]
bind = "127.0.0.1"
port_min = {first}
port_max = {last}

[http]
bind = "127.0.0.1"
port = {self.http_port}
{self.extra_config}
{self._webrtc_default()}
"""
        )

    def _webrtc_default(self) -> str:
        # Tests that do not exercise the browser phone must not all claim 0.0.0.0:8443.
        if "[webrtc]" in self.extra_config:
            return ""
        return '[webrtc]\nhttps_bind = "127.0.0.1"\nhttps_port = 0\n'

    def add_user(self, address: str, site: str, password: str, number: str | None = None) -> None:
        if not self.config_path.exists():
            self.write_config()
        extra = ("--number", number) if number else ()
        # `--password=` keeps a generated password that starts with "-" from reading as an option.
        result = seabridge(
            "user", "add", address, "--site", site, f"--password={password}", *extra, config=self.config_path
        )
        assert result.returncode == 0, result.stderr

    async def start(self) -> None:
        if not self.config_path.exists():
            self.write_config()
        with (self.folder / "gateway.log").open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self._command_prefix(),
                sys.executable,
                "-m",
                "gateway.cli",
                "run",
                "--config",
                str(self.config_path),
                cwd=REPO,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        await self.wait_healthy()

    def _command_prefix(self) -> tuple[str, ...]:
        """What runs the gateway (a namespaced gateway puts `ip netns exec NS` here)."""
        return ()

    async def wait_healthy(self, timeout: float = 20.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"gateway exited {self.process.returncode}: {self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{self.http_port}/health") as resp:
                        if resp.status == 200:
                            return dict(await resp.json())
                await asyncio.sleep(0.1)
        raise RuntimeError(f"gateway not healthy within {timeout}s: {self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        path = self.folder / "gateway.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def log_records(self) -> list[dict[str, Any]]:
        path = self.folder / "gateway.log"
        out = []
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    async def api_get(self, path: str, token: str) -> Any:
        """GET an API document with a bearer token; anything but 200 fails the test with the body."""
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{self.http_port}{path}", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 200, await r.text()
                return await r.json()

    async def metrics(self) -> dict[str, float]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.http_port}/metrics") as resp:
                text = await resp.text()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), 20)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()
