"""The relay's sans-I/O core: latching, strict source, routing, counters and RTP timeouts on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import PortsExhausted, RelayError
from media.ports import PortAllocator
from media.relay_core import LegTimedOut, MediaSession, RelayCore

PHONE_A = ("192.0.2.10", 4000)
PHONE_A_NAT = ("198.51.100.7", 61000)
PHONE_B = ("192.0.2.20", 5000)
INTRUDER = ("203.0.113.66", 4000)


def session() -> MediaSession:
    return MediaSession("s1", rtp_timeout_s=30)


def test_forwards_both_ways_to_sdp_addresses_then_to_latched_sources() -> None:
    s = session()
    s.set_remote("a", PHONE_A)
    s.set_remote("b", PHONE_B)
    a_rtp, b_rtp = s.stream("a", "rtp"), s.stream("b", "rtp")
    # B has not sent yet: A's packet goes to B's SDP address.
    assert a_rtp.received(PHONE_A_NAT, 172, now=1.0) == PHONE_B
    # A sent from behind a NAT: B's packets go back where A's came from, not to A's SDP address.
    assert b_rtp.received(PHONE_B, 172, now=1.02) == PHONE_A_NAT
    stats = s.stats()
    assert stats.a.rtp.source == PHONE_A_NAT and stats.a.rtp.sdp_address == PHONE_A
    assert (stats.a.rtp.packets_in, stats.a.rtp.bytes_in, stats.a.rtp.packets_out, stats.a.rtp.bytes_out) == (
        1,
        172,
        1,
        172,
    )
    assert stats.b.rtp.last_packet_at == 1.02 and stats.a.rtp.last_packet_at == 1.0


def test_strict_source_after_latching() -> None:
    s = session()
    s.set_remote("b", PHONE_B)
    a_rtp = s.stream("a", "rtp")
    assert a_rtp.received(PHONE_A, 100, 0.0) == PHONE_B
    assert a_rtp.received(INTRUDER, 100, 0.1) is None
    assert a_rtp.received(("192.0.2.10", 4002), 100, 0.1) is None  # same host, other port
    assert a_rtp.received(PHONE_A, 100, 0.2) == PHONE_B
    st_a = s.stats().a.rtp
    assert (st_a.packets_in, st_a.dropped, st_a.source) == (2, 2, PHONE_A)
    assert s.stats().b.rtp.packets_out == 2
    assert st_a.last_packet_at == 0.2  # dropped packets do not count as activity


def test_rtp_and_rtcp_latch_separately() -> None:
    s = session()
    s.set_remote("b", PHONE_B)
    assert s.stream("a", "rtp").received(PHONE_A, 100, 0.0) == PHONE_B
    # RTCP from a different port of the same phone latches on its own stream and goes to B's port + 1.
    assert s.stream("a", "rtcp").received(("192.0.2.10", 4001), 60, 0.0) == ("192.0.2.20", 5001)
    assert s.stream("a", "rtcp").received(PHONE_A, 60, 0.0) is None
    stats = s.stats()
    assert stats.a.rtcp.source == ("192.0.2.10", 4001) and stats.a.rtcp.dropped == 1
    assert stats.b.rtcp.packets_out == 1 and stats.b.rtp.packets_out == 1


def test_explicit_rtcp_address_and_ipv6() -> None:
    s = session()
    s.set_remote("b", ("2001:db8::2", 5000, 0, 0), ("2001:db8::2", 7000, 0, 0))
    assert s.stream("a", "rtp").received(("2001:db8::1", 9, 0, 0), 1, 0) == ("2001:db8::2", 5000, 0, 0)
    assert s.stream("a", "rtcp").received(("2001:db8::1", 9, 0, 0), 1, 0) == ("2001:db8::2", 7000, 0, 0)
    s.set_remote("a", ("2001:db8::1", 6000, 0, 0))
    assert s.stats().a.rtcp.sdp_address == ("2001:db8::1", 6001, 0, 0)


def test_unknown_destination_is_unroutable_until_the_peer_is_known() -> None:
    s = session()
    a_rtp = s.stream("a", "rtp")
    assert a_rtp.received(PHONE_A, 100, 0.0) is None
    assert s.stats().a.rtp.unroutable == 1 and s.stats().a.rtp.packets_in == 1
    # B's first packet latches B, and from then on A's packets go there.
    assert s.stream("b", "rtp").received(PHONE_B, 100, 0.1) == PHONE_A
    assert a_rtp.received(PHONE_A, 100, 0.2) == PHONE_B


@pytest.mark.parametrize("hold", [("0.0.0.0", 4000), ("192.0.2.10", 0), None])
def test_hold_or_unknown_sdp_address_means_no_destination(hold: tuple[str, int] | None) -> None:
    s = session()
    s.set_remote("b", hold)
    assert s.stream("a", "rtp").received(PHONE_A, 100, 0.0) is None
    assert s.stats().b.rtp.sdp_address is None and s.stats().b.rtcp.sdp_address is None


def test_first_sdp_keeps_an_early_latch_but_a_moved_sdp_releases_it() -> None:
    s = session()
    s.set_remote("a", PHONE_A)
    b_rtp = s.stream("b", "rtp")
    assert b_rtp.received(PHONE_B, 100, 0.0) == PHONE_A  # early media before B's SDP reached us
    s.set_remote("b", ("192.0.2.21", 5000))
    assert s.stats().b.rtp.source == PHONE_B
    s.set_remote("b", ("192.0.2.22", 5004))  # re-INVITE moved B's media
    assert s.stats().b.rtp.source is None and s.stats().b.rtcp.source is None
    assert s.stream("a", "rtp").received(PHONE_A, 100, 0.1) == ("192.0.2.22", 5004)
    assert b_rtp.received(("192.0.2.22", 5004), 100, 0.2) == PHONE_A
    assert b_rtp.received(PHONE_B, 100, 0.3) is None
    # The same SDP address again (a session refresh) keeps the latch.
    s.set_remote("b", ("192.0.2.22", 5004))
    assert s.stats().b.rtp.source == ("192.0.2.22", 5004)


def test_send_failure_is_not_counted_as_sent() -> None:
    s = session()
    s.set_remote("b", PHONE_B)
    assert s.stream("a", "rtp").received(PHONE_A, 100, 0.0) == PHONE_B
    s.stream("b", "rtp").send_failed(100)
    stats = s.stats().b.rtp
    assert (stats.packets_out, stats.bytes_out, stats.send_errors) == (0, 0, 1)


def test_bad_arguments() -> None:
    s = session()
    with pytest.raises(RelayError, match="unknown leg"):
        s.set_remote("c", PHONE_A)  # type: ignore[arg-type]
    with pytest.raises(RelayError, match="out of range"):
        s.set_remote("a", ("192.0.2.1", 70000))
    with pytest.raises(RelayError):
        MediaSession("x", rtp_timeout_s=0)
    core = RelayCore(30)
    core.add("x")
    with pytest.raises(RelayError, match="already exists"):
        core.add("x")
    with pytest.raises(RelayError, match="no media session"):
        core.get("y")


def test_timeout_not_armed_never_fires() -> None:
    core = RelayCore(rtp_timeout_s=30)
    core.add("s1")
    assert core.get_timer() is None
    assert core.handle_timer(10_000.0) == []


def test_leg_times_out_after_silence_and_only_once() -> None:
    core = RelayCore(rtp_timeout_s=30)
    s = core.add("s1")
    s.set_remote("a", PHONE_A)
    s.set_remote("b", PHONE_B)
    core.arm_timeout("s1", now=100.0)
    assert core.get_timer() == 130.0
    a_rtp, b_rtp = s.stream("a", "rtp"), s.stream("b", "rtp")
    # Both talk until t=110, then B goes silent while A keeps talking.
    for t in range(101, 111):
        a_rtp.received(PHONE_A, 172, float(t))
        b_rtp.received(PHONE_B, 172, float(t))
    for t in range(111, 200):
        a_rtp.received(PHONE_A, 172, float(t))
        if t == 129:
            # The heap entry (130) is stale: nothing is due, the session is re-queued at B's deadline.
            assert core.handle_timer(130.0) == []
            assert core.get_timer() == 140.0
            assert s.stats().b.timeout_deadline == 140.0
        if t == 139:
            assert core.handle_timer(139.999) == []
    events = core.handle_timer(140.0)
    assert events == [LegTimedOut("s1", "b", 30.0)]
    assert s.stats().b.timed_out and not s.stats().a.timed_out
    # A is still talking (last packet at 199): its deadline is 229; B never fires again.
    assert core.get_timer() == 229.0
    assert core.handle_timer(228.0) == []
    assert core.handle_timer(500.0) == [LegTimedOut("s1", "a", 301.0)]
    assert core.get_timer() is None and core.handle_timer(1000.0) == []


def test_rearming_resets_a_timed_out_leg() -> None:
    core = RelayCore(rtp_timeout_s=5)
    core.add("s1")
    core.arm_timeout("s1", 0.0)
    assert [e.leg for e in core.handle_timer(5.0)] == ["a", "b"]
    core.arm_timeout("s1", 10.0)
    assert core.get_timer() == 15.0
    assert not core.get("s1").stats().a.timed_out
    assert len(core.handle_timer(15.0)) == 2


def test_rtcp_does_not_keep_a_leg_alive() -> None:
    core = RelayCore(rtp_timeout_s=5)
    s = core.add("s1")
    core.arm_timeout("s1", 0.0)
    s.stream("a", "rtcp").received(PHONE_A, 60, 4.0)
    assert {e.leg for e in core.handle_timer(5.0)} == {"a", "b"}


def test_removed_session_never_fires_and_many_sessions_fire_in_order() -> None:
    core = RelayCore(rtp_timeout_s=10)
    for i in range(100):
        core.add(f"s{i}")
        core.arm_timeout(f"s{i}", float(i))
    stats = core.remove("s5")
    assert stats.session_id == "s5" and "s5" not in core and len(core) == 99
    fired = []
    t = 0.0
    while (deadline := core.get_timer()) is not None:
        t = deadline
        fired.extend(e.session_id for e in core.handle_timer(t) if e.leg == "a")
    assert fired == [f"s{i}" for i in range(100) if i != 5]
    assert t == 109.0


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([PHONE_A, PHONE_B, INTRUDER])), max_size=60))
def test_counters_balance(packets: list[tuple[str, tuple[str, int]]]) -> None:
    """Every packet is relayed, dropped or unroutable, and what one leg takes in the other sends out."""
    s = session()
    s.set_remote("a", PHONE_A)
    for i, (leg, source) in enumerate(packets):
        s.stream(leg, "rtp").received(source, 10, float(i))  # type: ignore[arg-type]
    stats = s.stats()
    for near, far in ((stats.a.rtp, stats.b.rtp), (stats.b.rtp, stats.a.rtp)):
        assert near.packets_in + near.dropped == sum(
            1 for leg, _ in packets if leg == ("a" if near is stats.a.rtp else "b")
        )
        assert near.packets_in == far.packets_out + near.unroutable


def test_port_pairs_even_reused_last_and_exhaustion() -> None:
    ports = PortAllocator(20001, 20008)  # pairs 20002/3, 20004/5, 20006/7
    assert ports.capacity == 3
    got = [ports.allocate() for _ in range(3)]
    assert got == [20002, 20004, 20006]
    with pytest.raises(PortsExhausted, match="20001-20008"):
        ports.allocate()
    ports.release(20004)
    assert ports.in_use == 2
    assert ports.allocate() == 20004
    with pytest.raises(RelayError):
        ports.release(20010)
    with pytest.raises(RelayError):
        PortAllocator(20001, 20002)
