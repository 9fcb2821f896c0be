"""Prometheus metrics of the TV service, read from its state at scrape time.

A collector, registered on the registry the gateway passes in (never the global one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from media.tv.service import TvService

_LABELS = ["channel", "name"]


class TvCollector(Collector):
    def __init__(self, service: TvService) -> None:
        self._service = service

    def describe(self) -> Iterator[Metric]:
        # Families without samples: registering must not touch the running service.
        yield from self._families()
        yield from self._dvr_families()

    def _families(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [
            GaugeMetricFamily("seabridge_tv_viewers", "Viewers of a channel (HLS and HTTP-TS)", labels=_LABELS),
            GaugeMetricFamily("seabridge_tv_http_ts_viewers", "Open HTTP-TS streams of a channel", labels=_LABELS),
            GaugeMetricFamily("seabridge_tv_channel_running", "1 while a channel pulls its source", labels=_LABELS),
            GaugeMetricFamily("seabridge_tv_active_source", "Index of the source in use (-1: none)", labels=_LABELS),
            CounterMetricFamily("seabridge_tv_bytes_in", "Bytes received from a channel's sources", labels=_LABELS),
            CounterMetricFamily("seabridge_tv_bytes_out", "Bytes sent to a channel's viewers", labels=_LABELS),
            CounterMetricFamily("seabridge_tv_source_switches", "Source failovers and recoveries", labels=_LABELS),
            CounterMetricFamily("seabridge_tv_segments", "HLS segments written", labels=_LABELS),
            CounterMetricFamily(
                "seabridge_tv_ingest_cpu_seconds",
                "CPU time of a channel's ingest (remux or transcode)",
                labels=_LABELS,
            ),
            CounterMetricFamily(
                "seabridge_tv_segment_errors", "HLS segments the disk refused (HTTP-TS unaffected)", labels=_LABELS
            ),
        ]

    def _dvr_families(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [
            GaugeMetricFamily(
                "seabridge_tv_dvr_recording",
                "1 while a recorded channel is recorded (0: disk full or failing)",
                labels=_LABELS,
            ),
            GaugeMetricFamily("seabridge_tv_dvr_bytes", "Bytes a channel's recording keeps on disk", labels=_LABELS),
            GaugeMetricFamily("seabridge_tv_dvr_seconds", "Seconds of a channel's recording on disk", labels=_LABELS),
            GaugeMetricFamily(
                "seabridge_tv_dvr_free_bytes", "Free bytes on the recording's disk at the last write", labels=_LABELS
            ),
            GaugeMetricFamily("seabridge_tv_dvr_viewers", "Time-shift and catch-up viewers", labels=_LABELS),
            CounterMetricFamily("seabridge_tv_dvr_segments_recorded", "Segments recorded", labels=_LABELS),
            CounterMetricFamily(
                "seabridge_tv_dvr_segments_skipped", "Segments not recorded (disk full or failing)", labels=_LABELS
            ),
            CounterMetricFamily("seabridge_tv_dvr_write_errors", "Failed recording writes", labels=_LABELS),
            CounterMetricFamily(
                "seabridge_tv_dvr_segments_removed", "Recorded segments removed for age or the byte cap", labels=_LABELS
            ),
        ]

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        (viewers, streams, running, active, bytes_in, bytes_out, switches, segments, cpu, seg_errors) = families
        for ch in self._service.channels.values():
            labels = [str(ch.number), ch.config.name]
            viewers.add_metric(labels, ch.viewer_count())
            streams.add_metric(labels, len(ch.fanout.viewers))
            running.add_metric(labels, 1 if ch.running else 0)
            source = ch.active_source
            active.add_metric(labels, -1 if source is None else source)
            bytes_in.add_metric(labels, ch.stats.bytes_in)
            bytes_out.add_metric(labels, ch.stats.bytes_out)
            switches.add_metric(labels, ch.stats.switches)
            segments.add_metric(labels, ch.stats.segments)
            cpu.add_metric(labels, ch.cpu_seconds_total)
            seg_errors.add_metric(labels, ch.stats.segment_errors)
        yield from families
        dvr = self._dvr_families()
        (recording, kept, seconds, free, dvr_viewers, recorded, skipped, errors, removed) = dvr
        for number, recorder in self._service.recorders.items():
            labels = [str(number), self._service.channels[number].config.name]
            window = recorder.window
            recording.add_metric(labels, 1 if recorder.state.recording else 0)
            kept.add_metric(labels, window.bytes)
            seconds.add_metric(labels, (window.end or 0) - (window.start or 0))
            if recorder.stats.free_bytes is not None:
                free.add_metric(labels, recorder.stats.free_bytes)
            dvr_viewers.add_metric(labels, recorder.viewer_count())
            recorded.add_metric(labels, recorder.stats.recorded)
            skipped.add_metric(labels, recorder.stats.skipped)
            errors.add_metric(labels, recorder.stats.write_errors)
            removed.add_metric(labels, recorder.stats.evicted + recorder.stats.expired)
        yield from dvr
