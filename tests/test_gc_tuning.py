from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from gateway.gc_tuning import YOUNG_THRESHOLD, GcPauses, settle_heap


def test_collections_are_timed_by_generation_until_closed() -> None:
    registry = CollectorRegistry()

    def count(generation: str) -> float:
        return registry.get_sample_value("seabridge_gc_pause_seconds_count", {"generation": generation}) or 0.0

    pauses = GcPauses(registry)
    try:
        gc.collect(0)
        gc.collect()
        assert count("0") >= 1 and count("2") >= 1
        total = registry.get_sample_value("seabridge_gc_pause_seconds_sum", {"generation": "2"})
        assert total is not None and total > 0
    finally:
        pauses.close()
    seen = count("2")
    gc.collect()
    assert count("2") == seen


def test_settling_keeps_what_start_up_built_out_of_later_collections() -> None:
    assert gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 1000  # this test process's modules, at least
        assert gc.get_count()[0] < 100  # and the young generation starts empty
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
