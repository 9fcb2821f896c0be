"""Building tunnel configurations and services for tests."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

from gateway.configschema import load_section
from gateway.tunnel.config import TunnelConfig


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the tunnel listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


FAST = {
    "probe_interval_ms": 100,
    "idle_probe_interval_ms": 300,
    "dead_after_ms": 500,
    "restore_after_ms": 1000,
    "keepalive_s": 1.0,
}


def tunnel_config(node: str, **values: Any) -> TunnelConfig:
    return load_section(TunnelConfig, {"enabled": True, "node": node, **FAST, **values}, "tunnel")


async def eventually(predicate: Callable[[], object], within: float = 10.0, step: float = 0.02) -> None:
    """Wait until ``predicate()`` holds (polling a counter or state), failing after ``within`` seconds."""
    async with asyncio.timeout(within):
        for _ in itertools.count():
            if predicate():
                return
            await asyncio.sleep(step)
