"""Network namespaces, veth pairs, delay lines, loss and rate limits for end-to-end tunnel tests.

Everything created carries a per-run prefix and is removed by ``Topology.close``,
which the fixture calls even when a test fails.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def child_env() -> dict[str, str]:
    return {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"}


class Process:
    """A child in a namespace, its stdout lines parsed as JSON into a queue, its stderr kept in a file."""

    def __init__(self, ns: str, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=child_env(),
            cwd=REPO,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                self.lines.put(json.loads(line))
            elif line:
                self.lines.put({"event": "text", "text": line})

    def wait_for(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """The first line (also looking at lines already seen) that satisfies ``predicate``."""
        for seen in self.events:
            if predicate(seen):
                self.events.remove(seen)
                return seen
        deadline = timeout
        while True:
            try:
                item = self.lines.get(timeout=deadline)
            except queue.Empty:
                raise TimeoutError(f"no matching output within {timeout} s; log: {self.tail()}") from None
            if predicate(item):
                return item
            self.events.append(item)

    def send(self, **cmd: Any) -> int:
        self._next_id += 1
        cmd["id"] = self._next_id
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._next_id

    def result(self, request_id: int, timeout: float = 60.0) -> dict[str, Any]:
        reply = self.wait_for(lambda item: item.get("id") == request_id, timeout)
        if not reply.get("ok"):
            raise RuntimeError(f"request {request_id} failed: {reply.get('error')}; log: {self.tail()}")
        return reply

    def call(self, timeout: float = 60.0, **cmd: Any) -> dict[str, Any]:
        return self.result(self.send(**cmd), timeout)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


@dataclass
class Topology:
    """site ==leased (75 ms)== hub == hq, and site ==satellite (300 ms, lossy, capped)== hub."""

    workdir: Path
    prefix: str = field(default_factory=lambda: "sb" + secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def ifname(self, tag: str) -> str:
        return f"{self.prefix}{tag}"  # at most 6 + 4 characters: under IFNAMSIZ

    def add_ns(self, role: str) -> str:
        name = self.ns(role)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.run(role, "ip", "link", "set", "lo", "up")
        return name

    def run(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(role), *args, check=check)

    def veth(self, a_role: str, a_if: str, b_role: str, b_if: str) -> None:
        a, b = self.ifname(a_if), self.ifname(b_if)
        sh(
            "ip",
            "link",
            "add",
            a,
            "netns",
            self.ns(a_role),
            "type",
            "veth",
            "peer",
            "name",
            b,
            "netns",
            self.ns(b_role),
        )
        for role, name in ((a_role, a), (b_role, b)):
            # Userspace bridges forward frames as they are: no checksum or segmentation offload.
            self.run(
                role,
                "ethtool",
                "-K",
                name,
                "tx",
                "off",
                "tso",
                "off",
                "gso",
                "off",
                "gro",
                "off",
                check=False,
            )
            self.run(role, "ip", "link", "set", name, "up")

    def address(self, role: str, ifname: str, cidr: str) -> None:
        self.run(role, "ip", "addr", "add", cidr, "dev", self.ifname(ifname))

    def delay_line(self, role: str, if_a: str, if_b: str, delay_ms: float) -> None:
        for name in (if_a, if_b):
            self.run(role, "ip", "link", "set", self.ifname(name), "promisc", "on")
        process = Process(
            self.ns(role),
            [
                sys.executable,
                "-m",
                "tests.tunnel.delaybridge",
                self.ifname(if_a),
                self.ifname(if_b),
                "--delay-ms",
                str(delay_ms),
            ],
            self.workdir / f"bridge-{role}.log",
        )
        self.processes.append(process)
        process.wait_for(lambda item: item.get("text") == "ready", 20)

    def nft(self, role: str, script: str) -> None:
        path = self.workdir / f"nft-{role}-{secrets.token_hex(3)}.nft"
        path.write_text(script)
        self.run(role, "nft", "-f", str(path))

    def start_agent(self, role: str, config_path: Path) -> Process:
        process = Process(
            self.ns(role),
            [sys.executable, "-m", "tests.tunnel.agent", str(config_path)],
            self.workdir / f"{role}.log",
        )
        self.processes.append(process)
        process.wait_for(lambda item: item.get("event") == "ready", 30)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()
