from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support.audio import write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp, SippResult

PASSWORDS = {
    "alice@acme": "alice-pass-1",
    "bob@acme": "bob-pass-22",
    "carol@acme": "carol-pass-333",
    "dave@globex": "dave-pass-4444",
    "erin@initech": "erin-pass-55555",  # initech keeps the default: SHA-256 and MD5 offered
}
SITES = {
    "alice@acme": "kinshasa",
    "bob@acme": "kinshasa",
    "carol@acme": "lubumbashi",
    "dave@globex": "conakry",
    "erin@initech": "luanda",
}


async def register_sipp(target: tuple[str, int], folder: Path, port: int, user: str = "bob@acme") -> None:
    """Register the sipp that will listen on ``port`` as ``user`` (a callee for sipp calls)."""
    name, domain = user.split("@")
    keys = {"user": name, "domain": domain, "password": PASSWORDS[user], "expires": "600", "expected": "200"}
    reg = await Sipp(target, folder, "register.xml", local_port=port, keys=keys).run()
    assert reg.ok, reg.output[-2000:]


async def sipp_calls(
    target: tuple[str, int],
    folder: Path,
    *,
    calls: int,
    rate: float,
    hold_ms: int = 100,
    extra: tuple[str, ...] = (),
    timeout: float = 120,
) -> SippResult:
    """alice@acme calls bob ``calls`` times with sipp (407 challenge, answer, BYE after ``hold_ms``)."""
    keys = {
        "user": "alice",
        "domain": "acme",
        "password": PASSWORDS["alice@acme"],
        "callee": "bob",
        "hold": str(hold_ms),
    }
    return await Sipp(target, folder, "uac_auth.xml", calls=calls, rate=rate, keys=keys, extra=extra).run(
        timeout=timeout
    )


@pytest.fixture(scope="session")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("tones")
    # Long enough that no phone hangs up because its "microphone" file ended.
    return {f: write_tone(folder / f"tone{f}.wav", f, seconds=60) for f in (1000, 1500, 2000)}


@pytest_asyncio.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    # sipp 3.6 answers only MD5 and takes the first challenge (RFC 8760 says: the first it
    # supports), so the gateway offers MD5 first; baresip 1.0 refuses any SHA-256 challenge,
    # so the tenants whose users test with baresip are offered MD5 alone.
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        sip_extra='digest_algorithms = ["MD5", "SHA-256"]',
        extra_config="".join(f'[[tenants]]\ndomain = "{t}"\ndigest_algorithms = ["MD5"]\n' for t in ("acme", "globex")),
    )
    gw.write_config()
    for address, password in PASSWORDS.items():
        gw.add_user(address, SITES[address], password)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


PhoneFactory = Callable[..., Awaitable[Baresip]]
_phone_ids = itertools.count()


@pytest_asyncio.fixture
async def phone(gateway: GatewayProcess, tmp_path: Path, tones: dict[int, Path]) -> AsyncIterator[PhoneFactory]:
    """Start baresip phones registered (or not) to the test gateway; all stopped afterwards."""
    started: list[Baresip] = []

    async def make(
        address: str, tone: int = 1000, password: str | None = None, register: bool = True, transport: str = "udp"
    ) -> Baresip:
        user, domain = address.split("@")
        pw = password if password is not None else PASSWORDS.get(address)
        name = f"{user}{next(_phone_ids)}"
        port = gateway.tls_port if transport == "tls" else gateway.sip_port
        ca = str(gateway.certificate) if transport == "tls" else ""
        p = Baresip(
            name,
            tmp_path / name,
            PhoneAccount(user, domain, pw, ("127.0.0.1", port), register, transport, ca),
            tones[tone],
        )
        started.append(p)
        await p.start()
        if register:
            await p.wait_registered()
        return p

    try:
        yield make
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
