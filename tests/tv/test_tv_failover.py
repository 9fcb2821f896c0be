"""Source failover and on-demand decisions, on a fake clock."""

from __future__ import annotations

from media.tv.demand import Demand, ViewerTracker
from media.tv.failover import ProbeStarted, ProbeStopped, SourceSelector, SourceStarted, SourceStopped


def selector(count: int = 3) -> SourceSelector:
    return SourceSelector(count=count, stall_s=2.0, start_timeout_s=5.0, retry_primary_s=30.0)


def run_until(sel: SourceSelector, end: float, step: float = 0.05, progress: bool = False) -> list:
    """Tick the selector every `step` (feeding progress if asked) and collect the actions."""
    actions = []
    t = 0.0 if not hasattr(sel, "_t") else sel._t  # type: ignore[attr-defined]
    while t < end:
        t = round(t + step, 6)
        if progress:
            sel.progress(t)
        actions += [(t, a) for a in sel.tick(t)]
    sel._t = t  # type: ignore[attr-defined]
    return actions


def test_starts_on_the_first_source() -> None:
    sel = selector()
    assert sel.start(0.0) == [SourceStarted(0, "start")]
    assert sel.deadline() == 5.0


def test_stall_fails_over_within_stall_time() -> None:
    sel = selector()
    sel.start(0.0)
    sel.progress(1.0)
    actions = []
    t = 1.0
    while not actions:
        t = round(t + 0.01, 6)
        actions = sel.tick(t)
    assert actions == [SourceStopped(0), SourceStarted(1, "stalled")]
    assert t - 1.0 <= 2.0 + 0.01
    assert sel.switches == 1


def test_source_that_never_delivers_fails_after_start_timeout() -> None:
    sel = selector()
    sel.start(0.0)
    assert sel.tick(4.99) == []
    assert sel.tick(5.0) == [SourceStopped(0), SourceStarted(1, "stalled")]


def test_reader_error_fails_over_at_once() -> None:
    sel = selector()
    sel.start(0.0)
    sel.progress(0.5)
    assert sel.failed(0, 0.6) == [SourceStopped(0), SourceStarted(1, "failed")]


def test_probes_primary_and_comes_back() -> None:
    sel = selector()
    sel.start(0.0)
    sel.failed(0, 0.0)
    sel.progress(1.0)
    assert sel.deadline() == 3.0  # stall deadline comes first
    for t in (2.0, 10.0, 20.0):
        sel.progress(t)
        assert sel.tick(t) == []
    sel.progress(30.0)
    assert sel.tick(30.0) == [ProbeStarted(0)]
    # The probe fails to deliver: abandoned after the start timeout, retried later.
    sel.progress(35.0)
    assert sel.tick(35.0) == [ProbeStopped(0)]
    sel.progress(64.9)
    assert sel.tick(64.9) == []
    sel.progress(65.0)
    assert sel.tick(65.0) == [ProbeStarted(0)]
    assert sel.probe_ready(0, 66.0) == [SourceStopped(1), SourceStarted(0, "recovered", from_probe=True)]
    assert sel.active == 0 and sel.switches == 2


def test_all_sources_down_backs_off_instead_of_hammering() -> None:
    sel = selector(2)
    sel.start(0.0)
    starts = []
    t = 0.0
    for a in sel.failed(0, t):
        starts.append((t, a))
    for _ in range(10):
        for a in sel.failed(sel.active if sel.active is not None else -1, t):
            starts.append((t, a))
        while sel.active is None:
            t = round(t + 0.01, 6)
            starts += [(t, a) for a in sel.tick(t)]
    opens = [(t, a.index) for t, a in starts if isinstance(a, SourceStarted)]
    gaps = [b[0] - a[0] for a, b in zip(opens, opens[1:], strict=False)]
    assert max(gaps) >= 8.0  # the backoff grew
    assert max(gaps) <= 15.01


def test_single_source_restarts_after_failure() -> None:
    sel = selector(1)
    sel.start(0.0)
    assert sel.failed(0, 1.0) == [SourceStopped(0), SourceStarted(0, "failed")]
    assert sel.switches == 0
    assert sel.failed(0, 1.5) == [SourceStopped(0)]  # failed again at once: back off
    assert sel.tick(2.49) == []
    assert sel.tick(2.5) == [SourceStarted(0, "failed")]


def test_demand_idle_timeout() -> None:
    d = Demand(idle_timeout_s=10.0)
    assert not d.wanted(0.0)
    d.touched(1.0)
    assert d.wanted(10.9) and not d.wanted(11.0)
    assert d.deadline() == 11.0
    d.stream_opened(2.0)
    assert d.wanted(100.0) and d.deadline() is None
    d.stream_closed(100.0)
    assert d.wanted(109.9) and not d.wanted(110.0)
    assert Demand(idle_timeout_s=1.0, always_on=True).wanted(1e9)


def test_viewer_tracker_counts_recent_distinct_viewers() -> None:
    v = ViewerTracker(presence_s=10.0)
    v.seen("tok1|10.0.0.1", 0.0)
    v.seen("tok1|10.0.0.1", 5.0)
    v.seen("tok2|10.0.0.2", 6.0)
    assert v.count(6.0) == 2
    assert v.count(15.5) == 1
    v.forget("tok2|")
    assert v.count(15.5) == 0


def test_hls_source_gets_grace_for_its_segment_bursts() -> None:
    sel = selector()
    sel.start(0.0)
    sel.set_grace(0, 12.0)  # 6-second segments
    sel.progress(1.0)
    assert sel.deadline() == 15.0
    assert sel.tick(14.9) == []
    assert sel.tick(15.0) == [SourceStopped(0), SourceStarted(1, "stalled")]
