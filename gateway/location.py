"""Where each address-of-record can be reached: the registrar's bindings.

In-process by default; Redis when configured, so several gateways (or a
restarted one) see the same registrations. Both keep bindings keyed by AOR
("alice@acme") and drop them when they expire.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Protocol

from gateway.sip.peer import Peer
from gateway.sip.registrar import Binding
from gateway.storage.resp import Arg, RedisError, RespClient, RespSubscriber

log = logging.getLogger("seabridge.location")


class LocationStore(Protocol):
    async def get(self, aor: str, now: float) -> tuple[Binding, ...]: ...

    async def put(self, aor: str, bindings: tuple[Binding, ...], now: float) -> None: ...

    async def count(self, now: float) -> int: ...

    def cached_count(self, now: float) -> int:
        """A recent count without I/O, for metrics scrapes."""
        ...

    async def list_all(self, now: float, tenant: str | None = None) -> dict[str, tuple[Binding, ...]]:
        """Live bindings by AOR, optionally of one tenant ("user@tenant" AORs)."""
        ...

    async def close(self) -> None: ...


class MemoryLocationStore:
    def __init__(self) -> None:
        self._bindings: dict[str, tuple[Binding, ...]] = {}

    async def get(self, aor: str, now: float) -> tuple[Binding, ...]:
        live = tuple(b for b in self._bindings.get(aor, ()) if b.expires_at > now)
        if live:
            self._bindings[aor] = live
        else:
            self._bindings.pop(aor, None)
        return live

    async def put(self, aor: str, bindings: tuple[Binding, ...], now: float) -> None:
        if bindings:
            self._bindings[aor] = bindings
        else:
            self._bindings.pop(aor, None)

    async def count(self, now: float) -> int:
        expired = [aor for aor, bs in self._bindings.items() if all(b.expires_at <= now for b in bs)]
        for aor in expired:
            del self._bindings[aor]
        return sum(sum(1 for b in bs if b.expires_at > now) for bs in self._bindings.values())

    def cached_count(self, now: float) -> int:
        return sum(sum(1 for b in bs if b.expires_at > now) for bs in self._bindings.values())

    async def list_all(self, now: float, tenant: str | None = None) -> dict[str, tuple[Binding, ...]]:
        out = {}
        for aor, bindings in self._bindings.items():
            if tenant is not None and aor.rpartition("@")[2] != tenant:
                continue
            live = tuple(b for b in bindings if b.expires_at > now)
            if live:
                out[aor] = live
        return out

    async def close(self) -> None:
        self._bindings.clear()


# A change made without telling the subscribers (e.g. with redis-cli) reaches a cached
# reader at most this late; the gateways' own changes, at once.
CACHE_MAX_AGE_S = 10.0
_CACHE_MAX_ENTRIES = 100_000


class RedisLocationStore:
    """Bindings as one JSON value per AOR with a TTL; expiry instants stored as wall-clock.

    Monotonic clocks differ between processes, so what crosses the process boundary is
    "seconds left", converted back to this process's monotonic clock on read.

    What is read is kept in this process, and trusted while it is subscribed to the store's
    change channel: every ``put`` publishes the AOR it changed, and every subscriber drops
    its copy. A call set-up then finds its callee without a Redis round trip. While the
    subscription is down (connecting, lost), every read goes to Redis.
    """

    def __init__(self, url: str, prefix: str = "seabridge:loc:") -> None:
        self._redis = RespClient(url)
        self._prefix = prefix
        self._last_count = 0
        # This process's monotonic clock mapped to wall-clock time once, so "now" as handed in
        # (a monotonic instant) converts the same way on every call.
        self._wall_offset = time.time() - time.monotonic()
        self._channel = prefix + "changed"
        self._node = secrets.token_hex(8)  # our own notices need no action
        self._cache: dict[str, tuple[float, tuple[Binding, ...]]] = {}  # aor -> (read at, bindings)
        self._subscribed = False
        # Changes seen (notices, our own puts, the subscription coming or going): a read
        # that overlapped one may hold what was true before it, and is not kept.
        self._changes = 0
        self._subscriber = RespSubscriber(url, self._channel, self._changed, self._subscription)

    def _changed(self, notice: bytes) -> None:
        node, _, aor = notice.decode(errors="replace").partition(" ")
        if node != self._node:
            self._changes += 1
            self._cache.pop(aor, None)

    def _subscription(self, live: bool) -> None:
        self._subscribed = live
        self._changes += 1
        self._cache.clear()

    async def get(self, aor: str, now: float) -> tuple[Binding, ...]:
        self._subscriber.start()
        if self._subscribed:
            kept = self._cache.get(aor)
            if kept is not None and now - kept[0] < CACHE_MAX_AGE_S:
                return tuple(b for b in kept[1] if b.expires_at > now)
        changes = self._changes
        bindings = await self._read(aor, now)
        if self._subscribed and changes == self._changes:
            self._keep(aor, now, bindings)
        return bindings

    def _keep(self, aor: str, now: float, bindings: tuple[Binding, ...]) -> None:
        if len(self._cache) >= _CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[aor] = (now, bindings)

    async def _read(self, aor: str, now: float) -> tuple[Binding, ...]:
        raw = await self._redis.execute("GET", self._prefix + aor)
        if raw is None:
            return ()
        wall = now + self._wall_offset
        out = []
        for item in json.loads(raw):
            left = item["expires_wall"] - wall
            if left > 0:
                out.append(
                    Binding(
                        aor=aor,
                        contact=item["contact"],
                        source=Peer(item["source"][0], int(item["source"][1]), item["source"][2]),
                        expires_at=now + left,
                        call_id=item["call_id"],
                        cseq=int(item["cseq"]),
                        instance=item.get("instance", ""),
                        registered_at=item.get("registered_at", 0.0),
                    )
                )
        return tuple(out)

    async def put(self, aor: str, bindings: tuple[Binding, ...], now: float) -> None:
        self._subscriber.start()
        key = self._prefix + aor
        write: list[Arg]
        if not bindings:
            write = ["DEL", key]
        else:
            wall = now + self._wall_offset
            items = [
                {
                    "contact": b.contact,
                    "source": [b.source.host, b.source.port, b.source.transport],
                    "expires_wall": wall + (b.expires_at - now),
                    "call_id": b.call_id,
                    "cseq": b.cseq,
                    "instance": b.instance,
                    "registered_at": b.registered_at,
                }
                for b in bindings
            ]
            ttl = max(1, int(max(b.expires_at for b in bindings) - now) + 1)
            write = ["SET", key, json.dumps(items), "EX", ttl]
        self._changes += 1
        self._cache.pop(aor, None)
        changes = self._changes
        # The notice goes in the same write; it is not part of a transaction, so a server
        # that refuses PUBLISH (an ACL without channels) still stores the binding.
        written, noticed = await self._redis.pipeline([write, ["PUBLISH", self._channel, f"{self._node} {aor}"]])
        if isinstance(written, RedisError):
            raise written
        if isinstance(noticed, RedisError):
            log.warning("location change not published: other workers may use a stale binding for up to "
                        f"{CACHE_MAX_AGE_S:.0f} s", extra={"error": str(noticed)})  # fmt: skip
        if self._subscribed and changes == self._changes:
            self._keep(aor, now, bindings)

    async def count(self, now: float) -> int:
        total = 0
        async for key in self._redis.scan_iter(match=self._prefix + "*", count=500):
            aor = key.decode()[len(self._prefix) :]
            total += len(await self._read(aor, now))
        self._last_count = total
        return total

    def cached_count(self, now: float) -> int:
        return self._last_count

    async def list_all(self, now: float, tenant: str | None = None) -> dict[str, tuple[Binding, ...]]:
        pattern = self._prefix + (f"*@{tenant}" if tenant is not None else "*")
        out = {}
        async for key in self._redis.scan_iter(match=pattern, count=500):
            aor = key.decode()[len(self._prefix) :]
            bindings = await self._read(aor, now)
            if bindings:
                out[aor] = bindings
        return out

    async def close(self) -> None:
        await self._subscriber.aclose()
        await self._redis.aclose()
