"""Prometheus figures for the tunnel, read from the service at scrape time (registry passed in)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.tunnel.service import TunnelService

_DROPS = (
    "replayed",
    "tampered",
    "malformed",
    "unknown_key",
    "unknown_flow",
    "no_key",
    "oversized",
    "duplicates",
)


class TunnelCollector(Collector):
    def __init__(self, service: TunnelService) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self.service
        drops = CounterMetricFamily(
            "seabridge_tunnel_frames_dropped",
            "Received frames dropped, by link and reason",
            labels=["peer", "reason"],
        )
        node_drops = CounterMetricFamily(
            "seabridge_tunnel_node_dropped",
            "Frames or peers refused before a link was known",
            labels=["reason"],
        )
        up = GaugeMetricFamily("seabridge_tunnel_link_up", "Control channel up and keyed", labels=["peer"])
        rotations = CounterMetricFamily("seabridge_tunnel_key_rotations", "Media key rotations", labels=["peer"])
        resent = CounterMetricFamily("seabridge_tunnel_retransmitted_frames", "Frames resent on NACK", labels=["peer"])
        lost = CounterMetricFamily("seabridge_tunnel_arq_lost_frames", "TV/control frames given up", labels=["peer"])
        path_up = GaugeMetricFamily("seabridge_tunnel_path_up", "Path answers probes", labels=["peer", "path"])
        active = GaugeMetricFamily("seabridge_tunnel_path_active", "Path carries the traffic", labels=["peer", "path"])
        rtt = GaugeMetricFamily("seabridge_tunnel_path_rtt_seconds", "Smoothed probe RTT", labels=["peer", "path"])
        jitter = GaugeMetricFamily("seabridge_tunnel_path_jitter_seconds", "Probe RTT jitter", labels=["peer", "path"])
        loss = GaugeMetricFamily("seabridge_tunnel_path_loss_ratio", "Unanswered probes", labels=["peer", "path"])
        tx = CounterMetricFamily("seabridge_tunnel_path_tx_bytes", "Bytes sent", labels=["peer", "path"])
        rx = CounterMetricFamily("seabridge_tunnel_path_rx_bytes", "Bytes received", labels=["peer", "path"])
        flows = GaugeMetricFamily("seabridge_tunnel_flows", "Open flows", labels=["kind"])
        pending = GaugeMetricFamily("seabridge_tunnel_pending_messages", "Messages awaiting acknowledgement")
        for reason in ("unknown_key", "malformed", "peers_refused"):
            node_drops.add_metric([reason], getattr(s.counters, reason))
        for name, link in s.links.items():
            totals = link.core.flow_totals()
            for reason in _DROPS:
                drops.add_metric([name, reason], getattr(totals, reason))
            up.add_metric([name], 1.0 if link.ready.is_set() else 0.0)
            rotations.add_metric([name], link.core.keys.rotations)
            resent.add_metric([name], totals.retransmitted)
            lost.add_metric([name], totals.arq_lost)
            for stats in link.core.path_stats():
                labels = [name, stats.name]
                counters = link.core.path_counters[stats.name]
                path_up.add_metric(labels, float(stats.up))
                active.add_metric(labels, float(stats.active))
                if stats.srtt is not None:
                    rtt.add_metric(labels, stats.srtt)
                if stats.jitter is not None:
                    jitter.add_metric(labels, stats.jitter)
                loss.add_metric(labels, stats.loss)
                tx.add_metric(labels, counters.tx_bytes)
                rx.add_metric(labels, counters.rx_bytes)
        flows.add_metric(["local"], s.switch.local_count)
        flows.add_metric(["transit"], s.switch.transit_count)
        pending.add_metric([], s.pending_messages)
        yield from (
            drops,
            node_drops,
            up,
            rotations,
            resent,
            lost,
            path_up,
            active,
            rtt,
            jitter,
            loss,
            tx,
            rx,
        )
        yield from (flows, pending)


def register_metrics(service: TunnelService, registry: CollectorRegistry) -> TunnelCollector:
    collector = TunnelCollector(service)
    registry.register(collector)
    return collector
