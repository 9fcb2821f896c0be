"""Overload against a running gateway: while the SIP queue is old, new INVITEs get 503.

The SIP processes are stopped (SIGSTOP) while INVITEs arrive, as a gateway that has fallen
behind stops reading; the datagrams wait in its socket's queue. Once it runs again, each
INVITE that still has older datagrams queued behind it is refused with 503 and Retry-After;
the last one, with nothing left behind it, is challenged as usual, as is every INVITE after.
With two SIP workers the receiving worker refuses the calls it would pass on, too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest_asyncio

from gateway.sip.message import Response
from gateway.sip.parser import MAGIC_COOKIE, parse_message
from gateway.sip.shard import Shard
from tests.support.gateway import GatewayProcess
from tests.support.services import redis_server


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


class _Caller:
    """Sends initial INVITEs from one UDP port and ACKs their final responses."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox, gateway: tuple[str, int]) -> None:
        self.transport = transport
        self.inbox = inbox
        self.gateway = gateway
        self.port = transport.get_extra_info("sockname")[1]
        self.finals: dict[str, Response] = {}

    def _head(self, method: str, n: int, to_tag: str = "") -> str:
        to = "<sip:bob@acme>" + (f";tag={to_tag}" if to_tag else "")
        return (
            f"{method} sip:bob@acme SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch={MAGIC_COOKIE}overload{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@acme>;tag=a{n}\r\nTo: {to}\r\n"
            f"Call-ID: overload-{n}\r\nCSeq: 1 {method}\r\n"
        )

    def invite(self, n: int, credentials: bool = False) -> None:
        sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        sdp += "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        head = self._head("INVITE", n) + f"Contact: <sip:alice@127.0.0.1:{self.port}>\r\n"
        if credentials:  # (wrong ones: what matters is that the call was challenged before)
            head += 'Proxy-Authorization: Digest username="alice", realm="acme", nonce="n", '
            head += 'uri="sip:bob@acme", response="00000000000000000000000000000000"\r\n'
        head += f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n"
        self.transport.sendto((head + sdp).encode(), self.gateway)

    async def final(self, n: int) -> Response:
        """The final response to INVITE ``n`` (ACKed, as RFC 3261 17.1.1.3 asks)."""
        call_id = f"overload-{n}"
        async with asyncio.timeout(10):
            while call_id not in self.finals:
                message = parse_message(await self.inbox.queue.get())
                if isinstance(message, Response) and message.status >= 200:
                    if message.call_id not in self.finals:
                        number = int(message.call_id.rsplit("-", 1)[1])
                        ack = self._head("ACK", number, message.to.tag or "") + "Content-Length: 0\r\n\r\n"
                        self.transport.sendto(ack.encode(), self.gateway)
                    self.finals[message.call_id] = message
        return self.finals[call_id]


@contextlib.asynccontextmanager
async def _running(folder: Path, extra_config: str, sip_extra: str) -> AsyncIterator[GatewayProcess]:
    gw = GatewayProcess(folder, extra_config=extra_config, sip_extra=sip_extra, log_level="info")
    gw.write_config()
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    async with _running(tmp_path, '[[tenants]]\ndomain = "acme"\n', "overload_queue_delay_ms = 200") as gw:
        yield gw


@pytest_asyncio.fixture
async def sharded(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    with redis_server() as url:
        extra = f'[storage]\nredis_url = "{url}"\n\n[[tenants]]\ndomain = "acme"\n'
        async with _running(tmp_path, extra, "overload_queue_delay_ms = 200\nworkers = 2") as gw:
            yield gw


async def _refusals(gw: GatewayProcess) -> float:
    """Summed over the SIP workers (worker 0's /metrics carries the others' samples too)."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{gw.http_port}/metrics") as resp:
        text = await resp.text()
    found = re.findall(r"^seabridge_sip_overload_refusals_total(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert found, "the refusals counter is on /metrics"
    return sum(float(value) for value in found)


async def _fall_behind_and_catch_up(gw: GatewayProcess, pids: list[int], late: list[int], last: int) -> None:
    """INVITEs ``late`` then ``last`` arrive while every SIP process is stopped: the ``late``
    ones are refused (older datagrams wait behind each), ``last`` and later ones challenged.
    An INVITE with credentials, among the first to arrive, is never refused: its call was
    challenged already, and finishing it costs less than refusing it and starting again."""
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
    caller = _Caller(transport, inbox, gw.sip_address)
    try:
        caller.invite(0)
        assert (await caller.final(0)).status == 407  # keeping up: challenged as usual
        assert await _refusals(gw) == 0

        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            caller.invite(99, credentials=True)
            for n in [*late, last]:
                caller.invite(n)
            await asyncio.sleep(0.5)  # the queue ages past the 200 ms limit meanwhile
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

        finals = [await caller.final(n) for n in late]
        assert [f.status for f in finals] == [503] * len(late)
        for refused in finals:
            assert refused.headers.get("Retry-After") == "5"
            assert refused.to.tag  # a final response like any: the caller ACKs it
        assert (await caller.final(last)).status == 407
        assert (await caller.final(99)).status != 503  # checked (its nonce is unknown: 407 again)
        assert await _refusals(gw) == len(late)

        caller.invite(last + 1)
        assert (await caller.final(last + 1)).status == 407  # caught up: new calls go on
        assert await _refusals(gw) == len(late)
    finally:
        transport.close()


async def test_new_calls_are_refused_while_the_sip_queue_is_old(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    await _fall_behind_and_catch_up(gateway, [gateway.process.pid], [1, 2, 3], 4)


async def test_a_worker_refuses_the_new_calls_it_would_pass_on_while_its_queue_is_old(
    sharded: GatewayProcess,
) -> None:
    """All of one sender's datagrams reach one worker; half of its calls belong to the other.
    The queue they waited in is the receiver's, so the receiver refuses those too."""
    assert sharded.process is not None
    workers = [r["pid"] for r in sharded.log_records() if r.get("msg") == "sip worker started"]
    assert len(workers) == 1
    late = [3, 4, 8, 5]
    assert {Shard(0, 2).owner(b"overload-%d" % n) for n in late} == {0, 1}  # both workers own some
    await _fall_behind_and_catch_up(sharded, [sharded.process.pid, *workers], late, 9)
