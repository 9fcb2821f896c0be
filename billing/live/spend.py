"""Live spend: which calls are open on which accounts and how much credit each holds.

In-process by default; in Redis when several gateways share accounts, so a
tenant's balance cannot be spent twice from two sites at once. Both keep the
same three atomic operations:

- ``open``: count a call on every account of its chain, unless one of them is
  at its concurrent-call limit, and say what every account of the chain now
  holds (the answer's first reservation needs it: no second round trip);
- ``reserve``: move a call's reservation by ``delta`` on every account, unless
  that would take an account past its ceiling (what the database says it may
  still spend);
- ``close``: forget the call, releasing its reservation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.storage.resp import Arg, RespClient, Script


@dataclass(frozen=True)
class Usage:
    open_calls: int
    reserved: int  # micro-units


@dataclass(frozen=True)
class Opened:
    """What ``open`` did: ``refused`` names the account at its limit (then nothing changed);
    otherwise ``usage`` is every account of the chain just after the call was counted."""

    refused: str | None
    usage: dict[str, Usage]


class LiveSpend(Protocol):
    async def open(self, call: str, node: str, chain: Sequence[str], limits: Mapping[str, int | None]) -> Opened:
        """Register ``call`` on every account of ``chain`` unless one is at its concurrent-call limit."""
        ...

    async def reserve(self, call: str, delta: int, ceilings: Mapping[str, int | None]) -> bool:
        """Add ``delta`` to the call's reservation on each of its accounts unless one would pass its "
        "ceiling."""
        ...

    async def close(self, call: str) -> int:
        """Forget ``call``; returns the reservation it held (0 if it was not open)."""
        ...

    async def usage(self, accounts: Sequence[str]) -> dict[str, Usage]: ...

    async def calls_of(self, node: str) -> list[str]: ...

    async def aclose(self) -> None: ...


class MemoryLiveSpend:
    """One process's live spend: plain dicts (the event loop makes each method atomic)."""

    def __init__(self) -> None:
        self._calls: dict[str, tuple[str, tuple[str, ...], int]] = {}  # call -> (node, chain, reserved)
        self._open: dict[str, set[str]] = {}
        self._reserved: dict[str, int] = {}

    async def open(self, call: str, node: str, chain: Sequence[str], limits: Mapping[str, int | None]) -> Opened:
        if call not in self._calls:
            for account in chain:
                limit = limits.get(account)
                if limit is not None and len(self._open.get(account, ())) >= limit:
                    return Opened(account, {})
            self._calls[call] = (node, tuple(chain), 0)
            for account in chain:
                self._open.setdefault(account, set()).add(call)
        return Opened(None, await self.usage(chain))

    async def reserve(self, call: str, delta: int, ceilings: Mapping[str, int | None]) -> bool:
        node, chain, held = self._calls[call]
        if delta > 0:
            for account in chain:
                ceiling = ceilings.get(account)
                if ceiling is not None and self._reserved.get(account, 0) + delta > ceiling:
                    return False
        for account in chain:
            self._reserved[account] = self._reserved.get(account, 0) + delta
        self._calls[call] = (node, chain, held + delta)
        return True

    async def close(self, call: str) -> int:
        entry = self._calls.pop(call, None)
        if entry is None:
            return 0
        _node, chain, held = entry
        for account in chain:
            self._open[account].discard(call)
            self._reserved[account] = self._reserved.get(account, 0) - held
        return held

    async def usage(self, accounts: Sequence[str]) -> dict[str, Usage]:
        return {a: Usage(len(self._open.get(a, ())), self._reserved.get(a, 0)) for a in accounts}

    async def calls_of(self, node: str) -> list[str]:
        return sorted(c for c, (n, _chain, _held) in self._calls.items() if n == node)

    async def aclose(self) -> None:
        return None


# Redis: per account a set of open calls and a reservation counter; per call a hash
# with its node, chain and reservation; per node a set of its calls. Each operation
# is one Lua script, so the checks and the changes are atomic across gateways.

_OPEN = Script("""
local call, node, chain = ARGV[1], ARGV[2], cjson.decode(ARGV[3])
local limits = cjson.decode(ARGV[4])
local p = KEYS[1]
if redis.call('EXISTS', p .. 'call:' .. call) == 0 then
  for _, a in ipairs(chain) do
    local limit = limits[a]
    if limit and redis.call('SCARD', p .. 'open:' .. a) >= limit then return {a} end
  end
  for _, a in ipairs(chain) do redis.call('SADD', p .. 'open:' .. a, call) end
  redis.call('HSET', p .. 'call:' .. call, 'node', node, 'chain', ARGV[3], 'reserved', 0)
  redis.call('SADD', p .. 'node:' .. node, call)
end
local usage = {''}
for _, a in ipairs(chain) do
  usage[#usage + 1] = redis.call('SCARD', p .. 'open:' .. a)
  usage[#usage + 1] = tonumber(redis.call('GET', p .. 'reserved:' .. a) or '0')
end
return usage
""")

_RESERVE = Script("""
local call, delta = ARGV[1], tonumber(ARGV[2])
local ceilings = cjson.decode(ARGV[3])
local p = KEYS[1]
local chain = cjson.decode(redis.call('HGET', p .. 'call:' .. call, 'chain'))
if delta > 0 then
  for _, a in ipairs(chain) do
    local ceiling = ceilings[a]
    local held = tonumber(redis.call('GET', p .. 'reserved:' .. a) or '0')
    if ceiling and held + delta > ceiling then return 0 end
  end
end
for _, a in ipairs(chain) do redis.call('INCRBY', p .. 'reserved:' .. a, delta) end
redis.call('HINCRBY', p .. 'call:' .. call, 'reserved', delta)
return 1
""")

_CLOSE = Script("""
local call = ARGV[1]
local p = KEYS[1]
local key = p .. 'call:' .. call
if redis.call('EXISTS', key) == 0 then return 0 end
local held = tonumber(redis.call('HGET', key, 'reserved'))
local chain = cjson.decode(redis.call('HGET', key, 'chain'))
for _, a in ipairs(chain) do
  redis.call('SREM', p .. 'open:' .. a, call)
  redis.call('DECRBY', p .. 'reserved:' .. a, held)
end
redis.call('SREM', p .. 'node:' .. redis.call('HGET', key, 'node'), call)
redis.call('DEL', key)
return held
""")


class RedisLiveSpend:
    """Live spend shared by every gateway that uses the same Redis (keys under ``prefix``)."""

    def __init__(self, client: RespClient, prefix: str = "seabridge:billing:") -> None:
        self._r = client
        self._p = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "seabridge:billing:") -> RedisLiveSpend:
        return cls(RespClient(url, decode=True), prefix)

    async def open(self, call: str, node: str, chain: Sequence[str], limits: Mapping[str, int | None]) -> Opened:
        wanted = {a: v for a, v in limits.items() if v is not None}
        reply = await self._r.run_script(_OPEN, [self._p], [call, node, json.dumps(list(chain)), json.dumps(wanted)])
        if reply[0]:
            return Opened(str(reply[0]), {})
        return Opened(None, {a: Usage(int(reply[1 + 2 * i]), int(reply[2 + 2 * i])) for i, a in enumerate(chain)})

    async def reserve(self, call: str, delta: int, ceilings: Mapping[str, int | None]) -> bool:
        wanted = {a: v for a, v in ceilings.items() if v is not None}
        return bool(await self._r.run_script(_RESERVE, [self._p], [call, delta, json.dumps(wanted)]))

    async def close(self, call: str) -> int:
        return int(await self._r.run_script(_CLOSE, [self._p], [call]))

    async def usage(self, accounts: Sequence[str]) -> dict[str, Usage]:
        commands: list[list[Arg]] = []
        for a in accounts:
            commands += [["SCARD", self._p + "open:" + a], ["GET", self._p + "reserved:" + a]]
        values = await self._r.transaction(commands)
        return {a: Usage(int(values[2 * i]), int(values[2 * i + 1] or 0)) for i, a in enumerate(accounts)}

    async def calls_of(self, node: str) -> list[str]:
        return sorted(await self._r.execute("SMEMBERS", self._p + "node:" + node))

    async def aclose(self) -> None:
        await self._r.aclose()
