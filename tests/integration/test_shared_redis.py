"""Two gateways sharing a real redis-server: a phone registered on one is reached from the other."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORDS, SITES
from tests.support.audio import write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.gateway import GatewayProcess
from tests.support.services import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def test_bindings_in_redis_are_shared_between_gateways(tmp_path: Path, redis_url: str) -> None:
    gateways = []
    for name in ("one", "two"):
        gw = GatewayProcess(
            tmp_path / name,
            extra_config=f'[storage]\nredis_url = "{redis_url}"\n\n[[tenants]]\ndomain = "acme"\ndigest_algorithms = ["MD5"]\n',
        )
        gw.write_config()
        for address in ("alice@acme", "bob@acme"):
            gw.add_user(address, SITES[address], PASSWORDS[address])
        gateways.append(gw)
    one, two = gateways
    tone = write_tone(tmp_path / "tone.wav", 1000, 60)
    phones: list[Baresip] = []
    try:
        await asyncio.gather(one.start(), two.start())
        bob = Baresip(
            "bob", tmp_path / "bob", PhoneAccount("bob", "acme", PASSWORDS["bob@acme"], one.sip_address), tone
        )
        alice = Baresip(
            "alice", tmp_path / "alice", PhoneAccount("alice", "acme", PASSWORDS["alice@acme"], two.sip_address), tone
        )
        phones += [bob, alice]
        for p in phones:
            await p.start()
            await p.wait_registered()
        await alice.dial("sip:bob@acme")  # placed on gateway two; bob registered on gateway one
        await bob.wait_event("CALL_INCOMING")
        await bob.accept()
        await alice.wait_event("CALL_ESTABLISHED")
        await alice.hangup()
        await bob.wait_event("CALL_CLOSED")
    finally:
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)
        await asyncio.gather(one.stop(), two.stop())
