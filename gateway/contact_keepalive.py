"""OPTIONS keep-alive of registered contacts: a phone that stops answering loses its binding.

Any answer (even 404 or 405) proves the phone is there; only silence until the
transaction times out drops the binding, and only the binding that was pinged (the
phone may have re-registered meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.location import LocationStore
from gateway.sip.dialog import new_call_id, new_tag, via_header
from gateway.sip.message import Headers, Request, Response
from gateway.sip.peer import Peer
from gateway.sip.registrar import Binding
from gateway.sip.uri import parse_uri

log = logging.getLogger("seabridge.sip.keepalive")

SendRequest = Callable[[Request, Peer], Awaitable[Response | None]]


def options_ping(contact: str, destination: Peer, host: str, user_agent: str) -> Request:
    """An out-of-dialog OPTIONS to ``contact`` sent from ``host`` (our address on its transport)."""
    pairs = [
        ("Via", via_header(destination.transport, host)),
        ("Max-Forwards", "70"),
        ("From", f"<sip:keepalive@{host}>;tag={new_tag()}"),
        ("To", f"<{contact}>"),
        ("Call-ID", new_call_id(host)),
        ("CSeq", "1 OPTIONS"),
        ("User-Agent", user_agent),
    ]
    return Request(headers=Headers(tuple(pairs)), method="OPTIONS", uri=parse_uri(contact))


class ContactKeepalive:
    def __init__(
        self,
        locations: LocationStore,
        interval: float,
        send: SendRequest,
        destination_for: Callable[[Binding], Peer],
        host_for: Callable[[str], str],
        user_agent: str,
        now: Callable[[], float],
    ) -> None:
        self._locations = locations
        self._interval = interval
        self._send = send
        self._destination_for = destination_for
        self._host_for = host_for
        self._user_agent = user_agent
        self._now = now

    async def run(self, spawn: Callable[[Awaitable[None]], None]) -> None:
        """Ping every contact each interval (each ping its own task); runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            for aor, bindings in (await self._locations.list_all(self._now())).items():
                for binding in bindings:
                    spawn(self.ping(aor, binding))

    async def ping(self, aor: str, binding: Binding) -> None:
        destination = self._destination_for(binding)
        request = options_ping(binding.contact, destination, self._host_for(destination.transport), self._user_agent)
        if await self._send(request, destination) is not None:
            return
        now = self._now()
        current = await self._locations.get(aor, now)
        remaining = tuple(
            b for b in current if (b.contact, b.call_id, b.cseq) != (binding.contact, binding.call_id, binding.cseq)
        )
        if len(remaining) != len(current):
            await self._locations.put(aor, remaining, now)
            log.info("contact dropped: no answer to OPTIONS", extra={"aor": aor, "contact": binding.contact})
