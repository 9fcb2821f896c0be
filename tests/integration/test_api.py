"""The HTTP API behind tokens: a tenant token never sees another tenant."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.integration.conftest import PhoneFactory
from tests.support.gateway import GatewayProcess, seabridge


def token(gw: GatewayProcess, *scope: str) -> str:
    result = seabridge("token", "create", *scope, "--label", "test", config=gw.config_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def get(gw: GatewayProcess, path: str, bearer: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gw.http_port}{path}", headers=headers) as resp:
            return resp.status, await resp.json()


async def test_tokens_scope_registrations_and_calls(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    admin = token(gateway, "--admin")
    acme = token(gateway, "--tenant", "acme")
    globex = token(gateway, "--tenant", "globex")
    alice = await phone("alice@acme")
    bob = await phone("bob@acme")
    await phone("dave@globex")
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    try:
        status, body = await get(gateway, "/api/registrations", acme)
        aors = {r["aor"] for r in body["registrations"]}  # type: ignore[union-attr, index]
        assert status == 200 and {"alice@acme", "bob@acme"} <= aors and "dave@globex" not in aors
        status, body = await get(gateway, "/api/calls", acme)
        assert status == 200 and [c["callee"] for c in body["calls"]] == ["bob@acme"]  # type: ignore[union-attr, index]
        status, body = await get(gateway, "/api/calls", globex)
        assert status == 200 and body["calls"] == []
        status, body = await get(gateway, "/api/registrations", globex)
        assert {r["aor"] for r in body["registrations"]} == {"dave@globex"}  # type: ignore[union-attr, index]
        status, _ = await get(gateway, "/api/registrations?tenant=acme", globex)
        assert status == 403
        status, body = await get(gateway, "/api/registrations", admin)
        assert {"alice@acme", "dave@globex"} <= {r["aor"] for r in body["registrations"]}  # type: ignore[union-attr, index]
        for bad in (None, "sbt_nope_nope", acme[:-2] + "xx"):
            status, _ = await get(gateway, "/api/calls", bad)
            assert status == 401
        token_id = globex.split("_")[1]
        assert seabridge("token", "revoke", token_id, config=gateway.config_path).returncode == 0
        status, _ = await get(gateway, "/api/calls", globex)
        assert status == 401
    finally:
        await alice.hangup()
        await asyncio.sleep(0.2)
