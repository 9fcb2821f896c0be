"""The browser phone's WebSocket protocol: JSON text frames, one object each (docs/browser-signalling.md).

``parse_client_message`` turns a frame from the page into a typed value or
raises ``SignallingError`` naming the problem; the server's messages are
built by the small functions at the bottom. Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.webrtc.errors import SignallingError

MAX_FRAME = 64 * 1024  # an SDP offer with video and many candidates is ~6 kB
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_TARGET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}(@[A-Za-z0-9.-]{1,253})?$")
_DIGITS = re.compile(r"^[0-9*#A-Da-d]{1,32}$")


@dataclass(frozen=True)
class Authenticate:
    token: str


@dataclass(frozen=True)
class PlaceCall:
    call: str
    to: str
    sdp: str


@dataclass(frozen=True)
class AcceptCall:
    call: str
    sdp: str


@dataclass(frozen=True)
class DeclineCall:
    call: str


@dataclass(frozen=True)
class HangUp:
    call: str


@dataclass(frozen=True)
class SendDigits:
    call: str
    digits: str


@dataclass(frozen=True)
class SetHold:
    call: str
    on: bool


@dataclass(frozen=True)
class Ping:
    pass


ClientMessage = Authenticate | PlaceCall | AcceptCall | DeclineCall | HangUp | SendDigits | SetHold | Ping


def _field(data: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None, limit: int = 256) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise SignallingError(f"'{name}' must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise SignallingError(f"'{name}' is not valid")
    return value


def parse_client_message(frame: str) -> ClientMessage:
    if len(frame) > MAX_FRAME:
        raise SignallingError("message too large", "too_large")
    try:
        data = json.loads(frame)
    except ValueError:
        raise SignallingError("not JSON") from None
    if not isinstance(data, dict):
        raise SignallingError("a message is a JSON object")
    kind = data.get("type")
    if kind == "auth":
        return Authenticate(_field(data, "token", limit=2048))
    if kind == "ping":
        return Ping()
    call = _field(data, "call", _CALL_ID)
    if kind == "call":
        return PlaceCall(call, _field(data, "to", _TARGET), _field(data, "sdp", limit=MAX_FRAME))
    if kind == "accept":
        return AcceptCall(call, _field(data, "sdp", limit=MAX_FRAME))
    if kind == "decline":
        return DeclineCall(call)
    if kind == "hangup":
        return HangUp(call)
    if kind == "dtmf":
        return SendDigits(call, _field(data, "digits", _DIGITS))
    if kind == "hold":
        on = data.get("on")
        if not isinstance(on, bool):
            raise SignallingError("'on' must be true or false")
        return SetHold(call, on)
    raise SignallingError(f"unknown message type {str(kind)[:40]!r}")


# --- the server's messages ------------------------------------------------------------------


def dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def ready(
    user: str, expires_at: int, ice_servers: list[dict[str, Any]], ice_transport_policy: str = "all"
) -> dict[str, Any]:
    return {
        "type": "ready",
        "user": user,
        "expires": expires_at,
        "ice_servers": ice_servers,
        "ice_transport_policy": ice_transport_policy,
    }


def registered(ok: bool) -> dict[str, Any]:
    return {"type": "registered", "ok": ok}


def incoming(call: str, caller: str, display: str, video: bool) -> dict[str, Any]:
    return {"type": "incoming", "call": call, "from": caller, "display": display, "video": video}


def answer(call: str, sdp: str) -> dict[str, Any]:
    return {"type": "answer", "call": call, "sdp": sdp}


def ringing(call: str) -> dict[str, Any]:
    return {"type": "ringing", "call": call}


def connected(call: str, mode: str, video: bool) -> dict[str, Any]:
    return {"type": "connected", "call": call, "mode": mode, "video": video}


def ended(call: str, reason: str, status: int = 0) -> dict[str, Any]:
    return {"type": "ended", "call": call, "reason": reason, "status": status}


def held(call: str, by: str, on: bool) -> dict[str, Any]:
    return {"type": "held", "call": call, "by": by, "on": on}


def dtmf(call: str, digit: str) -> dict[str, Any]:
    return {"type": "dtmf", "call": call, "digit": digit}


def error(code: str, message: str, call: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if call is not None:
        out["call"] = call
    return out


def end_reason(status: int) -> str:
    """The page's word for why a call ended, from the SIP status that ended it."""
    return {
        200: "hangup",
        403: "forbidden",
        404: "not_found",
        408: "no_answer",
        480: "unavailable",
        486: "busy",
        487: "cancelled",
        488: "incompatible",
        600: "busy",
        603: "declined",
    }.get(status, "failed")
