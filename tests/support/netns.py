"""An emulated long link: the host <-> a delay bridge namespace <-> a far namespace.

    host (HOST_ADDRESS on veth "r") -- [mid namespace: delay_bridge] -- far namespace (FAR_ADDRESS on veth "f")

Names are unique per run and everything is deleted on ``close()``, also after
a failed test. Transmit checksum offload is turned off on the endpoints:
frames that cross a userspace bridge carry no checksum otherwise.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _in(ns: str, *cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True, text=True)


@dataclass
class LongLink:
    delay: float  # one way, seconds
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    bridge: subprocess.Popen[str] | None = None
    subnet: int = 0

    @property
    def far_ns(self) -> str:
        return f"sbfar{self.tag}"

    @property
    def mid_ns(self) -> str:
        return f"sbmid{self.tag}"

    @property
    def host_address(self) -> str:
        return f"10.{self.subnet}.{int(self.tag[:2], 16)}.1"

    @property
    def far_address(self) -> str:
        return f"10.{self.subnet}.{int(self.tag[:2], 16)}.2"

    def open(self) -> LongLink:
        self.subnet = 96 + int(self.tag[2:4], 16) % 64
        host, mid_a, mid_b, far = (f"sb{self.tag}{x}" for x in "rabf")
        try:
            _ip("netns", "add", self.mid_ns)
            _ip("netns", "add", self.far_ns)
            _ip("link", "add", host, "type", "veth", "peer", "name", mid_a)
            _ip("link", "add", far, "type", "veth", "peer", "name", mid_b)
            _ip("link", "set", mid_a, "netns", self.mid_ns)
            _ip("link", "set", mid_b, "netns", self.mid_ns)
            _ip("link", "set", far, "netns", self.far_ns)
            _ip("addr", "add", f"{self.host_address}/24", "dev", host)
            _ip("link", "set", host, "up")
            _in(self.far_ns, "ip", "addr", "add", f"{self.far_address}/24", "dev", far)
            _in(self.far_ns, "ip", "link", "set", far, "up")
            _in(self.far_ns, "ip", "link", "set", "lo", "up")
            for name in (mid_a, mid_b):
                _in(self.mid_ns, "ip", "link", "set", name, "up")
            subprocess.run(["ethtool", "-K", host, "tx", "off"], check=True, capture_output=True)
            _in(self.far_ns, "ethtool", "-K", far, "tx", "off")
            command = [sys.executable, "-m", "tests.support.delay_bridge", mid_a, mid_b, str(self.delay)]
            self.bridge = subprocess.Popen(
                ["ip", "netns", "exec", self.mid_ns, *command],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            assert self.bridge.stdout is not None
            line = self.bridge.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"delay bridge did not start: {line}")
        except BaseException:
            self.close()
            raise
        return self

    def wrapper(self, folder: Path, program: str) -> Path:
        """An executable that runs ``program`` inside the far namespace (for Playwright's executable_path)."""
        path = folder / f"in-{self.far_ns}-{Path(program).name}"
        path.write_text(f'#!/bin/sh\nexec ip netns exec {self.far_ns} {program} "$@"\n')
        path.chmod(0o755)
        return path

    def close(self) -> None:
        if self.bridge is not None and self.bridge.poll() is None:
            self.bridge.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.bridge.wait(5)
            if self.bridge.poll() is None:
                self.bridge.kill()
                self.bridge.wait()
        if self.bridge is not None and self.bridge.stdout is not None:
            self.bridge.stdout.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", f"sb{self.tag}r")  # deleting one end of a veth pair removes both
        for ns in (self.far_ns, self.mid_ns):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)
