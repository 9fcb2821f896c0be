"""Where calls meet live billing: may this call be tried, is there credit once answered,
and which calls to end when their credit runs out.

The SIP service asks; billing's live controller decides (credit, limits, its own cut-off
timer). Only the gateway where a call entered the network meters it (DECISIONS.md), so a
call that another gateway rates passes through here unmetered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from billing.live.controller import CreditExhausted, LiveBilling
from gateway.b2bua import Party
from gateway.cdr import CallRecord
from gateway.clock import Clock, utc_now
from gateway.sip.message import REASONS, Request, Response, make_response

log = logging.getLogger("seabridge.sip.billing")


class CallBilling:
    def __init__(
        self,
        live: LiveBilling,
        clock: Clock,
        rated_here: Callable[[Party], bool],
        end_call: Callable[[str], None],
    ) -> None:
        self._live = live
        self._clock = clock
        self._rated_here = rated_here
        self._end_call = end_call  # by Session-ID
        self._known_accounts: set[str] = set()

    async def authorize(self, request: Request, caller: Party, callee: Party, to_tag: str) -> Response | None:
        """None when the call may be tried; else the refusal to send (402 no credit, 403 limits)."""
        if not self._rated_here(caller):
            return None
        account = caller.account or caller.address
        if account not in self._known_accounts:
            # Users (and trunks) billing does not know yet get an account of the configured default kind.
            await self._live.service.ensure_account(account, site=caller.site)
            self._known_accounts.add(account)
        verdict = await self._live.authorize(account, callee.record_name, "voice", utc_now(self._clock))
        if verdict.allowed:
            return None
        log.info("call refused by billing", extra={"account": account, "callee": callee.record_name,
                                                    "reason": verdict.reason})  # fmt: skip
        status = 402 if "credit" in verdict.reason or "spend" in verdict.reason else 403
        return make_response(request, status, f"{REASONS[status]} ({verdict.reason})", to_tag=to_tag)

    async def answered(self, provisional: CallRecord) -> bool:
        """Start metering an answered call; False when it has no credit and must end now."""
        if not provisional.ingress:
            return True  # live credit is watched where the call entered
        return (await self._live.call_answered(provisional)).allowed

    async def watch(self) -> None:
        """End calls whose credit ran out (billing's own timer says when); runs until cancelled."""
        while True:
            event = await self._live.events.get()
            if isinstance(event, CreditExhausted):
                log.info("credit exhausted: ending the call", extra={"session": event.session_id,
                                                                     "account": event.account})  # fmt: skip
                self._end_call(event.session_id)
