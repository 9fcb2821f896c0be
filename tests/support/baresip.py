"""A real softphone for tests: baresip, headless, driven over its ctrl_tcp JSON interface.

Each phone plays a WAV file as its microphone (aufile) and records what it
hears (sndfile writes ``*-dec.wav`` per call into its recording folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, port_block


@dataclass
class PhoneAccount:
    user: str
    domain: str
    password: str | None
    gateway: tuple[str, int]
    register: bool = True
    transport: str = "udp"
    ca_file: str = ""


@dataclass
class Baresip:
    name: str
    folder: Path
    account: PhoneAccount
    tone: Path
    sip_port: int = 0
    ctrl_port: int = 0
    process: asyncio.subprocess.Process | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _pump: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _token: int = 0
    _responses: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    @property
    def recordings(self) -> Path:
        return self.folder / "rec"

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        self.sip_port = free_port()
        self.ctrl_port = free_port(host="127.0.0.1")
        rtp_first, rtp_last = port_block(100)
        config = f"""
poll_method epoll
sip_listen 127.0.0.1:{self.sip_port}
net_interface 127.0.0.1
audio_player aufile,/dev/null
audio_source aufile,{self.tone}
audio_alert aufile,/dev/null
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module sndfile.so
module ctrl_tcp.so
module_app account.so
module_app menu.so
ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}
snd_path {self.recordings}
rtp_ports {rtp_first}-{rtp_last}
sip_trans_def {self.account.transport}
{f"sip_cafile {self.account.ca_file}" if self.account.ca_file else ""}
"""
        (self.folder / "config").write_text(config)
        acc = self.account
        host, port = acc.gateway
        line = f"<sip:{acc.user}@{acc.domain};transport={acc.transport}>"
        if acc.password is not None:
            line += f";auth_pass={acc.password}"
        line += f';outbound="sip:{host}:{port};transport={acc.transport}"'
        line += ";regint=600" if acc.register else ";regint=0"
        (self.folder / "accounts").write_text(line + "\n")

    async def start(self) -> None:
        self.write_config()
        exe = shutil.which("baresip")
        assert exe, "baresip is not installed (scripts/test installs it)"
        with (self.folder / "baresip.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self._command_prefix(),
                exe,
                "-f",
                str(self.folder),
                "-4",
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
            )
        for _ in range(100):
            try:
                self._reader, self._writer = await self._open_control()
                break
            except OSError:
                if self.process.returncode is not None:
                    raise RuntimeError(f"baresip {self.name} exited: {self.log_tail()}") from None
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"baresip {self.name} never opened its control port: {self.log_tail()}")
        self._pump = asyncio.create_task(self._read_events())

    def _command_prefix(self) -> tuple[str, ...]:
        """What runs baresip (a namespaced phone puts `ip netns exec NS` here)."""
        return ()

    async def _open_control(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.ctrl_port)

    def log_tail(self) -> str:
        path = self.folder / "baresip.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                # baresip un-registers on the way out; with the gateway gone that never completes.
                await asyncio.wait_for(self.process.wait(), 2)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def _read_events(self) -> None:
        assert self._reader is not None
        while True:
            length = await self._reader.readuntil(b":")
            body = await self._reader.readexactly(int(length[:-1]))
            await self._reader.readexactly(1)  # the netstring's ","
            message = json.loads(body)
            if message.get("response"):
                fut = self._responses.pop(str(message.get("token")), None)
                if fut is not None and not fut.done():
                    fut.set_result(message)
                continue
            async with self._changed:
                self.events.append(message)
                self._changed.notify_all()

    async def command(self, name: str, params: str = "") -> dict[str, Any]:
        assert self._writer is not None
        self._token += 1
        token = f"{self.name}-{self._token}"
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._responses[token] = fut
        payload = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._writer.write(str(len(payload)).encode() + b":" + payload + b",")
        await self._writer.drain()
        return await asyncio.wait_for(fut, 10)

    async def wait_event(self, kind: str, timeout: float = 15.0, after: int = 0) -> dict[str, Any]:
        """The first event of ``kind`` at index >= ``after`` (waits for it to arrive)."""

        def find() -> dict[str, Any] | None:
            for event in self.events[after:]:
                if event.get("type") == kind:
                    return event
            return None

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                seen = [e.get("type") for e in self.events]
                raise AssertionError(f"{self.name}: no {kind} within {timeout}s; events: {seen}") from None
            found = find()
            assert found is not None
            return found

    async def wait_registered(self, timeout: float = 15.0) -> None:
        """Registered with the gateway: the REGISTER_OK event, or `reginfo` saying OK.

        The event may fire before our control connection is up, so ask as well.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.count("REGISTER_OK"):
                return
            info = await self.command("reginfo")
            if "OK" in info.get("data", "").replace("\x1b[32m", ""):
                return
            try:
                await self.wait_event("REGISTER_OK", timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError(f"{self.name}: not registered within {timeout}s: {self.log_tail()[-500:]}")

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.get("type") == kind)

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def accept(self) -> None:
        await self.command("accept")

    async def hangup(self) -> None:
        await self.command("hangup")

    def received_audio(self) -> list[Path]:
        return sorted(self.recordings.glob("*-dec.wav"))
