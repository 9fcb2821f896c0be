"""Redis commands per CPU-second: the gateway's lean client (gateway/storage/resp.py) beside redis-py.

Both talk to the same private redis-server, on uvloop as `seabridge run` does. Measured as
the caller's CPU time per command (what a call set-up pays in the SIP worker), for a
command at a time and for 64 in flight, and for the live-spend sequence one call makes
(location GET, usage MULTI/EXEC, open/close scripts). Not part of the test suite:

    PYTHONPATH=. .venv/bin/python bench/redis_client_bench.py [--commands 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

import uvloop

from billing.live.spend import RedisLiveSpend
from gateway.storage.resp import RespClient
from tests.support.services import redis_server


async def cpu_per_op(label: str, count: int, batch: int, op: Callable[[int], Awaitable[object]]) -> float:
    started = time.process_time()
    for first in range(0, count, batch):
        await asyncio.gather(*(op(i) for i in range(first, min(first + batch, count))))
    per_op = (time.process_time() - started) / count * 1e6
    print(f"  {label:44} {per_op:8.1f} µs CPU per command")
    return per_op


async def main(url: str, count: int) -> int:
    import redis.asyncio as redis_py

    ours = RespClient(url)
    theirs = redis_py.Redis.from_url(url)
    value = json.dumps([{"contact": "sip:bob@10.0.0.9:5060", "source": ["10.0.0.9", 5060, "UDP"]}])
    await ours.execute("SET", "bench:loc", value)
    print(f"redis-server at {url.split('@')[-1]}; {count} commands each")
    rows = []
    for batch in (1, 64):
        base = await cpu_per_op(f"redis-py GET, {batch} in flight", count, batch, lambda i: theirs.get("bench:loc"))
        lean = await cpu_per_op(
            f"lean GET, {batch} in flight", count, batch, lambda i: ours.execute("GET", "bench:loc")
        )
        rows.append((f"GET, {batch} in flight", base, lean))
    # What one call does in live billing: open, check usage, close (a script each, a MULTI/EXEC).
    spend = RedisLiveSpend.from_url(url, prefix="bench:spend:")
    chain, limits = ["tenant", "site", "user"], {"tenant": 1000, "site": 1000, "user": 1000}

    async def one_call(i: int) -> None:
        await spend.open(f"c{i}", "bench", chain, limits)
        await spend.usage(chain)
        await spend.close(f"c{i}")

    started = time.process_time()
    for first in range(0, count // 3, 64):
        await asyncio.gather(*(one_call(i) for i in range(first, min(first + 64, count // 3))))
    per_call = (time.process_time() - started) / (count // 3) * 1e6
    print(f"  {'lean live-spend open+usage+close per call':44} {per_call:8.1f} µs CPU")
    await spend.aclose()
    await ours.aclose()
    await theirs.aclose()
    print()
    for name, base, lean in rows:
        if base <= 0:
            print("FAIL: the redis-py baseline did no work", file=sys.stderr)
            return 1
        print(f"{name:20} lean client {base / lean:.1f}x fewer CPU-µs per command than redis-py")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=20000)
    args = parser.parse_args()
    with redis_server() as redis_url:
        sys.exit(uvloop.run(main(redis_url, args.commands)))
