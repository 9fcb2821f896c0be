"""One /metrics page for a gateway of several SIP worker processes (sans-I/O: text in, text out).

Each worker keeps its own registry; at scrape time worker 0 asks the others for their
exposition text and adds their samples to its own families with a ``worker`` label, so a
family appears once (the format requires it) and ``sum(...)`` gives the gateway's total.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_exposition(own: str, others: Sequence[tuple[str, str]], label: str = "worker") -> bytes:
    """``own`` unchanged, plus each of ``others`` (label value, exposition text) labelled."""
    families: dict[str, Metric] = {}
    for family in text_string_to_metric_families(own):
        families[family.name] = family
    for value, text in others:
        for family in text_string_to_metric_families(text):
            target = families.get(family.name)
            if target is None:
                target = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            target.samples += [s._replace(labels={**s.labels, label: value}) for s in family.samples]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families.values())))
    return generate_latest(registry)
