"""Click-to-call: ring an HQ extension, and when it answers, dial a site user from it.

The gateway mints the call's Session-ID and hands it to Asterisk in the Originate
(``__SEABRIDGE_SESSION_ID``, inherited by every channel of the call), so the call's records on
both sides carry it from the first event on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.pbx.errors import PbxError

_EXTENSION = re.compile(r"^[A-Za-z0-9_.+-]{1,40}$")
# Dial strings are commands to Asterisk: '&', ',', '/', '(' would dial more, or otherwise.
_TARGET = re.compile(r"^\+?[A-Za-z0-9_.*#-]{1,64}$")
_SESSION = re.compile(r"^[0-9a-f]{32}$")


class InvalidCallRequest(PbxError):
    """The request names no usable extension or target; the message says which."""


@dataclass(frozen=True)
class ClickToCall:
    from_extension: str  # the HQ extension rung first
    to: str  # a site user ("alice") or number, reached through the site dial prefix


@dataclass(frozen=True)
class OriginatePlan:
    context: str
    dial_prefix: str
    ring_timeout_s: int
    variable: str
    channel_tech: str = "PJSIP"


def parse_request(body: Any, tenant_domain: str) -> ClickToCall:
    """``{"from": "2001", "to": "alice"}`` (or ``alice@<tenant>``), validated."""
    if not isinstance(body, Mapping):
        raise InvalidCallRequest("expected a JSON object with 'from' and 'to'")
    source, target = body.get("from"), body.get("to")
    if not isinstance(source, str) or not _EXTENSION.match(source):
        raise InvalidCallRequest("'from' must be an HQ extension (letters, digits, _ . + -)")
    if not isinstance(target, str):
        raise InvalidCallRequest("'to' must be a site user or number")
    user, at, domain = target.partition("@")
    if at and domain != tenant_domain:
        raise InvalidCallRequest(f"'to' must be a user of {tenant_domain}")
    if not _TARGET.match(user):
        raise InvalidCallRequest("'to' must be a site user or number (letters, digits, + _ . * # -)")
    return ClickToCall(source, user)


def originate_fields(call: ClickToCall, plan: OriginatePlan, session_id: str) -> list[tuple[str, str]]:
    if not _SESSION.match(session_id):
        raise InvalidCallRequest("session id must be 32 lower-case hex digits")
    if not _EXTENSION.match(call.from_extension) or not _TARGET.match(call.to):
        raise InvalidCallRequest("unusable extension or target")
    return [
        ("Channel", f"{plan.channel_tech}/{call.from_extension}"),
        ("Context", plan.context),
        ("Exten", f"{plan.dial_prefix}{call.to}"),
        ("Priority", "1"),
        ("Timeout", str(plan.ring_timeout_s * 1000)),
        # The identity the call carries on: the site user must see the HQ extension calling, and
        # the records name it as the caller (the HQ phone shows its own number while rung).
        ("CallerID", f'"{call.from_extension}" <{call.from_extension}>'),
        ("Variable", f"__{plan.variable}={session_id}"),
    ]
