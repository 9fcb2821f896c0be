"""RFC 4475 against a running gateway: each torture message sent as one UDP datagram.

Responses are routed as RFC 3261 section 18.2.2 says: to the packet's source address
and the port its top Via names (5060 when none, 5050 for quotbal). The test therefore
sends from its own loopback address (somewhere in 127/8) and listens there on the ports
the messages name, so the fixture bytes go out unchanged. Where nothing must come back,
an OPTIONS probe sent right after proves the gateway handled the message (it answers in
order) and is still alive.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from gateway.sip.message import Request, Response
from gateway.sip.parser import MAGIC_COOKIE, SipParseError, parse_message
from tests.support.gateway import GatewayProcess
from tests.support.rfc4475 import CASES, Case

_probe_ids = itertools.count()


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)


@dataclass
class Phone:
    """A loopback address of our own, listening on the ports torture messages name."""

    address: str
    gateway: tuple[str, int]
    queue: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    transports: list[asyncio.DatagramTransport] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.transports[0].sendto(data, self.gateway)  # from port 5060

    async def answer(self, identity: bytes, timeout: float = 10.0) -> tuple[bytes, list[bytes]]:
        """The first final response carrying ``identity``, and everything else seen meanwhile."""
        seen: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                data = await self.queue.get()
                if identity in data and _status(data) >= 200:
                    return data, seen
                seen.append(data)

    def drain(self) -> list[bytes]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    async def probe(self) -> list[bytes]:
        """OPTIONS answered: whatever arrived before it is returned."""
        n = next(_probe_ids)
        call_id = f"probe-{n}-{random.getrandbits(32)}"
        self.send(
            (
                f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.address}:5060;rport;branch={MAGIC_COOKIE}probe{n}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=p{n}\r\nTo: <sip:probe@127.0.0.1>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        answer, seen = await self.answer(call_id.encode())
        assert _status(answer) == 200
        return seen + self.drain()


def _status(data: bytes) -> int:
    m = re.match(rb"SIP/2\.0 (\d{3})", data)
    return int(m[1]) if m else 0


def _identity(data: bytes) -> bytes:
    """What a response to ``data`` must carry: its Call-ID, else (insuf) its branch."""
    m = re.search(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)", data)
    if m:
        return m[1]
    m = re.search(rb"branch=([^;\s,]+)", data)
    assert m is not None
    return m[1]


async def _open_phone(gateway: tuple[str, int]) -> Phone:
    loop = asyncio.get_running_loop()
    rng = random.Random()
    for _ in range(50):
        phone = Phone(f"127.{rng.randrange(1, 255)}.{rng.randrange(0, 256)}.{rng.randrange(2, 255)}", gateway)
        try:
            for port in (5060, 5050):
                transport, _ = await loop.create_datagram_endpoint(
                    lambda p=phone: _Inbox(p.queue), local_addr=(phone.address, port)
                )
                phone.transports.append(transport)
            return phone
        except OSError:
            for transport in phone.transports:
                transport.close()
    raise RuntimeError("no free loopback address for the torture phone")


@pytest_asyncio.fixture(scope="module")
async def torture_gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    # The shortest T1 the schema allows: two fixture pairs reuse a transaction key (same
    # branch, sent-by and method), and the second may only go once the first is gone.
    gw = GatewayProcess(tmp_path_factory.mktemp("torture-gw"), t1_ms=50)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def _server_key(message: Request) -> tuple[str, str, str] | None:
    top = message.top_via
    if not (top.branch or "").startswith(MAGIC_COOKIE):
        return None  # RFC 2543 keys include the Call-ID: never shared here
    return (top.branch or "", f"{top.host}:{top.port or 5060}".lower(), message.method)


async def _transactions_drained(gw: GatewayProcess, timeout: float = 30.0) -> None:
    # The gauge is the only signal a separate process gives of its timers having run.
    async with asyncio.timeout(timeout):
        while True:
            if (await gw.metrics()).get("seabridge_sip_transactions", 0.0) == 0:
                return
            await asyncio.sleep(0.1)


async def test_every_torture_message_gets_the_rfc_outcome(torture_gateway: GatewayProcess) -> None:
    gw = torture_gateway
    phone = await _open_phone(gw.sip_address)
    before = await gw.metrics()
    keys: set[tuple[str, str, str]] = set()
    outcomes: dict[str, int | None] = {}
    try:
        for case in CASES:
            await _one(gw, phone, case, keys)
            outcomes[case.name] = case.gateway
        seen = await phone.probe()
    finally:
        for transport in phone.transports:
            transport.close()
    after = await gw.metrics()
    refused = sum(1 for c in CASES if c.parser is not None)
    parse_errors = after["seabridge_sip_parse_errors_total"] - before.get("seabridge_sip_parse_errors_total", 0.0)
    assert parse_errors == refused
    assert gw.process is not None and gw.process.returncode is None
    assert "Traceback" not in gw.log_tail(10**7)
    assert not [r for r in gw.log_records() if r.get("level") == "error"]
    print(
        f"\nRFC 4475 over UDP: {len(outcomes)} messages, {refused} refused by the parser, {len(seen)} stray datagrams"
    )


async def _one(gw: GatewayProcess, phone: Phone, case: Case, keys: set[tuple[str, str, str]]) -> None:
    data = case.data
    try:
        parsed: Request | Response | None = parse_message(data)
    except SipParseError:
        parsed = None
    if isinstance(parsed, Request):
        key = _server_key(parsed)
        if key in keys:
            await _transactions_drained(gw)
        if key is not None:
            keys.add(key)
    identity = _identity(data)
    phone.send(data)
    if case.gateway is None:
        stray = await phone.probe()
        assert not [d for d in stray if identity in d], f"{case.name}: answered, but must be dropped"
        return
    answer, _ = await phone.answer(identity)
    assert _status(answer) == case.gateway, f"{case.name} ({case.section}): {answer[:200]!r}"
    if parsed is None:
        # The answer to a request we could not parse copies its Via, From, To, Call-ID and
        # CSeq as they came, flaws included: read it as text.
        cseq = _header(data, "CSeq")
        assert cseq is None or _header(answer, "CSeq") == cseq
        return
    response = parse_message(answer)
    assert isinstance(response, Response)
    _check_answer(case, parsed, response)


def _header(data: bytes, name: str) -> bytes | None:
    m = re.search(rb"(?im)^" + name.encode() + rb"[ \t]*:[ \t]*([^\r\n]*)", data)
    return m[1] if m else None


def _check_answer(case: Case, request: Request | Response | None, response: Response) -> None:
    assert isinstance(request, Request)
    assert response.call_id == request.call_id and response.cseq == request.cseq, case.name
    assert response.top_via.branch == request.top_via.branch
    if case.gateway == 420:
        assert response.headers.get_all("Unsupported") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    if case.gateway in (415, 406):
        assert response.headers.get("Accept") == "application/sdp"
    if case.gateway in (405, 501):
        assert "INVITE" in (response.headers.get("Allow") or "")
    if case.gateway in (401, 407):
        challenge = response.headers.get("WWW-Authenticate" if case.gateway == 401 else "Proxy-Authenticate")
        assert challenge is not None and challenge.startswith("Digest ")
    if case.gateway == 200:
        assert response.headers.get("Allow") is not None
