"""sipp (Debian's sip-tester) as a real SIP peer: scenarios from tests/sipp, run to completion."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port

SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"


@dataclass(frozen=True)
class SippResult:
    returncode: int
    output: str
    messages: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Sipp:
    """One sipp process; ``run`` waits for it, ``start``/``wait``/``stop`` keep it in the background."""

    def __init__(
        self,
        target: tuple[str, int],
        folder: Path,
        scenario: str,
        *,
        keys: dict[str, str] | None = None,
        calls: int = 1,
        rate: float = 10,
        local_port: int | None = None,
        extra: tuple[str, ...] = (),
        timeout_s: int = 60,
    ) -> None:
        exe = shutil.which("sipp")
        assert exe, "sipp is not installed (scripts/test installs sip-tester)"
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.local_port = local_port or free_port()
        self.media_port = free_port()
        self.messages = folder / f"sipp-{self.local_port}-messages.log"
        args = [exe, f"{target[0]}:{target[1]}", "-i", "127.0.0.1", "-p", str(self.local_port)]
        args += ["-cp", str(free_port()), "-mp", str(self.media_port), "-nostdin"]
        if scenario.endswith(".xml"):
            # sipp does not expand keywords inside [authentication ...]: fill {{name}} ourselves.
            text = (SCENARIOS / scenario).read_text()
            for name, value in (keys or {}).items():
                text = text.replace("{{" + name + "}}", value)
            rendered = folder / f"{self.local_port}-{Path(scenario).name}"  # scenario may be a path
            rendered.write_text(text)
            args += ["-sf", str(rendered)]
        else:
            args += ["-sn", scenario]
        for name, value in (keys or {}).items():
            args += ["-key", name, value]
        args += ["-m", str(calls), "-r", str(rate), "-timeout", f"{timeout_s}s", "-timeout_error"]
        args += ["-trace_msg", "-message_file", str(self.messages), *extra]
        self.args = args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.args,
            cwd=self.folder,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def wait(self, timeout: float = 120) -> SippResult:
        assert self.process is not None
        try:
            out, _ = await asyncio.wait_for(self.process.communicate(), timeout)
        except TimeoutError:
            await self.stop()
            raise AssertionError(f"sipp did not finish within {timeout}s: {' '.join(self.args)}") from None
        messages = self.messages.read_text(errors="replace") if self.messages.exists() else ""
        return SippResult(self.process.returncode or 0, out.decode(errors="replace"), messages)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def run(self, timeout: float = 120) -> SippResult:
        await self.start()
        return await self.wait(timeout)
