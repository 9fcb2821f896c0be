"""Building tunnel configurations and services for tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from gateway.configschema import load_section
from gateway.tunnel.config import TunnelConfig
from tests.support.ports import free_port  # noqa: F401  (tunnel tests import it from here)

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
