"""The gateway's Prometheus metrics, on a registry built in main (no global registry)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class SipMessageCounts:
    """SIP messages received and sent: plain integers on the hot path (a client library
    counter costs four Python calls and a lock per increment, about twenty per call set-up),
    read when /metrics is scraped."""

    def __init__(self) -> None:
        self.received = 0
        self.sent = 0


class _SipMessagesCollector(Collector):
    def __init__(self, counts: SipMessageCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("seabridge_sip_messages", "SIP messages by direction", labels=["direction"])
        family.add_metric(["in"], self._counts.received)
        family.add_metric(["out"], self._counts.sent)
        yield family


class SipMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.parse_errors = Counter("seabridge_sip_parse_errors", "SIP datagrams that did not parse", registry=registry)
        self.messages = SipMessageCounts()
        registry.register(_SipMessagesCollector(self.messages))
        self.calls_in_progress = Gauge(
            "seabridge_calls_in_progress", "Calls being set up or connected", registry=registry
        )
        self.calls = Counter("seabridge_calls", "Ended calls by disposition", ["disposition"], registry=registry)
        self.auth_failures = Counter(
            "seabridge_sip_auth_failures", "Digest checks that failed", ["method"], registry=registry
        )
        self.transactions = Gauge("seabridge_sip_transactions", "Live SIP transactions", registry=registry)
        self.overload_refusals = Counter(
            "seabridge_sip_overload_refusals",
            "New calls refused with 503: the SIP queue was older than [sip] overload_queue_delay_ms",
            registry=registry,
        )


class _CallbackCollector(Collector):
    """Reads values owned elsewhere (relay counters, binding counts) at scrape time."""

    def __init__(
        self,
        gauges: dict[str, tuple[str, Callable[[], float]]],
        counters: dict[str, tuple[str, Callable[[], float]]],
    ):
        self._gauges = gauges
        self._counters = counters

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        for name, (doc, fn) in self._gauges.items():
            yield GaugeMetricFamily(name, doc, value=fn())
        for name, (doc, fn) in self._counters.items():
            yield CounterMetricFamily(name, doc, value=fn())


def register_callbacks(
    registry: CollectorRegistry,
    gauges: dict[str, tuple[str, Callable[[], float]]] | None = None,
    counters: dict[str, tuple[str, Callable[[], float]]] | None = None,
) -> None:
    registry.register(_CallbackCollector(gauges or {}, counters or {}))


def process_gauges(loop: asyncio.AbstractEventLoop) -> dict[str, tuple[str, Callable[[], float]]]:
    """Open file descriptors and asyncio tasks: what leaks show up in first."""
    return {
        "seabridge_open_fds": (
            "Open file descriptors of the gateway process",
            lambda: float(len(os.listdir("/proc/self/fd"))),
        ),
        "seabridge_asyncio_tasks": ("Live asyncio tasks", lambda: float(len(asyncio.all_tasks(loop)))),
    }
