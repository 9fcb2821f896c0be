"""RFC 8760 SHA-256 digest against a real client: Asterisk registers and calls through the gateway.

baresip 1.0 and sipp 3.6 answer only MD5 challenges, so until this test only our own code had
answered the gateway's SHA-256 challenges. Asterisk 22's pjsip answers SHA-256 as a UAC (``supported_algorithms_uac``):
here it signs in as two users of a tenant the gateway offers SHA-256 alone, and calls one user
from the other; the call comes back to Asterisk, which answers it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from gateway.sip.digest import client_response
from gateway.sip.headers import parse_auth_params
from tests.pbx.asterisk import MODULES, QUIET_ENDPOINT, AsteriskInstance, AsteriskPlan, modules_conf
from tests.support.gateway import GatewayProcess, seabridge
from tests.support.sipp import Sipp

TENANT = "acme"
USERS = ("bob", "carol")


def pjsip_conf(plan: AsteriskPlan, gateway_port: int, passwords: dict[str, str]) -> str:
    proxy = f"sip:127.0.0.1:{gateway_port}\\;lr"
    # `debug = yes` logs every SIP message, so the test reads the Authorization Asterisk sent.
    out = [
        "[global]\ntype = global\ndebug = yes\n",
        f"[transport-udp]\ntype = transport\nprotocol = udp\nbind = 127.0.0.1:{plan.sip_port}\n",
    ]
    for user in USERS:
        out.append(f"""\
[{user}-auth]
type = auth
auth_type = userpass
username = {user}
password = {passwords[user]}
supported_algorithms_uac = SHA-256

[{user}-reg]
type = registration
transport = transport-udp
outbound_auth = {user}-auth
server_uri = sip:{TENANT}
client_uri = sip:{user}@{TENANT}
contact_user = {user}
outbound_proxy = {proxy}
retry_interval = 5
expiration = 300

; Calls out as this user; a call from the gateway whose From is this user lands here too.
[{user}]
type = endpoint
transport = transport-udp
context = from-gateway
disallow = all
allow = ulaw
{QUIET_ENDPOINT}outbound_auth = {user}-auth
aors = {user}
from_user = {user}
from_domain = {TENANT}
callerid = {user.title()} <{user}>
outbound_proxy = {proxy}

[{user}]
type = aor
contact = sip:{TENANT}
""")
    return "\n".join(out)


EXTENSIONS_CONF = """\
[general]
static = yes
writeprotect = yes

[from-gateway]
; A call the gateway forked to a user registered here: answer and send the caller's audio back.
exten => _[a-z].,1,Answer()
 same => n,Echo()
"""


@dataclasses.dataclass
class Site:
    gateway: GatewayProcess
    asterisk: AsteriskInstance
    passwords: dict[str, str]
    token: str  # the tenant's API token
    folder: Path

    async def api(self, path: str) -> Any:
        return await self.gateway.api_get(path, self.token)

    async def wait_api(self, path: str, key: str, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while True:
                items: list[dict[str, Any]] = (await self.api(path))[key]
                if predicate(items):
                    return items
                await asyncio.sleep(0.2)

    def records(self) -> list[sqlite3.Row]:
        with sqlite3.connect(self.gateway.data_dir / "gateway.db") as db:
            db.row_factory = sqlite3.Row
            return list(db.execute("SELECT * FROM call_records ORDER BY start"))

    async def in_asterisk_log(self, header: str, enough: Callable[[list[str]], bool], timeout: float = 10) -> list[str]:
        """The values of ``header`` in the SIP messages Asterisk sent or received, once ``enough``.

        Asterisk's logger thread writes a moment after the message went out: wait for it.
        """
        path = self.asterisk.host_base / "log" / "messages.log"
        pattern = re.compile(rf"^{header}: (.*)$", re.MULTILINE | re.IGNORECASE)
        async with asyncio.timeout(timeout):
            while not enough(found := pattern.findall(path.read_text(errors="replace") if path.exists() else "")):
                await asyncio.sleep(0.1)
        return found


@pytest_asyncio.fixture
async def site(asterisk_root: Path, tmp_path: Path) -> AsyncIterator[Site]:
    passwords = {user: secrets.token_urlsafe(16) for user in USERS}
    gw = GatewayProcess(tmp_path / "gw")
    gw.extra_config = f'[[tenants]]\ndomain = "{TENANT}"\ndigest_algorithms = ["SHA-256"]\n'
    gw.write_config()
    for user in USERS:
        gw.add_user(f"{user}@{TENANT}", "kinshasa", passwords[user])
    plan = AsteriskPlan.fresh()
    overrides = {
        "pjsip.conf": pjsip_conf(plan, gw.sip_port, passwords),
        "extensions.conf": EXTENSIONS_CONF,
        "modules.conf": modules_conf(
            (*MODULES, "res_pjsip_outbound_registration", "res_pjsip_logger", "res_clioriginate")
        ),
    }
    ast = AsteriskInstance(asterisk_root, plan, tmp_path / "asterisk", overrides=overrides)
    ast.write_configs()
    try:
        await gw.start()  # first: Asterisk registers as soon as it has booted
        await ast.start()
        # Asterisk spreads its first REGISTERs over up to 10 s: send them now.
        await ast.cli("pjsip send register *all")
        token = seabridge("token", "create", "--tenant", TENANT, config=gw.config_path).stdout.strip()
        yield Site(gw, ast, passwords, token, tmp_path)
    finally:
        await ast.stop()
        ast.remove()
        await gw.stop()


def register_with_md5(gateway: tuple[str, int], user: str, password: str) -> tuple[str, int]:
    """REGISTER, then answer the challenge with a correct MD5 digest; the challenge and final status.

    sipp gives up before sending anything MD5 to a SHA-256 challenge; this client does not, so
    the gateway itself must refuse an algorithm the tenant does not offer.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        call_id = secrets.token_hex(8)

        def register(cseq: int, extra: str = "") -> str:
            sock.sendto(
                f"REGISTER sip:{TENANT} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(8)};rport\r\n"
                f"From: <sip:{user}@{TENANT}>;tag={call_id}\r\nTo: <sip:{user}@{TENANT}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{port}>\r\n"
                f"Max-Forwards: 70\r\nExpires: 300\r\n{extra}Content-Length: 0\r\n\r\n".encode(),
                gateway,
            )
            return sock.recv(65535).decode()

        challenge = re.search(r"^WWW-Authenticate: (.*)\r$", register(1), re.MULTILINE | re.IGNORECASE)
        assert challenge is not None
        _, params = parse_auth_params(challenge.group(1))
        nc, cnonce = "00000001", secrets.token_hex(8)
        response = client_response(
            "MD5", user, params["realm"], password, "REGISTER", f"sip:{TENANT}", params["nonce"], nc, cnonce
        )
        authorization = (
            f'Authorization: Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
            f'uri="sip:{TENANT}", response="{response}", algorithm=MD5, cnonce="{cnonce}", '
            f'opaque="{params["opaque"]}", qop=auth, nc={nc}\r\n'
        )
        final = register(2, authorization)
        return challenge.group(1), int(final.split(" ", 2)[1])


async def test_asterisk_registers_and_calls_with_sha256_only(site: Site) -> None:
    registered = await site.wait_api(
        "/api/registrations", "registrations", lambda regs: {r["aor"] for r in regs} >= {"bob@acme", "carol@acme"}
    )
    assert {r["contact"] for r in registered} == {f"sip:{u}@127.0.0.1:{site.asterisk.plan.sip_port}" for u in USERS}
    auths = await site.in_asterisk_log(
        "Authorization", lambda found: set(re.findall(r'username="(\w+)"', " ".join(found))) == set(USERS)
    )
    assert all("algorithm=SHA-256" in a for a in auths), auths

    # Negative controls, with bob's real password: an MD5-only client (sipp 3.6) cannot answer
    # the challenge, and a client that answers it with MD5 anyway is refused.
    sipp = await Sipp(
        site.gateway.sip_address,
        site.folder / "sipp-md5",
        "register.xml",
        keys={"user": "bob", "domain": TENANT, "password": site.passwords["bob"], "expires": "300", "expected": "200"},
        timeout_s=10,
    ).run(timeout=30)
    assert not sipp.ok and "authentication must use MD5" in sipp.output, sipp.output
    assert re.findall(r"algorithm=([\w-]+)", sipp.messages) == ["SHA-256"], sipp.messages
    challenge, status = await asyncio.to_thread(
        register_with_md5, site.gateway.sip_address, "bob", site.passwords["bob"]
    )
    assert "algorithm=SHA-256" in challenge and "MD5" not in challenge, challenge
    assert status == 401
    bob = [r for r in (await site.api("/api/registrations"))["registrations"] if r["aor"] == "bob@acme"]
    assert [r["contact"] for r in bob] == [f"sip:bob@127.0.0.1:{site.asterisk.plan.sip_port}"], bob

    out = await site.asterisk.cli("channel originate PJSIP/bob@carol application Wait 60")
    assert out.strip() == "", out
    calls = await site.wait_api("/api/calls", "calls", lambda cs: any(c["answered"] for c in cs))
    (call,) = calls
    assert (call["caller"], call["callee"]) == ("carol@acme", "bob@acme"), call
    # A 407 or the INVITE may be retransmitted: every copy must say SHA-256.
    challenges = await site.in_asterisk_log("Proxy-Authenticate", bool)  # the gateway's 407
    assert all("algorithm=SHA-256" in c and "MD5" not in c for c in challenges), challenges
    answers = await site.in_asterisk_log("Proxy-Authorization", bool)
    assert all('username="carol"' in a and "algorithm=SHA-256" in a for a in answers), answers

    await site.asterisk.cli("channel request hangup all")
    async with asyncio.timeout(20):
        while not (rows := [r for r in site.records() if r["session_id"] == call["session_id"] and r["leg"] == "a"]):
            await asyncio.sleep(0.1)
    (row,) = rows
    assert (row["disposition"], row["caller"], row["callee"]) == ("answered", "carol@acme", "bob@acme"), dict(row)
    assert row["answer"] is not None and row["account"] == "carol@acme"
