"""The garbage collector, set for a long-running process that relays real-time media.

A full collection walks every object the collector tracks. What start-up builds (modules,
configuration, stores: about 75,000 objects) lives as long as the process, so walking it at
every full collection is waste, and the relay shares this event loop: a full collection is
a pause that every RTP stream of the process feels. ``settle_heap()``, called once start-up is
over, moves all of it out of the collector's reach (``gc.freeze``); the price is that a
start-up object that later becomes cyclic garbage is never freed, which is bounded by what
start-up built. ``GcPauses`` puts the pauses that remain on /metrics, by generation.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import CollectorRegistry, Histogram


def settle_heap() -> None:
    """After start-up: collect once, then keep every surviving object out of later collections."""
    gc.collect()
    gc.freeze()


class GcPauses:
    """Times each collection through ``gc.callbacks`` (removed again by ``close``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        histogram = Histogram(
            "seabridge_gc_pause_seconds",
            "Garbage collection pauses of the process (its event loop and relay stall meanwhile)",
            ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self._by_generation = [histogram.labels(str(g)) for g in range(3)]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._by_generation[info["generation"]].observe(time.perf_counter() - self._started)

    def close(self) -> None:
        gc.callbacks.remove(self._callback)
