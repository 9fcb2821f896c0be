"""Keys, path monitor, shaper and retransmission cores, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tunnel.arq import ArqReceiver, ArqSender, ArqSettings, Dedup, unwrap
from gateway.tunnel.errors import AuthenticationFailed, ControlProtocolError
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.keys import KeyIdAllocator, KeyManager
from gateway.tunnel.pathmon import ActivePathChanged, MonitorSettings, PathMonitor, PathSpec, PathWentDown
from gateway.tunnel.shaper import PathShaper

from .fakenet import keyed_pair, rekey, session_exporter

# -- keys


def test_rekey_gives_matching_keys_both_ways() -> None:
    a, b = keyed_pair()
    assert a.send_key is not None and b.send_key is not None
    header = b"h" * 18
    frame = a.send_key.key.seal(0, header, b"to b")
    assert b.receive_keys[a.send_key.key_id].key.open(0, header, frame[18:]) == b"to b"
    frame = b.send_key.key.seal(0, header, b"to a")
    assert a.receive_keys[b.send_key.key_id].key.open(0, header, frame[18:]) == b"to a"


def test_rotation_keeps_old_receive_key_for_the_overlap() -> None:
    a, b = keyed_pair(overlap=5.0)
    old_a, old_b = a.send_key, b.send_key
    assert old_a is not None and old_b is not None
    rekey(a, b, None, now=100.0)
    assert a.send_key is not None and a.send_key.key_id != old_a.key_id
    assert old_a.key_id in b.receive_keys and old_b.key_id in a.receive_keys
    assert b.next_deadline() == 105.0
    assert b.expire(104.9) == [] and b.expire(105.0) == [old_a.key_id]
    assert old_a.key_id not in b.receive_keys and a.send_key.key_id in b.receive_keys


def test_new_session_keys_differ_and_rekey_is_due_by_age() -> None:
    a, b = keyed_pair()
    first = a.send_key
    assert first is not None
    assert not a.rekey_due(10.0) and a.rekey_due(3600.0)
    assert not b.rekey_due(1e9)  # only the initiator drives rotation
    rekey(a, b, b"tls-session-2", now=3600.0)
    assert a.send_key is not None and a.send_key.key_id != first.key_id


def test_rekey_protocol_errors() -> None:
    a, b = keyed_pair()
    with pytest.raises(ControlProtocolError):
        b.start_rekey()
    offer = a.start_rekey()
    with pytest.raises(ControlProtocolError):
        a.on_offer(offer, 0.0)
    lone = KeyManager(initiator=False, allocator=KeyIdAllocator())
    with pytest.raises(ControlProtocolError):  # no TLS session to derive from
        lone.on_offer(offer, 0.0)
    lone.attach(session_exporter(b"other session"))
    answer = lone.on_offer(offer, 0.0)
    a.on_answer(answer, 0.0)
    # Keys from a different TLS session do not interoperate.
    assert a.send_key is not None
    frame = a.send_key.key.seal(0, b"h" * 18, b"x")
    with pytest.raises(AuthenticationFailed):
        lone.receive_keys[a.send_key.key_id].key.open(0, b"h" * 18, frame[18:])


def test_key_ids_are_unique_per_node() -> None:
    allocator = KeyIdAllocator()
    ids = {allocator.allocate() for _ in range(1000)}
    assert len(ids) == 1000 and 0 not in ids


# -- path monitor

LEASED, SAT = PathSpec("leased", 10), PathSpec("satellite", 20)
RTT = {"leased": 0.15, "satellite": 0.6}


class Sim:
    """Answers the monitor's probes after each path's RTT unless the path is cut."""

    def __init__(self, monitor: PathMonitor) -> None:
        self.monitor = monitor
        self.now = 0.0
        self.cut: set[str] = set()
        self.pending: list[tuple[float, str, int]] = []
        self.events: list[object] = []

    def run_until(self, end: float) -> None:
        while True:
            t = min([self.monitor.next_deadline(), *(p[0] for p in self.pending)])
            if t > end:
                self.now = end
                return
            self.now = max(self.now, t)
            for reply in [p for p in self.pending if p[0] <= self.now]:
                self.pending.remove(reply)
                self.events += self.monitor.on_reply(reply[1], reply[2], self.now)
            self.events += self.monitor.poll(self.now)
            for probe in self.monitor.probes_due(self.now):
                if probe.path not in self.cut:
                    self.pending.append((self.now + RTT[probe.path], probe.path, probe.probe_id))


def test_failover_within_one_second_and_back() -> None:
    monitor = PathMonitor([LEASED, SAT], MonitorSettings(), 0.0)
    sim = Sim(monitor)
    sim.run_until(10.0)
    assert monitor.active == "leased"
    cut_at = 10.0
    sim.cut.add("leased")
    sim.run_until(cut_at + 1.0)
    assert monitor.active == "satellite"
    change = next(e for e in sim.events if isinstance(e, ActivePathChanged) and e.new == "satellite")
    assert change.at - cut_at <= 1.0
    assert any(isinstance(e, PathWentDown) and e.path == "leased" for e in sim.events)
    print(f"failover after {change.at - cut_at:.3f} s (fake clock)")
    # The leased line returns: traffic moves back after the hold-down, not at once.
    sim.cut.clear()
    restored_at = sim.now
    sim.run_until(restored_at + 1.0)
    assert monitor.active == "satellite"
    sim.run_until(restored_at + 5.0)
    assert monitor.active == "leased"
    back = [e for e in sim.events if isinstance(e, ActivePathChanged) and e.new == "leased"][-1]
    assert restored_at + monitor.settings.restore_after <= back.at <= restored_at + 4.0


@given(st.floats(5.0, 20.0), st.floats(0.0, 0.2))
def test_failover_bound_holds_whenever_the_cut_happens(cut_at: float, jitter: float) -> None:
    monitor = PathMonitor([LEASED, SAT], MonitorSettings(), 0.0)
    sim = Sim(monitor)
    sim.run_until(cut_at)
    assert monitor.active == "leased"
    sim.cut.add("leased")
    sim.run_until(cut_at + 1.0)
    assert monitor.active == "satellite"


def test_measures_rtt_loss_and_keeps_traffic_when_every_path_is_down() -> None:
    monitor = PathMonitor([LEASED, SAT], MonitorSettings(), 0.0)
    sim = Sim(monitor)
    sim.run_until(5.0)
    stats = {s.name: s for s in monitor.stats()}
    assert stats["leased"].srtt == pytest.approx(0.15) and stats["satellite"].srtt == pytest.approx(0.6)
    assert stats["leased"].loss == 0.0 and stats["leased"].active
    sim.cut |= {"leased", "satellite"}
    sim.run_until(20.0)
    stats = {s.name: s for s in monitor.stats()}
    assert not stats["leased"].up and not stats["satellite"].up
    assert stats["leased"].loss > 0.5
    assert monitor.send_paths() == ("satellite",)  # the last active path keeps the traffic


def test_duplicate_goes_on_the_two_best_paths() -> None:
    monitor = PathMonitor([LEASED, SAT], MonitorSettings(), 0.0)
    sim = Sim(monitor)
    sim.run_until(3.0)
    assert monitor.send_paths(duplicate=True) == ("leased", "satellite")
    assert monitor.send_paths() == ("leased",)


# -- shaper


def test_shaper_caps_rate_and_prefers_voice() -> None:
    shaper = PathShaper(rate_kbps=80, now=0.0, burst_ms=50)  # 10 000 bytes/s, burst 3000
    sent = shaper.submit(b"t" * 1000, TrafficClass.TV, 0.0) + shaper.submit(b"t" * 1000, TrafficClass.TV, 0.0)
    assert len(sent) == 2
    assert shaper.submit(b"t" * 1000, TrafficClass.TV, 0.0) == []  # bucket empty: queued
    # Voice jumps the waiting TV frame and takes the tokens left.
    assert shaper.submit(b"v" * 172, TrafficClass.VOICE, 0.0) == [b"v" * 172]
    deadline = shaper.next_deadline(0.0)
    assert deadline is not None and deadline > 0.0
    assert shaper.poll(deadline) == [b"t" * 1000]
    # Voice that waited beyond its budget is dropped, not sent late.
    shaper2 = PathShaper(rate_kbps=8, now=0.0)
    for _ in range(3):
        shaper2.submit(b"x" * 1000, TrafficClass.TV, 0.0)
    shaper2.submit(b"v" * 172, TrafficClass.VOICE, 0.0)
    shaper2.poll(1.0)
    assert shaper2.stats.dropped_frames >= 1


def test_shaper_uncapped_sends_everything() -> None:
    shaper = PathShaper(rate_kbps=0, now=0.0)
    assert all(shaper.submit(b"x" * 1400, TrafficClass.TV, 0.0) for _ in range(1000))


# -- retransmission


@given(st.integers(0, 65535), st.integers(-30000, 30000))
def test_unwrap_finds_nearest(reference_low: int, delta: int) -> None:
    reference = 5 * 65536 + reference_low
    assert unwrap((reference + delta) & 0xFFFF, reference) == reference + delta


def test_arq_receiver_nacks_gap_and_delivers_in_order() -> None:
    settings = ArqSettings(reorder_grace=0.03)
    rx, tx = ArqReceiver(settings), ArqSender(settings)
    for seq in range(5):
        tx.record(seq, bytes([seq]), 0.0, 0.6)
    assert rx.on_frame(0, b"\x00", 0.0) == [b"\x00"]
    assert rx.on_frame(2, b"\x02", 0.01) == []  # 1 missing: held
    assert rx.on_frame(3, b"\x03", 0.02) == []
    assert rx.poll(0.02, 0.6) == ([], [])  # within reorder grace
    assert rx.next_deadline(0.6) == pytest.approx(0.04)
    delivered, nacks = rx.poll(0.05, 0.6)
    assert delivered == [] and nacks == [1]
    assert rx.poll(0.1, 0.6) == ([], [])  # not again before a round trip
    assert tx.on_nack(nacks) == [(1, b"\x01")]
    assert rx.on_frame(1, b"\x01", 0.7) == [b"\x01", b"\x02", b"\x03"]
    assert rx.recovered == 1 and rx.lost == 0
    assert rx.on_frame(1, b"\x01", 0.8) == [] and rx.duplicates == 1


def test_arq_receiver_nacks_a_lost_first_frame() -> None:
    rx = ArqReceiver(ArqSettings(reorder_grace=0.03), first_seq=0)
    assert rx.on_frame(1, b"b", 0.0) == []  # seq 0 never came: a gap, not a fresh start
    assert rx.poll(0.05, 0.6) == ([], [0])
    assert rx.on_frame(0, b"a", 0.7) == [b"a", b"b"] and rx.recovered == 1


def test_arq_receiver_follows_a_flow_already_past_its_first_seq() -> None:
    rx = ArqReceiver(ArqSettings(), first_seq=0)
    assert rx.on_frame(65530, b"x", 0.0) == [b"x"]  # the sender kept the flow across our restart
    assert rx.on_frame(65531, b"y", 0.0) == [b"y"] and rx.poll(1.0, 0.6) == ([], [])


def test_arq_receiver_gives_up_after_the_window() -> None:
    settings = ArqSettings(min_window=1.0, window_rtts=4.0)
    rx = ArqReceiver(settings)
    rx.on_frame(10, b"a", 0.0)
    rx.on_frame(12, b"c", 0.0)
    rx.on_frame(13, b"d", 0.0)
    assert rx.poll(2.3, 0.6)[0] == []  # window is 4 x 0.6 = 2.4 s
    delivered, _ = rx.poll(2.4, 0.6)
    assert delivered == [b"c", b"d"] and rx.lost == 1
    assert rx.on_frame(14, b"e", 2.5) == [b"e"]


def test_arq_across_sequence_wrap() -> None:
    rx = ArqReceiver(ArqSettings())
    out = []
    for i in range(65530, 65536 + 10):
        out += rx.on_frame(i & 0xFFFF, i.to_bytes(4, "big"), 0.0)
    assert [int.from_bytes(p, "big") for p in out] == list(range(65530, 65546))


def test_sender_forgets_after_the_window() -> None:
    tx = ArqSender(ArqSettings(min_window=1.0, window_rtts=1.0))
    tx.record(1, b"a", 0.0, 0.1)
    tx.record(3, b"c", 1.1, 0.1)  # within window + two round trips: kept
    assert [s for s, _ in tx.on_nack([1])] == [1]
    tx.record(2, b"b", 5.0, 0.1)
    assert tx.on_nack([1, 2]) == [(2, b"b")] and tx.unavailable == 1


def test_dedup() -> None:
    d = Dedup()
    assert [d.first_time(s) for s in (1, 2, 1, 3, 2, 65535, 65535)] == [
        True,
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    assert d.duplicates == 3


def test_the_default_window_leaves_time_for_four_nack_rounds() -> None:
    # Over the satellite (3 % loss each way) a NACK round fails about 6 % of the time: three
    # rounds leave one lost frame in 5,000 unrepaired, four one in 80,000.
    rtt = 0.62
    rx = ArqReceiver(ArqSettings(), first_seq=0)
    assert rx.on_frame(0, b"a", 0.0) == [b"a"]
    assert rx.on_frame(2, b"c", 0.0) == []
    nacked_at: list[float] = []
    while len(nacked_at) < 4:
        now = rx.next_deadline(rtt)
        assert now is not None
        delivered, nacks = rx.poll(now, rtt)
        assert delivered == [] and rx.lost == 0  # not given up
        if nacks:
            assert nacks == [1]
            nacked_at.append(now)
    answer = nacked_at[-1] + rtt  # the fourth NACK's retransmission arrives a round trip later
    assert rx.poll(answer - 1e-3, rtt)[0] == []
    assert rx.on_frame(1, b"b", answer) == [b"b", b"c"] and rx.recovered == 1 and rx.lost == 0
