"""The location store: the same behaviour in memory and in a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from gateway.location import LocationStore, MemoryLocationStore, RedisLocationStore
from gateway.sip.peer import Peer
from gateway.sip.registrar import Binding
from gateway.storage.resp import RespClient
from tests.support.services import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LocationStore]:
    if request.param == "memory":
        s: LocationStore = MemoryLocationStore()
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisLocationStore(url, prefix=f"test:{time.monotonic_ns()}:")
    try:
        yield s
    finally:
        await s.close()


def binding(aor: str, contact: str, expires_at: float, transport: str = "UDP") -> Binding:
    return Binding(aor, contact, Peer("10.0.0.1", 5060, transport), expires_at, "cid", 1)


async def test_put_get_expire_and_list_by_tenant(store: LocationStore) -> None:
    now = time.monotonic()
    await store.put("alice@acme", (binding("alice@acme", "sip:a@10.0.0.1", now + 60, "TLS"),), now)
    await store.put("bob@acme", (binding("bob@acme", "sip:b@10.0.0.2", now + 1),), now)
    await store.put("dave@globex", (binding("dave@globex", "sip:d@10.0.0.3", now + 60),), now)
    (alice,) = await store.get("alice@acme", now)
    assert alice.source == Peer("10.0.0.1", 5060, "TLS") and 59 <= alice.remaining(now) <= 60
    assert await store.count(now) == 3
    later = now + 2  # bob's binding has expired
    assert await store.get("bob@acme", later) == ()
    assert set(await store.list_all(later, "acme")) == {"alice@acme"}
    assert set(await store.list_all(later)) == {"alice@acme", "dave@globex"}
    await store.put("alice@acme", (), later)
    assert await store.get("alice@acme", later) == ()


# Several SIP workers share one Redis: each keeps what it read, and drops it on the notice
# another's change publishes.


async def _gets(client: RespClient) -> int:
    stats = (await client.execute("INFO", "commandstats")).decode()
    for line in stats.splitlines():
        if line.startswith("cmdstat_get:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def _until(predicate: Callable[[], Awaitable[bool]], within_s: float = 10.0) -> None:
    """Wait for a notice to travel through Redis (no claim about how fast it does)."""
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "the change never reached the other store"
        await asyncio.sleep(0.01)


@dataclass
class Workers:
    """Two SIP workers' location stores on one Redis, both subscribed, with bob registered
    at ``now`` through the first; ``admin`` talks to Redis directly."""

    first: RedisLocationStore
    second: RedisLocationStore
    admin: RespClient
    now: float


@pytest_asyncio.fixture
async def workers(redis_url: str) -> AsyncIterator[Workers]:
    prefix = f"test:{time.monotonic_ns()}:"
    first, second, admin = RedisLocationStore(redis_url, prefix), RedisLocationStore(redis_url, prefix), None
    try:
        admin = RespClient(redis_url)
        await _subscribed(first, second)
        now = time.monotonic()
        await first.put("bob@acme", (binding("bob@acme", "sip:b@10.0.0.2", now + 60),), now)
        yield Workers(first, second, admin, now)
    finally:
        await first.close()
        await second.close()
        if admin is not None:
            await admin.aclose()


async def _subscribed(*stores: RedisLocationStore) -> None:
    now = time.monotonic()
    for store in stores:
        await store.get("nobody@acme", now)  # starts its subscription

    async def all_live() -> bool:
        return all(s._subscribed for s in stores)

    await _until(all_live)


async def test_a_read_binding_is_kept_until_another_worker_changes_it(workers: Workers) -> None:
    first, second, now = workers.first, workers.second, workers.now
    (seen,) = await second.get("bob@acme", now)
    assert seen.contact == "sip:b@10.0.0.2"
    before = await _gets(workers.admin)
    for _ in range(5):
        assert [b.contact for b in await second.get("bob@acme", now)] == ["sip:b@10.0.0.2"]
    assert await _gets(workers.admin) == before  # served from the copy: no Redis round trip

    # Bob moves: the other worker's copy is dropped and the new binding read.
    await first.put("bob@acme", (binding("bob@acme", "sip:b@10.0.0.9", now + 60),), now)

    async def moved() -> bool:
        return [b.contact for b in await second.get("bob@acme", now)] == ["sip:b@10.0.0.9"]

    await _until(moved)
    # Bob unregisters: gone everywhere.
    await second.put("bob@acme", (), now)

    async def gone() -> bool:
        return await first.get("bob@acme", now) == ()

    await _until(gone)
    # A kept binding still expires on time.
    await first.put("carol@acme", (binding("carol@acme", "sip:c@10.0.0.3", now + 5),), now)
    assert len(await second.get("carol@acme", now)) == 1
    assert await second.get("carol@acme", now + 6) == ()


async def test_without_the_subscription_every_read_goes_to_redis(workers: Workers) -> None:
    second, admin, now = workers.second, workers.admin, workers.now
    await second.get("bob@acme", now)
    # The server drops the subscribers' connections: notices published meanwhile would be
    # lost, so nothing read before may be trusted.
    await admin.execute("CLIENT", "KILL", "TYPE", "pubsub")

    async def down() -> bool:
        return not second._subscribed

    await _until(down)
    await admin.execute("SET", workers.first._prefix + "bob@acme", "[]")  # a change nobody announced
    before = await _gets(admin)
    assert await second.get("bob@acme", now) == ()
    assert await _gets(admin) == before + 1
    await _subscribed(second)  # it reconnects by itself
    assert await second.get("bob@acme", now) == ()


async def test_a_read_that_overlaps_a_change_is_not_kept(workers: Workers) -> None:
    first, second = workers.first, workers.second
    reading = asyncio.ensure_future(second.get("bob@acme", workers.now))
    await asyncio.sleep(0)  # the GET is on its way
    second._changed(first._node.encode() + b" bob@acme")  # a notice overtakes its reply
    assert len(await reading) == 1
    assert "bob@acme" not in second._cache
