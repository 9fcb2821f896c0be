"""The location store: the same behaviour in memory and in a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from gateway.location import LocationStore, MemoryLocationStore, RedisLocationStore
from gateway.sip.peer import Peer
from gateway.sip.registrar import Binding
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
