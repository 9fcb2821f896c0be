"""The live-control core with a fake clock: grants, renewals, cut-off times, checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.live.core import Grant, LiveCall, LiveSchedule, cost_micros, next_grant
from tests.billing.tariffs import flat

ANSWER = datetime(2026, 10, 5, 2, 0, tzinfo=UTC)
PER_SECOND = flat("0.60", 1)  # 0.01 a second
SIXTY = flat("0.12", 60)


def test_a_grant_is_the_talk_time_the_credit_pays_for() -> None:
    g = next_grant(PER_SECOND, "86", "voice", ANSWER, Grant(0, 0, False), 1_000_000, 300, 14400)
    assert g == Grant(100, 1_000_000, True)  # 1.00 buys 100 s: final, no more credit
    g = next_grant(PER_SECOND, "86", "voice", ANSWER, Grant(0, 0, False), 5_000_000, 300, 14400)
    assert g == Grant(300, 3_000_000, False)  # a slice of 300 s; more may come
    g = next_grant(PER_SECOND, "86", "voice", ANSWER, g, 1_000_000, 300, 14400)
    assert g == Grant(400, 4_000_000, True)


def test_grants_are_whole_increments_and_never_shrink() -> None:
    g = next_grant(SIXTY, "86", "voice", ANSWER, Grant(0, 0, False), 300_000, 300, 14400)
    assert g == Grant(120, 240_000, True)  # 0.30 buys two whole minutes, not 150 s
    again = next_grant(SIXTY, "86", "voice", ANSWER, g, -50_000, 300, 14400)
    assert again.seconds == 120 and again.reserved == 240_000


def test_unlimited_accounts_get_slices_up_to_the_cap() -> None:
    g = next_grant(SIXTY, "86", "voice", ANSWER, Grant(14100, 0, False), None, 300, 14400)
    assert g == Grant(14400, cost_micros(SIXTY, "86", "voice", ANSWER, 14400), True)
    unrated = next_grant(None, "86", "voice", ANSWER, Grant(0, 0, False), None, 300, 14400)
    assert unrated == Grant(300, 0, False)


def schedule() -> LiveSchedule:
    return LiveSchedule(timedelta(seconds=30), timedelta(seconds=10), timedelta(milliseconds=500))


def test_the_schedule_renews_before_the_slice_ends_and_checkpoints() -> None:
    s = schedule()
    call = LiveCall("s1", "a", ANSWER, Grant(300, 3_000_000, False), True, ANSWER + timedelta(seconds=10))
    s.add(call)
    assert s.next_wakeup() == ANSWER + timedelta(seconds=10)
    assert s.due(ANSWER + timedelta(seconds=9)).checkpoint == ()
    assert s.due(ANSWER + timedelta(seconds=10)).checkpoint == ("s1:a",)
    call.checkpoint_at = ANSWER + timedelta(hours=1)
    assert s.next_wakeup() == ANSWER + timedelta(seconds=270)
    due = s.due(ANSWER + timedelta(seconds=270))
    assert (due.renew, due.cut_off) == (("s1:a",), ())


def test_a_final_grant_cuts_the_call_off_guard_before_its_end() -> None:
    s = schedule()
    call = LiveCall("s1", "a", ANSWER, Grant(100, 1_000_000, True), True, ANSWER + timedelta(hours=1))
    s.add(call)
    hang_up = ANSWER + timedelta(seconds=99, milliseconds=500)
    assert s.hang_up_at(call) == hang_up and s.next_wakeup() == hang_up
    assert s.due(hang_up - timedelta(microseconds=1)).cut_off == ()
    assert s.due(hang_up).cut_off == ("s1:a",)
    call.cut_off = True
    assert s.due(hang_up + timedelta(seconds=5)).cut_off == ()
    assert s.next_wakeup() == ANSWER + timedelta(hours=1)
    assert s.remove("s1:a") is call and s.next_wakeup() is None


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([PER_SECOND, SIXTY, flat("0.15", 60, 1, connect_fee="0.05"), flat("0.12", 30, 6, min_cost="0.3")]),
    st.integers(0, 5_000_000),
    st.lists(st.integers(-100_000, 2_000_000), max_size=6),
    st.integers(10, 600),
)
def test_grants_never_reserve_more_than_the_credit_offered(
    tariff: object, first: int, later: list[int], slice_s: int
) -> None:
    grant = Grant(0, 0, False)
    offered = 0
    for extra in [first, *later]:
        before = grant
        grant = next_grant(tariff, "86", "voice", ANSWER, grant, extra, slice_s, 14400)  # type: ignore[arg-type]
        offered = before.reserved + max(extra, 0)
        assert grant.seconds >= before.seconds and grant.reserved >= before.reserved
        if grant.seconds > before.seconds:
            assert grant.reserved <= offered
            assert grant.reserved == cost_micros(tariff, "86", "voice", ANSWER, grant.seconds)  # type: ignore[arg-type]
        if grant.final:
            break


def _scan(s: LiveSchedule, now: datetime) -> tuple[set[str], set[str], set[str], datetime | None]:
    """What the schedule must answer: a plain look at every call."""
    renew, cut, checkpoint, times = set(), set(), set(), []
    for key, call in s.calls.items():
        renew_at = s.renew_at(call)
        if renew_at is not None and renew_at <= now:
            renew.add(key)
        elif call.grant.final and not call.cut_off and s.hang_up_at(call) <= now:
            cut.add(key)
        if call.checkpoint_at <= now:
            checkpoint.add(key)
        times.append(s.wake_at(call))
    return renew, cut, checkpoint, min(times, default=None)


_steps = st.lists(
    st.tuples(
        st.sampled_from(["add", "remove", "checkpoint", "extend", "final", "cut_off", "tick"]),
        st.integers(0, 5),  # which call
        st.integers(0, 600),  # seconds
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_the_schedule_heap_answers_as_a_scan_of_every_call(steps: list[tuple[str, int, int]]) -> None:
    s = schedule()
    now = ANSWER
    for op, n, seconds in steps:
        key = f"s{n}:a"
        call = s.calls.get(key)
        if op == "add" and call is None:
            at = now + timedelta(seconds=seconds)
            s.add(LiveCall(f"s{n}", "a", now, Grant(seconds + 1, 0, False), True, at))
        elif op == "remove":
            s.remove(key)
        elif op == "tick":
            now += timedelta(seconds=seconds)
        elif call is not None and op == "checkpoint":
            # Later (as the controller only moves it): found when its old time comes.
            call.checkpoint_at = max(call.checkpoint_at, now) + timedelta(seconds=seconds)
        elif call is not None and op == "extend":
            call.grant = Grant(call.grant.seconds + seconds, 0, call.grant.final)
        elif call is not None and op == "final":
            call.grant = Grant(call.grant.seconds, 0, True)  # may wake sooner: told
            s.reschedule(call)
        elif call is not None and op == "cut_off":
            call.cut_off = True
        renew, cut, checkpoint, first = _scan(s, now)
        assert s.next_wakeup() == first
        due = s.due(now)
        assert (set(due.renew), set(due.cut_off), set(due.checkpoint)) == (renew, cut, checkpoint)
