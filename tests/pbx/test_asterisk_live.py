"""The PBX integration against a real Asterisk (Debian unstable's, in the cached chroot)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.cdr_store import SqliteCdrStore
from gateway.pbx.ami import AmiClient, AmiConnected, AmiDisconnected
from gateway.pbx.ami_events import ChannelCreated, ChannelHungUp, DialEnded, ExtensionStateChanged
from gateway.pbx.api import add_pbx_routes
from gateway.pbx.click_to_call import ClickToCall
from gateway.pbx.errors import AmiNotConnected
from gateway.pbx.presence import ExtensionState, PresenceChanged
from gateway.pbx.service import PbxService
from tests.pbx.asterisk import AsteriskInstance, StaticPhone
from tests.pbx.conftest import TRUNK_ACCOUNT, EventLog, LogWaiter, make_client, pbx_config, running_asterisk
from tests.support.ports import free_port
from tests.support.sipp import Sipp

pytestmark = pytest.mark.peers
SIPP = Path(__file__).with_name("sipp")


def phone(ast: AsteriskInstance, folder: Path, port: int, ring_ms: int = 200) -> Sipp:
    """A sipp UAS standing in for an HQ desk phone (or the gateway's trunk side) at ``port``."""
    return Sipp(
        ("127.0.0.1", ast.plan.sip_port),
        folder,
        str(SIPP / "uas_answer.xml"),
        keys={"ring": str(ring_ms)},
        local_port=port,
    )


def ext(ast: AsteriskInstance, extension: str) -> StaticPhone:
    return next(p for p in ast.plan.phones if p.extension == extension)


def is_up_dial_to(prefix: str) -> object:
    return lambda e: isinstance(e, DialEnded) and e.callee.channel.startswith(prefix) and e.status == "ANSWER"


async def test_ami_login_ping_and_events(
    asterisk: AsteriskInstance, ami: tuple[AmiClient, EventLog], tmp_path: Path
) -> None:
    client, log = ami
    pong = await client.action("Ping")
    assert pong.response.get("Ping") == "Pong" and client.connects == 1
    assert isinstance(log.events[0], AmiConnected)
    session = uuid.uuid4().hex
    call = Sipp(
        ("127.0.0.1", asterisk.plan.sip_port),
        tmp_path / "uac",
        str(SIPP / "uac_session.xml"),
        keys={"user": "seabridge", "password": asterisk.plan.trunk_password, "session": session, "hold": "300"},
        extra=("-s", "600"),
    )
    result = await call.run(60)
    assert result.ok, result.output
    created = await log.wait_for(lambda e: isinstance(e, ChannelCreated) and e.channel.endpoint == "seabridge")
    hungup = await log.wait_for(lambda e: isinstance(e, ChannelHungUp) and e.channel.endpoint == "seabridge")
    assert isinstance(created, ChannelCreated) and isinstance(hungup, ChannelHungUp)
    assert created.channel.exten == "600" and hungup.channel.uniqueid == created.channel.uniqueid
    # The Session-ID the "gateway" put on its INVITE came back in Asterisk's events.
    assert hungup.channel.variable("SEABRIDGE_SESSION_ID") == session


async def test_session_id_round_trip_gives_exactly_one_record(
    asterisk: AsteriskInstance, pbx: tuple[PbxService, EventLog], cdr_store: SqliteCdrStore, tmp_path: Path
) -> None:
    service, log = pbx
    sessions = [uuid.uuid4().hex for _ in range(2)]
    for i, session in enumerate(sessions):
        call = Sipp(
            ("127.0.0.1", asterisk.plan.sip_port),
            tmp_path / f"uac{i}",
            str(SIPP / "uac_session.xml"),
            keys={"user": "seabridge", "password": asterisk.plan.trunk_password, "session": session, "hold": "200"},
            extra=("-s", "600"),
        )
        assert (await call.run(60)).ok
    for session in sessions:
        await log.wait_for(
            lambda e, s=session: isinstance(e, ChannelHungUp) and e.channel.variable("SEABRIDGE_SESSION_ID") == s
        )
    await service.drain()
    rows = [r for r in await cdr_store.list("acme") if r.session_id in sessions]
    assert sorted(r.session_id for r in rows) == sorted(sessions)  # one row per call, however many events
    for row in rows:
        assert (row.leg, row.ingress, row.callee, row.disposition) == ("pbx", False, "600", "answered")
        assert row.account == "" and row.answer is not None and row.end >= row.answer
    # Writing the same record again (a replay after a restart) keeps one row.
    assert await cdr_store.write(rows[0]) is False


async def test_click_to_call_from_hq_to_a_site_user_over_http(
    asterisk: AsteriskInstance, pbx: tuple[PbxService, EventLog], cdr_store: SqliteCdrStore, tmp_path: Path
) -> None:
    service, log = pbx

    def auth(request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "")
        if token == "Bearer admin":
            return None
        if token == "Bearer acme":
            return "acme"
        if token == "Bearer globex":
            return "globex"
        raise web.HTTPUnauthorized()

    app = web.Application()
    add_pbx_routes(app, service, auth)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    hq_phone = phone(asterisk, tmp_path / "2001", ext(asterisk, "2001").port, ring_ms=300)
    gateway_side = phone(asterisk, tmp_path / "trunk", asterisk.plan.trunk_port, ring_ms=300)
    try:
        await hq_phone.start()
        await gateway_side.start()
        url = f"http://127.0.0.1:{port}/api/calls"
        async with aiohttp.ClientSession() as http:
            body = {"from": "2001", "to": "alice@acme"}
            async with http.post(url, json=body) as r:
                assert r.status == 401
            async with http.post(url, json=body, headers={"Authorization": "Bearer globex"}) as r:
                assert r.status == 403  # another tenant's PBX
            async with http.post(
                url, json={"from": "2001", "to": "a&b"}, headers={"Authorization": "Bearer acme"}
            ) as r:
                assert r.status == 400
            async with http.post(url, json=body, headers={"Authorization": "Bearer acme"}) as r:
                assert r.status == 202
                answer = await r.json()
            session = answer["session_id"]
            await log.wait_for(is_up_dial_to("PJSIP/seabridge-"))  # both ends rang and answered
            async with http.get(
                f"http://127.0.0.1:{port}/api/pbx/status", headers={"Authorization": "Bearer admin"}
            ) as r:
                assert (await r.json())["ami_connected"] is True
        await asterisk.cli("channel request hangup all")
        assert (await hq_phone.wait(30)).ok and (await gateway_side.wait(30)).ok
    finally:
        await hq_phone.stop()
        await gateway_side.stop()
        await runner.cleanup()
    # The INVITE that reached the "gateway" carried the Session-ID minted for the click.
    messages = (await gateway_side.wait(5)).messages
    assert f"Session-ID: {session};remote=" in messages and "INVITE sip:alice@" in messages
    assert 'From: "2001" <sip:2001@' in messages  # the site user sees who at HQ is calling
    await log.wait_for(lambda e: isinstance(e, ChannelHungUp) and e.channel.endpoint == "seabridge")
    await service.drain()
    (row,) = [r for r in await cdr_store.list("acme") if r.session_id == session]
    assert (row.account, row.callee, row.caller, row.disposition) == (TRUNK_ACCOUNT, "alice", "2001", "answered")


async def test_click_to_call_between_hq_extensions_and_presence(
    asterisk: AsteriskInstance, cdr_store: SqliteCdrStore, tmp_path: Path
) -> None:
    # Dialling without a site prefix: one HQ phone rings, answers, and rings another.
    service = PbxService(
        pbx_config(asterisk, site_dial_prefix=""), make_client(asterisk), node="hq-gw", record_sink=cdr_store.write
    )
    log = EventLog()
    service.client.add_listener(log)
    changes: list[PresenceChanged] = []
    seen = asyncio.Event()

    def on_presence(change: PresenceChanged) -> None:
        changes.append(change)
        seen.set()

    service.add_presence_listener(on_presence)
    service.start()
    caller = phone(asterisk, tmp_path / "2002", ext(asterisk, "2002").port, ring_ms=200)
    callee = phone(asterisk, tmp_path / "2003", ext(asterisk, "2003").port, ring_ms=600)
    try:
        async with asyncio.timeout(20):
            await service.client.wait_ready()

        async def state_of(exten: str, state: ExtensionState, start: int = 0) -> None:
            async with asyncio.timeout(20):
                while not any(c.presence.exten == exten and c.presence.state is state for c in changes[start:]):
                    seen.clear()
                    await seen.wait()

        await state_of("2003", ExtensionState.IDLE)  # from ExtensionStateList after login
        await caller.start()
        await callee.start()
        started = await service.click_to_call(ClickToCall("2002", "2003"))
        await state_of("2003", ExtensionState.RINGING)
        await state_of("2003", ExtensionState.BUSY)
        finished = await asyncio.wait_for(started.ticket.finished, 30)
        assert finished.success and finished.reason == 4  # the first leg (2002) answered
        assert service.presence.get("2003") is not None
        mark = len(changes)
        await asterisk.cli("channel request hangup all")
        assert (await caller.wait(30)).ok and (await callee.wait(30)).ok
        await state_of("2003", ExtensionState.IDLE, mark)
        ringing = await log.wait_for(
            lambda e: isinstance(e, ExtensionStateChanged) and e.exten == "2003" and e.status_text == "Ringing"
        )
        assert isinstance(ringing, ExtensionStateChanged) and ringing.hint == "PJSIP/2003"
    finally:
        await caller.stop()
        await callee.stop()
        await service.close()
    # A call among HQ phones is not the gateway's to record.
    assert [r for r in await cdr_store.list() if r.session_id == started.session_id] == []


async def test_failed_phone_login_is_logged_as_a_security_event(
    asterisk: AsteriskInstance, pbx: tuple[PbxService, EventLog], security_logs: LogWaiter, tmp_path: Path
) -> None:
    bad = Sipp(
        ("127.0.0.1", asterisk.plan.sip_port),
        tmp_path / "bad",
        str(SIPP / "register_wrong.xml"),
        keys={"user": "1001", "password": "not-the-password"},
    )
    assert (await bad.run(60)).ok
    record = await security_logs.wait_for(lambda r: getattr(r, "security_event", "") == "ChallengeResponseFailed")
    fields = record.__dict__
    assert record.levelname == "WARNING" and fields["account"] == "1001" and fields["service"] == "PJSIP"
    assert fields["remote_ip"] == "127.0.0.1" and fields["source"] == f"127.0.0.1:{bad.local_port}"


async def test_ami_reconnects_after_asterisk_restarts(asterisk_root: Path, tmp_path: Path) -> None:
    async with running_asterisk(asterisk_root, tmp_path / "asterisk") as ast:
        client = make_client(ast)
        log = EventLog()
        client.add_listener(log)
        client.start()
        try:
            await log.wait_for(lambda e: isinstance(e, AmiConnected))
            await ast.stop()
            lost = await log.wait_for(lambda e: isinstance(e, AmiDisconnected))
            assert isinstance(lost, AmiDisconnected) and lost.retry_in <= 1.2
            with pytest.raises(AmiNotConnected):
                await client.action("Ping")
            mark = len(log.events)
            await ast.start()
            await log.wait_for(lambda e: isinstance(e, AmiConnected), timeout=30, start=mark)
            assert client.connects == 2
            assert (await client.action("Ping")).response.get("Ping") == "Pong"
            failures = [e for e in log.events if isinstance(e, AmiDisconnected)]
            print(f"AMI reconnect: {len(failures)} failed attempt(s) while Asterisk restarted")
        finally:
            await client.close()


async def test_wrong_ami_secret_never_logs_in(asterisk: AsteriskInstance) -> None:
    client = make_client(asterisk, secret="not-the-secret")
    log = EventLog()
    client.add_listener(log)
    client.start()
    try:
        first = await log.wait_for(lambda e: isinstance(e, AmiDisconnected))
        assert isinstance(first, AmiDisconnected) and "login refused" in first.reason
        await log.wait_for(lambda e: isinstance(e, AmiDisconnected), start=log.events.index(first) + 1)
        assert client.connects == 0 and not client.ready  # it keeps trying, with back-off
    finally:
        await client.close()
