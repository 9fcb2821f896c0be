"""The lean Redis client (gateway/storage/resp.py) against a real redis-server, and its parser alone."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.storage.resp import (
    INCOMPLETE,
    RedisConnectionError,
    RedisError,
    ReplyParser,
    RespClient,
    RespSubscriber,
    Script,
    encode_command,
)
from tests.support.services import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


# --- the parser, without a server ---------------------------------------------------------


def resp(value: Any) -> bytes:
    """How Redis would send ``value``."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(resp(v) for v in value)


values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


def take_all(parser: ReplyParser) -> list[Any]:
    out = []
    while True:
        reply = parser.next_reply()
        if reply is INCOMPLETE:
            return out
        out.append(reply)


@given(replies=st.lists(values, max_size=8), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_replies_come_out_whole_however_the_bytes_are_cut(replies: list[Any], cuts: list[int]) -> None:
    stream = b"".join(resp(r) for r in replies)
    parser = ReplyParser()
    got: list[Any] = []
    start = 0
    for cut in sorted({min(c, len(stream)) for c in cuts}) + [len(stream)]:
        parser.feed(stream[start:cut])
        got += take_all(parser)
        start = cut
    assert got == replies


def test_status_and_error_replies() -> None:
    parser = ReplyParser(decode=True)
    parser.feed(b"+OK\r\n-ERR wrong number of arguments\r\n$5\r\nhello\r\n*-1\r\n")
    assert parser.next_reply() == "OK"
    error = parser.next_reply()
    assert isinstance(error, RedisError) and "wrong number" in str(error)
    assert parser.next_reply() == "hello"
    assert parser.next_reply() is None


def test_commands_are_encoded_as_bulk_strings() -> None:
    assert encode_command(["SET", b"k\r\n", 5]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n"


def test_a_url_names_host_port_password_and_database() -> None:
    with pytest.raises(ValueError, match="scheme"):
        RespClient("http://127.0.0.1:6379")


# --- against redis-server -------------------------------------------------------------------


async def test_commands_and_their_replies(redis_url: str) -> None:
    raw, text = RespClient(redis_url), RespClient(redis_url, decode=True)
    key = "t:" + secrets.token_hex(4)
    try:
        assert await raw.execute("SET", key, "v\r\nw", "EX", 60) == b"OK"
        assert await raw.execute("GET", key) == b"v\r\nw"
        assert await text.execute("GET", key) == "v\r\nw"
        assert await raw.execute("GET", key + ":missing") is None
        assert await raw.execute("SADD", key + ":s", "a", "b") == 2
        assert sorted(await text.execute("SMEMBERS", key + ":s")) == ["a", "b"]
        with pytest.raises(RedisError, match="WRONGTYPE"):
            await raw.execute("GET", key + ":s")
        assert await raw.execute("DEL", key, key + ":s") == 2  # the connection survives an error reply
    finally:
        await raw.aclose()
        await text.aclose()


async def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    client = RespClient(redis_url)
    prefix = "t:" + secrets.token_hex(4) + ":"
    try:
        await asyncio.gather(*(client.execute("SET", f"{prefix}{i}", i) for i in range(2000)))
        got = await asyncio.gather(*(client.execute("GET", f"{prefix}{i}") for i in range(2000)))
        assert got == [str(i).encode() for i in range(2000)]
        keys = [k async for k in client.scan_iter(prefix + "*", count=100)]
        assert len(keys) == 2000
    finally:
        await client.aclose()


async def test_a_transaction_returns_its_commands_replies(redis_url: str) -> None:
    client = RespClient(redis_url, decode=True)
    key = "t:" + secrets.token_hex(4)
    try:
        assert await client.transaction([["INCRBY", key, 5], ["GET", key], ["SCARD", key + ":none"]]) == [5, "5", 0]
        with pytest.raises(RedisError):
            await client.transaction([["INCRBY", key, 1], ["NOSUCHCOMMAND"]])
        assert await client.execute("GET", key) == "5"  # the aborted block changed nothing
        # Blocks and single commands in flight together on the one connection: each caller
        # gets its own replies, in order.
        results = await asyncio.gather(
            client.execute("INCR", key),
            client.transaction([["INCR", key], ["INCR", key]]),
            client.execute("GET", key),
            client.transaction([["GET", key]]),
        )
        assert results == [6, [7, 8], "8", ["8"]]
    finally:
        await client.aclose()


async def test_a_pipeline_returns_each_reply_and_a_failure_undoes_nothing(redis_url: str) -> None:
    client = RespClient(redis_url, decode=True)
    key = "p:" + secrets.token_hex(4)
    try:
        first, failed, last = await client.pipeline([["INCRBY", key, 2], ["NOSUCHCOMMAND"], ["GET", key]])
        assert first == 2 and isinstance(failed, RedisError) and last == "2"
    finally:
        await client.aclose()


async def test_a_subscriber_hears_what_is_published_and_comes_back_after_a_drop(redis_url: str) -> None:
    client = RespClient(redis_url)
    channel = "c:" + secrets.token_hex(4)
    heard: list[bytes] = []
    states: list[bool] = []
    subscriber = RespSubscriber(redis_url, channel, heard.append, states.append, retry_s=0.05)

    async def until(condition: Any) -> None:
        async with asyncio.timeout(10):
            while not condition():
                await asyncio.sleep(0.01)

    try:
        subscriber.start()
        await until(lambda: states == [True])
        assert await client.execute("PUBLISH", channel, "one") == 1
        await until(lambda: heard == [b"one"])
        await client.execute("CLIENT", "KILL", "TYPE", "pubsub")
        await until(lambda: states == [True, False, True])
        await client.execute("PUBLISH", channel, "two")
        await until(lambda: heard == [b"one", b"two"])
    finally:
        await subscriber.aclose()
        await client.aclose()


async def test_a_script_is_loaded_when_the_server_has_forgotten_it(redis_url: str) -> None:
    client = RespClient(redis_url, decode=True)
    script = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    key = "t:" + secrets.token_hex(4)
    try:
        await client.execute("SCRIPT", "FLUSH")
        assert await client.run_script(script, [key], [2]) == 2  # EVALSHA fails, EVAL runs it
        assert await client.run_script(script, [key], [3]) == 5  # now by its SHA
    finally:
        await client.aclose()


async def test_a_wrong_password_is_an_error_not_a_hang(redis_url: str) -> None:
    bad = redis_url.replace("redis://:", "redis://:x")
    client = RespClient(bad)
    try:
        with pytest.raises(RedisError, match="WRONGPASS|invalid"):
            await client.execute("PING")
    finally:
        await client.aclose()


async def test_the_database_number_in_the_url_is_used(redis_url: str) -> None:
    three, zero = RespClient(redis_url[: -len("/0")] + "/3"), RespClient(redis_url)
    key = "t:" + secrets.token_hex(4)
    try:
        await three.execute("SET", key, "in-three")
        assert await zero.execute("GET", key) is None
        assert await three.execute("GET", key) == b"in-three"
    finally:
        await three.aclose()
        await zero.aclose()


async def test_a_dropped_connection_fails_its_commands_and_the_next_reconnects(redis_url: str) -> None:
    client, admin = RespClient(redis_url), RespClient(redis_url, decode=True)
    try:
        client_id = await client.execute("CLIENT", "ID")
        pending = asyncio.ensure_future(client.execute("BLPOP", "t:never:" + secrets.token_hex(4), 30))
        block = asyncio.ensure_future(client.transaction([["PING"]]))  # queued behind it
        await asyncio.sleep(0.2)
        assert await admin.execute("CLIENT", "KILL", "ID", client_id) == 1
        with pytest.raises(RedisConnectionError):
            await pending
        with pytest.raises(RedisConnectionError):
            await block
        assert await client.execute("PING") == b"PONG"
        assert await client.execute("CLIENT", "ID") != client_id
    finally:
        await client.aclose()
        await admin.aclose()


async def test_no_server_is_a_connection_error() -> None:
    client = RespClient("redis://127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError, match="cannot connect"):
        await client.execute("PING")
    await client.aclose()
