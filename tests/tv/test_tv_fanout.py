"""HTTP-TS fan-out: new viewers start at a keyframe, slow ones are cut off."""

from __future__ import annotations

import asyncio

from media.tv.fanout import Fanout


async def test_new_viewer_starts_at_the_last_keyframe() -> None:
    fan = Fanout(max_backlog=10_000)
    early = fan.subscribe("t1", "a")
    fan.publish(b"mid-gop")  # nobody can decode this: the early viewer waits
    fan.random_access(b"PSI")
    fan.publish(b"KEY")
    fan.publish(b"P1")
    late = fan.subscribe("t2", "b")
    fan.publish(b"P2")
    assert await early.next_data() == b"PSIKEYP1P2"
    assert await late.next_data() == b"PSIKEYP1P2"


async def test_viewer_waits_for_data_and_ends_when_closed() -> None:
    fan = Fanout(max_backlog=10_000)
    fan.random_access(b"")
    viewer = fan.subscribe("t", "a")
    waiting = asyncio.ensure_future(viewer.next_data())
    await asyncio.sleep(0)
    assert not waiting.done()
    fan.publish(b"x")
    assert await waiting == b"x"
    assert fan.close_where({"t"}, "token revoked") == 1
    assert await viewer.next_data() == b"" and viewer.reason == "token revoked"
    assert not fan.viewers


async def test_slow_viewer_is_cut_off_others_keep_going() -> None:
    fan = Fanout(max_backlog=1000)
    fan.random_access(b"")
    slow, fast = fan.subscribe("t1", "a"), fan.subscribe("t2", "b")
    for _ in range(5):
        fan.publish(b"x" * 300)
        assert await fast.next_data() == b"x" * 300
    assert slow.closed and slow.reason == "too slow"
    assert not fast.closed


async def test_oversized_gop_cache_is_not_forced_on_a_new_viewer() -> None:
    fan = Fanout(max_backlog=1000)
    fan.random_access(b"")
    fan.publish(b"k" * 800)
    viewer = fan.subscribe("t", "a")
    fan.publish(b"p")
    assert not viewer.chunks and not viewer.closed
    fan.random_access(b"PSI")
    fan.publish(b"K")
    assert await viewer.next_data() == b"PSIK"
