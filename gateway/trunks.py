"""Trunks to other SIP systems (the HQ PBX, other gateways): registration, liveness, identity.

Each configured trunk may register with its peer (RegistrationClient core) and is
probed with OPTIONS; both feed a status the API shows and the router consults,
so a call to a trunk that is down or refusing us fails at once with 503 instead
of ringing into the void for Timer B.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config import TrunkConfig
from gateway.sip.client_auth import ClientCredentials
from gateway.sip.dialog import new_call_id, new_tag, via_header
from gateway.sip.message import Headers, Request
from gateway.sip.peer import Peer
from gateway.sip.reg_client import RegistrationClient, RegState
from gateway.sip.transaction import TimerConfig
from gateway.sip.uri import parse_uri

if TYPE_CHECKING:
    from gateway.sip_service import SipService

log = logging.getLogger("seabridge.trunks")


@dataclass
class TrunkStatus:
    name: str
    tenant: str
    peer: str
    reachable: bool | None = None  # None: not probed yet
    rtt_ms: float | None = None
    registration: str | None = None
    last_status: int | None = None
    last_reason: str = ""
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "peer": self.peer,
            "reachable": self.reachable,
            "rtt_ms": self.rtt_ms,
            "registration": self.registration,
            "last_status": self.last_status,
            "last_reason": self.last_reason,
        }


def trunk_timers(trunk: TrunkConfig, default: TimerConfig) -> TimerConfig | None:
    """The trunk's own T1/T2/Timer B (a satellite peer), or None to use the gateway's."""
    if not (trunk.t1_ms or trunk.t2_ms or trunk.timer_b_ms):
        return None
    t1 = trunk.t1_ms / 1000 if trunk.t1_ms else default.t1
    t2 = max(trunk.t2_ms / 1000 if trunk.t2_ms else default.t2, t1)
    timeout = trunk.timer_b_ms / 1000 if trunk.timer_b_ms else None
    return TimerConfig(t1=t1, t2=t2, t4=default.t4, timer_d=default.timer_d, timer_b=timeout)


class TrunkManager:
    def __init__(self, trunks: tuple[TrunkConfig, ...], sip: SipService) -> None:
        self._trunks = {t.name: t for t in trunks}
        self._sip = sip
        self.status = {
            t.name: TrunkStatus(t.name, t.tenant, str(self.peer_of(t)), registration="idle" if t.register else None)
            for t in trunks
        }
        self._clients: dict[str, RegistrationClient] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def peer_of(trunk: TrunkConfig) -> Peer:
        return Peer(trunk.host, trunk.port, trunk.transport)

    def get(self, name: str) -> TrunkConfig | None:
        return self._trunks.get(name)

    def timers(self, trunk: TrunkConfig) -> TimerConfig | None:
        return trunk_timers(trunk, self._sip.settings.timers)

    def credentials(self, trunk: TrunkConfig) -> ClientCredentials | None:
        return ClientCredentials(trunk.username, trunk.password) if trunk.username else None

    def identify(self, source: Peer, *, authenticated: bool = False) -> TrunkConfig | None:
        """The trunk a request came from, by address (and port if needed).

        IP-identified peering trusts it (trunks with ``inbound``); ``authenticated`` also finds
        trunks whose peer proves itself with digest, to know a call came through a trunk at all.
        """
        same_host = [t for t in self._trunks.values() if (t.inbound or authenticated) and t.host == source.host]
        exact = [t for t in same_host if t.port == source.port]
        if exact:
            return exact[0]
        return same_host[0] if len(same_host) == 1 and source.reliable else None

    def unavailable_reason(self, name: str) -> str | None:
        """Why calls to this trunk would fail now, or None if it looks usable."""
        st = self.status[name]
        if st.reachable is False:
            return f"trunk {name} is down (no answer to OPTIONS)"
        if st.registration in (RegState.REFUSED.value,):
            return f"trunk {name} refused our registration ({st.last_status} {st.last_reason})"
        return None

    async def start(self) -> None:
        for trunk in self._trunks.values():
            if trunk.register:
                self._tasks.append(asyncio.create_task(self._register_loop(trunk)))
            if trunk.options_interval_s:
                self._tasks.append(asyncio.create_task(self._options_loop(trunk)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- registration -------------------------------------------------------------------

    async def _register_loop(self, trunk: TrunkConfig) -> None:
        peer = self.peer_of(trunk)
        local = self._sip.host_for(trunk.transport)
        client = RegistrationClient(
            registrar=f"{trunk.host}:{trunk.port}",
            domain=trunk.sip_domain,
            credentials=ClientCredentials(trunk.username, trunk.password),
            contact=f"sip:{trunk.username}@{local}"
            + ("" if trunk.transport == "UDP" else f";transport={trunk.transport.lower()}"),
            local_host=local,
            transport=trunk.transport,
            expires=trunk.register_expires,
        )
        self._clients[trunk.name] = client
        loop = asyncio.get_running_loop()
        request: Request | None = client.start(loop.time())
        while True:
            while request is not None:
                response = await self._sip.request(request, peer, self.timers(trunk))
                now = loop.time()
                if response is None:
                    client.on_timeout(now)
                    request = None
                else:
                    request = client.on_response(response, now)
            self._report(trunk, client)
            assert client.next_at is not None
            await asyncio.sleep(max(0.0, client.next_at - loop.time()))
            request = client.start(loop.time())

    def _report(self, trunk: TrunkConfig, client: RegistrationClient) -> None:
        st = self.status[trunk.name]
        changed = st.registration != client.state.value
        st.registration = client.state.value
        st.last_status, st.last_reason = client.last_status, client.last_reason
        if changed:
            st.since = time.time()
            level = logging.INFO if client.state is RegState.REGISTERED else logging.WARNING
            log.log(
                level,
                "trunk registration",
                extra={"trunk": trunk.name, "state": client.state.value, "status": client.last_status,
                       "reason": client.last_reason},
            )  # fmt: skip

    # --- liveness ------------------------------------------------------------------------

    async def _options_loop(self, trunk: TrunkConfig) -> None:
        peer = self.peer_of(trunk)
        while True:
            started = time.monotonic()
            response = await self._sip.request(self._options(trunk), peer, self.timers(trunk))
            st = self.status[trunk.name]
            reachable = response is not None
            if reachable != st.reachable:
                st.since = time.time()
                log.log(
                    logging.INFO if reachable else logging.WARNING,
                    "trunk " + ("up" if reachable else "down"),
                    extra={"trunk": trunk.name, "peer": str(peer)},
                )
            st.reachable = reachable
            st.rtt_ms = round((time.monotonic() - started) * 1000, 1) if reachable else None
            await asyncio.sleep(trunk.options_interval_s)

    def _options(self, trunk: TrunkConfig) -> Request:
        local = self._sip.host_for(trunk.transport)
        me = trunk.username or "seabridge"
        pairs = [
            ("Via", via_header(trunk.transport, local)),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{me}@{trunk.sip_domain}>;tag={new_tag()}"),
            ("To", f"<sip:{trunk.sip_domain}>"),
            ("Call-ID", new_call_id("seabridge")),
            ("CSeq", "1 OPTIONS"),
            ("User-Agent", "Seabridge"),
        ]
        return Request(headers=Headers(tuple(pairs)), method="OPTIONS", uri=parse_uri(f"sip:{trunk.host}:{trunk.port}"))

    def snapshot(self, tenant: str | None = None) -> list[dict[str, object]]:
        return [s.as_dict() for s in self.status.values() if tenant is None or s.tenant == tenant]
