"""Several SIP workers, one /metrics page (gateway/metrics_merge.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import SipMetrics
from gateway.metrics_merge import merge_exposition


def page(calls: int, in_progress: int, extra: bool = False) -> str:
    registry = CollectorRegistry()
    sip = SipMetrics(registry)
    sip.calls.labels("answered").inc(calls)
    sip.calls_in_progress.set(in_progress)
    if extra:
        Gauge("seabridge_worker_only", "a family only a worker has", registry=registry).set(7)
        Counter("seabridge_worker_events", "counted only there", registry=registry).inc(2)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_workers_samples_join_the_families_with_their_label() -> None:
    merged = merge_exposition(page(5, 1), [("1", page(3, 2, extra=True)), ("2", page(4, 0))]).decode()
    got = samples(merged)
    assert got[("seabridge_calls_total", (("disposition", "answered"),))] == 5
    assert got[("seabridge_calls_total", (("disposition", "answered"), ("worker", "1")))] == 3
    assert got[("seabridge_calls_total", (("disposition", "answered"), ("worker", "2")))] == 4
    assert got[("seabridge_calls_in_progress", (("worker", "1"),))] == 2
    assert got[("seabridge_worker_only", (("worker", "1"),))] == 7
    assert got[("seabridge_worker_events_total", (("worker", "1"),))] == 2
    # Each family once, as the exposition format requires (a parser would refuse a repeat).
    types = [line for line in merged.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_no_workers_leaves_the_page_as_it_was() -> None:
    own = page(5, 1)
    assert samples(merge_exposition(own, []).decode()) == samples(own)
