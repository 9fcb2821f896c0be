"""Issue 6 end to end: headless Chromium on the gateway's page, baresip phones, a real `seabridge run`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.audio import tone_present
from tests.support.gateway import GatewayProcess
from tests.webrtc.conftest import BROWSER_TONE, PHONE_TONE, PageFactory, PhoneFactory, call_records


async def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def new_record(gw: GatewayProcess, caller: str, callee: str, known: int) -> dict[str, object]:
    """The call record of caller -> callee written after the first ``known`` ones."""

    async def find():  # type: ignore[no-untyped-def]
        rows = [dict(r) for r in call_records(gw) if (r["caller"], r["callee"]) == (caller, callee)]
        return rows[known] if len(rows) > known else None

    return await wait_for(find, what=f"a call record of {caller} -> {callee}")  # type: ignore[no-any-return]


def records_of(gw: GatewayProcess, caller: str, callee: str) -> int:
    return sum(1 for r in call_records(gw) if (r["caller"], r["callee"]) == (caller, callee))


async def test_browser_calls_phone_tones_both_ways_and_dtmf(
    gateway: GatewayProcess, phone_page: PageFactory, sip_phone: PhoneFactory, tmp_path: Path
) -> None:
    phone = await sip_phone("bob@acme")
    browser = await phone_page("alice@acme")
    known = records_of(gateway, "alice@acme", "bob@acme")
    started = time.monotonic()
    await browser.dial("bob")
    await phone.wait_event("CALL_INCOMING")
    await phone.accept()
    await browser.wait_connected()
    print(f"browser -> phone connected after {time.monotonic() - started:.2f}s")
    connected = [e for e in await browser.events() if e["type"] == "connected"][-1]
    assert connected["mode"] == "transcoded" and connected["video"] is False

    # The phone's 1000 Hz tone, through G.711 -> Opus, in what the browser receives.
    received = await browser.record_remote_audio(3.0, tmp_path)
    assert tone_present(received, PHONE_TONE), "the phone's tone did not reach the browser"
    assert not tone_present(received, BROWSER_TONE)

    for key in "5#":
        await browser.press(key)

    async def two_digits():  # type: ignore[no-untyped-def]
        return phone.count("CALL_DTMF_START") >= 2

    await wait_for(two_digits, what="two RFC 4733 digits at the phone")
    assert [e["param"] for e in phone.events if e.get("type") == "CALL_DTMF_START"] == ["5", "#"]

    await browser.hang_up()
    await phone.wait_event("CALL_CLOSED")
    # The page's recent calls list the call.
    await browser.page.wait_for_selector("#recent li button:has-text('bob@acme')", timeout=10000)
    # The browser's 1500 Hz tone (its fake microphone), through Opus -> G.711, in the phone's recording.
    recordings = phone.received_audio()
    assert recordings and tone_present(recordings[-1], BROWSER_TONE), "the browser's tone did not reach the phone"

    record = await new_record(gateway, "alice@acme", "bob@acme", known)
    assert record["category"] == "bridged" and record["disposition"] == "answered"
    metrics = await gateway.metrics()
    assert metrics['seabridge_webrtc_frames_decoded_total{kind="audio"}'] > 0  # transcoding really decodes


async def test_phone_calls_signed_in_browser_which_rings_and_answers(
    gateway: GatewayProcess, phone_page: PageFactory, sip_phone: PhoneFactory
) -> None:
    browser = await phone_page("carol@acme")
    phone = await sip_phone("bob@acme")
    known = records_of(gateway, "bob@acme", "carol@acme")
    await phone.dial("sip:carol@acme")
    ringing = await browser.wait_ringing()
    assert ringing["from"] == "bob@acme" and ringing["video"] is False
    await browser.answer()
    await browser.wait_connected()
    await phone.wait_event("CALL_ESTABLISHED")
    inbound = await wait_for(lambda: _packets(browser), what="audio from the phone at the browser")
    assert inbound > 0
    # Hold and resume from the page: re-INVITEs through the B2BUA, answered by the phone.
    for on in (True, False):
        await browser.page.click("#hold")
        await browser.page.wait_for_function(
            f"window.seabridge.events.some(e => e.type === 'held' && e.by === 'local' && e.on === {str(on).lower()})",
            timeout=10000,
        )
    # Hang-up on the phone's side ends the browser's call too.
    await phone.hangup()
    ended = await browser.wait_ended()
    assert ended["reason"] == "hangup"
    record = await new_record(gateway, "bob@acme", "carol@acme", known)
    assert record["category"] == "bridged" and record["ended_by"] == "caller"


async def _packets(browser) -> int:  # type: ignore[no-untyped-def]
    stat = await browser.stat("inbound-rtp", "audio")
    return int(stat.get("packetsReceived", 0))


async def test_two_browsers_video_call_is_forwarded_not_reencoded(
    gateway: GatewayProcess, phone_page: PageFactory
) -> None:
    before = await gateway.metrics()
    alice = await phone_page("alice@acme", browser=0)
    bob = await phone_page("bob@acme", browser=1)
    known = records_of(gateway, "alice@acme", "bob@acme")
    await alice.dial("bob", video=True)
    ringing = await bob.wait_ringing()
    assert ringing["video"] is True
    await bob.answer(video=True)
    await alice.wait_connected()
    await bob.wait_connected()
    for page in (alice, bob):
        connected = [e for e in await page.events() if e["type"] == "connected"][-1]
        assert connected["mode"] == "forwarded" and connected["video"] is True

    async def decoded(page) -> int:  # type: ignore[no-untyped-def]
        return int((await page.stat("inbound-rtp", "video")).get("framesDecoded", 0))

    for page in (alice, bob):
        frames = await wait_for(lambda page=page: _at_least(decoded(page), 30), what="decoded video frames")
        print(f"frames decoded by a browser: {frames}")
    after = await gateway.metrics()
    for kind in ("video", "audio"):
        for what in ("decoded", "encoded"):
            name = f'seabridge_webrtc_frames_{what}_total{{kind="{kind}"}}'
            assert after[name] == before[name], f"the gateway {what} {kind} in a forwarded call"
    forwarded = 'seabridge_webrtc_rtp_forwarded_total{kind="video"}'
    assert after[forwarded] > before[forwarded]
    await bob.hang_up()
    assert (await alice.wait_ended())["reason"] == "hangup"
    record = await new_record(gateway, "alice@acme", "bob@acme", known)
    assert record["category"] == "video"


async def _at_least(value, minimum: int) -> int:  # type: ignore[no-untyped-def]
    got = await value
    return got if got >= minimum else 0


async def test_a_user_cannot_call_another_tenants_user(phone_page: PageFactory) -> None:
    alice = await phone_page("alice@acme")
    await alice.dial("dave@globex")
    ended = await alice.wait_ended()
    assert ended["reason"] == "forbidden"


async def test_the_page_fits_a_phone_screen(phone_page: PageFactory) -> None:
    page = await phone_page("alice@acme", sign_in=False)
    await page.page.set_viewport_size({"width": 360, "height": 640})
    assert await page.page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.sign_in("alice@acme", "alice-pass-1")
    assert await page.page.evaluate("document.documentElement.scrollWidth") <= 360
    heights = await page.page.eval_on_selector_all(
        "#dialpad button", "bs => bs.map(b => b.getBoundingClientRect().height)"
    )
    assert len(heights) == 12 and min(heights) >= 44  # touch targets (WCAG 2.5.5)


async def test_a_user_with_a_phone_and_a_browser_is_answered_by_the_first_to_pick_up(
    gateway: GatewayProcess, phone_page: PageFactory, sip_phone: PhoneFactory
) -> None:
    desk = await sip_phone("carol@acme")
    browser = await phone_page("carol@acme")
    caller = await sip_phone("bob@acme")
    await caller.dial("sip:carol@acme")
    await desk.wait_event("CALL_INCOMING")
    await browser.wait_ringing()
    await browser.answer()
    await caller.wait_event("CALL_ESTABLISHED")
    closed = await desk.wait_event("CALL_CLOSED")  # the B2BUA cancelled the desk phone's fork
    assert desk.count("CALL_ESTABLISHED") == 0, closed
    await browser.wait_connected()
    await caller.hangup()
    await browser.wait_ended()


async def test_declining_on_the_page_tells_the_caller(phone_page: PageFactory, sip_phone: PhoneFactory) -> None:
    browser = await phone_page("alice@acme")
    caller = await sip_phone("bob@acme")
    await caller.dial("sip:alice@acme")
    await browser.wait_ringing()
    await browser.page.click("#decline")
    closed = await caller.wait_event("CALL_CLOSED")
    assert "603" in closed.get("param", ""), closed
    assert caller.count("CALL_ESTABLISHED") == 0
