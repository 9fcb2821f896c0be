"""Fuzz a running gateway: over 100,000 mutated SIP messages over UDP, and TCP streams.

Mutations of real captures (baresip, sipp) and of the RFC 4475 set are sent in batches;
after each batch an OPTIONS probe is answered, which shows the gateway got through the
batch (it handles datagrams in order) without the test waiting per message, and keeps
the socket buffers from overflowing. Over TCP: many connections at once, the stream
written in random slices, some connections pure garbage, some cut off mid-message.
Afterwards the gateway must still answer OPTIONS over UDP and TCP, have counted the
parse errors, hold no leftover connections, and have logged no error or traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gateway.sip.parser import MAGIC_COOKIE
from tests.support.gateway import GatewayProcess
from tests.support.mutate import Mutator, seed_messages

UDP_MESSAGES = 100_000
TCP_CONNECTIONS = 400
TCP_MESSAGES_PER_CONNECTION = 30
BATCH_MESSAGES = 64
# Well inside the gateway socket's default receive buffer (212992 bytes here, counting
# per-datagram overhead), so a batch and its probe are not dropped by the kernel.
BATCH_BYTES = 80_000
SEED = 4475

_probe_ids = itertools.count()


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


def _options(call_id: str, via: str) -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:probe@example.com>;tag=fz\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


class UdpProbe:
    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox, gateway: tuple[str, int]) -> None:
        self.transport, self.inbox, self.gateway = transport, inbox, gateway
        self.sent = 0

    async def answered(self, attempts: int = 4) -> bytes:
        """Send OPTIONS until answered: a datagram, even a probe, may be lost."""
        n = next(_probe_ids)
        call_id = f"udp-probe-{n}"
        request = _options(call_id, f"SIP/2.0/UDP 127.0.0.1;rport;branch={MAGIC_COOKIE}u{n}")
        for _ in range(attempts):
            self.transport.sendto(request, self.gateway)
            self.sent += 1
            try:
                async with asyncio.timeout(5):
                    while True:
                        data = await self.inbox.queue.get()
                        if call_id.encode() in data and data.startswith(b"SIP/2.0 200 "):
                            return data
            except TimeoutError:
                continue
        raise AssertionError(f"OPTIONS not answered after {attempts} tries")


@pytest_asyncio.fixture(scope="module")
async def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    # Warnings and errors only: an info line per refused datagram would make the log the bottleneck.
    gw = GatewayProcess(tmp_path_factory.mktemp("fuzz-gw"), log_level="warning", t1_ms=50)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


async def test_fuzzed_udp_and_tcp_leave_the_gateway_answering(fuzz_gateway: GatewayProcess) -> None:
    gw = fuzz_gateway
    rng = random.Random(SEED)
    mutator = Mutator(seed_messages(), rng)
    loop = asyncio.get_running_loop()
    before = await gw.metrics()

    fuzz_tx, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    probe_tx, probe_inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
    probe = UdpProbe(probe_tx, probe_inbox, gw.sip_address)
    started = time.monotonic()
    try:
        sent = await _udp_fuzz(gw, fuzz_tx, probe, mutator)
        udp_done = time.monotonic()
        tcp_sent, tcp_streams = await _tcp_fuzz(gw, rng, mutator)
        tcp_done = time.monotonic()
        await probe.answered()
        await _tcp_options_answered(gw)
    finally:
        fuzz_tx.close()
        probe_tx.close()

    after = await gw.metrics()
    received = after['seabridge_sip_messages_total{direction="in"}'] - before.get(
        'seabridge_sip_messages_total{direction="in"}', 0.0
    )
    parse_errors = after["seabridge_sip_parse_errors_total"] - before.get("seabridge_sip_parse_errors_total", 0.0)
    assert received >= UDP_MESSAGES
    assert parse_errors > UDP_MESSAGES // 2  # most mutations break the message
    assert gw.process is not None and gw.process.returncode is None
    await _connections_closed(gw)
    log = gw.log_tail(10**8)
    assert "Traceback" not in log, log[-3000:]
    assert not [r for r in gw.log_records() if r.get("level") in ("error", "critical")]
    print(
        f"\nfuzz: {sent} UDP datagrams in {udp_done - started:.1f}s, {tcp_sent} messages over {tcp_streams} TCP "
        f"streams in {tcp_done - udp_done:.1f}s; the gateway counted {received:.0f} messages in, "
        f"{parse_errors:.0f} parse errors"
    )


async def _udp_fuzz(gw: GatewayProcess, tx: asyncio.DatagramTransport, probe: UdpProbe, mutator: Mutator) -> int:
    """Send until the gateway has counted UDP_MESSAGES fuzz datagrams (the kernel may drop some)."""
    sent = counted = 0
    key = 'seabridge_sip_messages_total{direction="in"}'
    base = (await gw.metrics()).get(key, 0.0)
    probes = 0
    pending = b""
    while counted < UDP_MESSAGES:
        for _ in range(50):
            size = 0
            for _ in range(BATCH_MESSAGES):
                data = pending or mutator.next()
                pending = b""
                if not data.strip():
                    continue  # a CRLF keep-alive, not a message
                if size and size + len(data) > BATCH_BYTES:
                    pending = data  # first of the next batch
                    break
                tx.sendto(data, gw.sip_address)
                sent += 1
                size += len(data)
            before = probe.sent
            await probe.answered()
            probes += probe.sent - before
        counted = int((await gw.metrics())[key] - base) - probes
    return sent


async def _tcp_fuzz(gw: GatewayProcess, rng: random.Random, mutator: Mutator) -> tuple[int, int]:
    limit = asyncio.Semaphore(16)
    sent = 0

    async def one(n: int) -> None:
        nonlocal sent
        kind = rng.random()
        if kind < 0.15:
            stream = bytes(rng.randrange(256) for _ in range(rng.choice([10, 1000, 70_000])))
        else:
            messages = [mutator.next() for _ in range(TCP_MESSAGES_PER_CONNECTION)]
            if kind < 0.7:
                # Framed right, so the stream survives and every mutation reaches the parser.
                messages = [_reframed(m) for m in messages]
            sent += len(messages)
            stream = b"".join(messages)
        cut = kind > 0.9  # hang up mid-stream
        slices = _slices(stream, rng)
        async with limit:
            reader, writer = await asyncio.open_connection(*gw.sip_address)
            try:
                for piece in slices[: len(slices) // 2] if cut else slices:
                    writer.write(piece)
                    await writer.drain()
                if cut:
                    writer.transport.abort()
                    return
                writer.write_eof()
                async with asyncio.timeout(30):
                    while await reader.read(65536):
                        pass  # the gateway closes once it has read our EOF
            except (ConnectionError, OSError):
                pass  # the gateway closed an unframeable stream first
            finally:
                writer.close()

    await asyncio.gather(*(one(n) for n in range(TCP_CONNECTIONS)))
    return sent, TCP_CONNECTIONS


def _reframed(message: bytes) -> bytes:
    head, sep, body = message.partition(b"\r\n\r\n")
    head = re.sub(rb"(?im)^(content-length|l)[ \t]*:[^\r\n]*(\r\n|$)", b"", head)
    return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def _slices(stream: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(stream):
        n = rng.choice([1, 7, 100, 1400, 16384])
        out.append(stream[i : i + n])
        i += n
    return out


async def _tcp_options_answered(gw: GatewayProcess) -> None:
    reader, writer = await asyncio.open_connection(*gw.sip_address)
    try:
        writer.write(_options("tcp-probe", f"SIP/2.0/TCP 127.0.0.1;branch={MAGIC_COOKIE}tcpprobe"))
        async with asyncio.timeout(20):
            answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"SIP/2.0 200 ") and b"tcp-probe" in answer
    finally:
        writer.close()


async def _connections_closed(gw: GatewayProcess, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            health = await gw.wait_healthy()
            if health["sip"]["connections"] == 0:
                return
            await asyncio.sleep(0.2)
