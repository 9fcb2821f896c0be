"""Real peers for the browser phone: a `seabridge run` gateway, headless Chromium and baresip phones."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Playwright, async_playwright

from tests.support.audio import write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.browser import PhonePage, launch
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port, port_block

PASSWORDS = {
    "alice@acme": "alice-pass-1",
    "bob@acme": "bob-pass-22",
    "carol@acme": "carol-pass-333",
    "dave@globex": "dave-pass-4444",
}
PHONE_TONE = 1000  # what baresip phones play
BROWSER_TONE = 1500  # what the browsers' fake microphones play


def webrtc_section(https_port: int, extra: str = "", address: str = "127.0.0.1") -> str:
    ice_first, ice_last = port_block()
    rtp_first, rtp_last = port_block()
    return f"""
[webrtc]
https_bind = "{address}"
https_port = {https_port}
ice_addresses = ["{address}"]
ice_port_min = {ice_first}
ice_port_max = {ice_last}
rtp_port_min = {rtp_first}
rtp_port_max = {rtp_last}
{extra}
"""


# baresip 1.0 refuses SHA-256 challenges, so the test tenants offer MD5 alone.
TENANTS = "".join(f'[[tenants]]\ndomain = "{t}"\ndigest_algorithms = ["MD5"]\n' for t in ("acme", "globex"))


async def start_gateway(folder: Path, webrtc_extra: str = "", address: str = "127.0.0.1") -> GatewayProcess:
    https_port = free_port(host=address)
    gw = GatewayProcess(folder, extra_config=webrtc_section(https_port, webrtc_extra, address) + TENANTS)
    gw.https_port = https_port  # type: ignore[attr-defined]
    gw.https_address = address  # type: ignore[attr-defined]
    gw.write_config()
    for address, password in PASSWORDS.items():
        gw.add_user(address, "kinshasa", password)
    await gw.start()
    return gw


def page_url(gw: GatewayProcess) -> str:
    return f"https://{gw.https_address}:{gw.https_port}/"  # type: ignore[attr-defined]


def call_records(gw: GatewayProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM call_records ORDER BY start"))


@pytest.fixture(scope="session")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("webrtc-tones")
    return {
        "phone": write_tone(folder / "phone.wav", PHONE_TONE, seconds=60),
        # Chromium's fake microphone loops this file; 48 kHz is its capture rate.
        "browser": write_tone(folder / "browser.wav", BROWSER_TONE, seconds=10, rate=48000),
    }


@pytest_asyncio.fixture(scope="session")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    gw = await start_gateway(tmp_path_factory.mktemp("webrtc-gateway"))
    try:
        yield gw
    finally:
        await gw.stop()


@pytest_asyncio.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as p:
        yield p


BrowserFactory = Callable[[], Awaitable[BrowserContext]]


@pytest_asyncio.fixture(scope="session")
async def browsers(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory, tones: dict[str, Path]
) -> AsyncIterator[list[BrowserContext]]:
    """Two independent browsers (own profiles, so own storage), started once for the session."""
    contexts = []
    try:
        for name in ("browser-a", "browser-b"):
            contexts.append(await launch(playwright, tmp_path_factory.mktemp(name), tones["browser"]))
        yield contexts
    finally:
        for context in contexts:
            with contextlib.suppress(Exception):
                await context.close()


PageFactory = Callable[..., Awaitable[PhonePage]]


@pytest_asyncio.fixture
async def phone_page(gateway: GatewayProcess, browsers: list[BrowserContext]) -> AsyncIterator[PageFactory]:
    """Open the phone page, signed in as a user, in browser 0 or 1; pages are closed after the test."""
    opened: list[PhonePage] = []

    async def make(address: str, browser: int = 0, sign_in: bool = True) -> PhonePage:
        page = PhonePage(await browsers[browser].new_page(), page_url(gateway))
        opened.append(page)
        await page.open()
        if sign_in:
            await page.sign_in(address, PASSWORDS[address])
        return page

    try:
        yield make
    finally:
        for page in opened:
            with contextlib.suppress(Exception):
                await page.page.evaluate("localStorage.clear()")
            with contextlib.suppress(Exception):
                await page.page.close()


PhoneFactory = Callable[..., Awaitable[Baresip]]
_phone_ids = itertools.count()


@pytest_asyncio.fixture
async def sip_phone(gateway: GatewayProcess, tmp_path: Path, tones: dict[str, Path]) -> AsyncIterator[PhoneFactory]:
    started: list[Baresip] = []

    async def make(address: str) -> Baresip:
        user, domain = address.split("@")
        name = f"{user}{next(_phone_ids)}"
        phone = Baresip(
            name, tmp_path / name, PhoneAccount(user, domain, PASSWORDS[address], gateway.sip_address), tones["phone"]
        )
        started.append(phone)
        await phone.start()
        await phone.wait_registered()
        return phone

    try:
        yield make
    finally:
        for phone in started:
            with contextlib.suppress(Exception):
                await phone.stop()
