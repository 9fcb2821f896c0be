"""HQ extension states for site users (sans I/O): idle, ringing, busy, from AMI.

``ExtensionStatus`` (a hint's state changed, or a row of ``ExtensionStateList``) is the source;
``DeviceStateChange`` updates an extension whose hint is that single device, for PBXs that send
device states first. When the AMI connection drops every state becomes ``unknown``: stale
presence ("idle" for someone now on a call) is worse than none.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum


class ExtensionState(Enum):
    IDLE = "idle"
    RINGING = "ringing"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


# Asterisk's enum ast_extension_states: a bit set.
_INUSE, _BUSY, _UNAVAILABLE, _RINGING, _ONHOLD = 1, 2, 4, 8, 16


def state_from_status(status: int) -> ExtensionState:
    if status == 0:
        return ExtensionState.IDLE
    if status < 0:  # -1 removed, -2 deactivated hint
        return ExtensionState.UNKNOWN
    if status & (_INUSE | _BUSY | _ONHOLD):
        return ExtensionState.BUSY  # "in use and ringing" (call waiting) is still on a call
    if status & _RINGING:
        return ExtensionState.RINGING
    if status & _UNAVAILABLE:
        return ExtensionState.UNAVAILABLE
    return ExtensionState.UNKNOWN


_DEVICE_STATES = {
    "NOT_INUSE": ExtensionState.IDLE,
    "INUSE": ExtensionState.BUSY,
    "BUSY": ExtensionState.BUSY,
    "ONHOLD": ExtensionState.BUSY,
    "RINGINUSE": ExtensionState.BUSY,
    "RINGING": ExtensionState.RINGING,
    "UNAVAILABLE": ExtensionState.UNAVAILABLE,
    "INVALID": ExtensionState.UNAVAILABLE,
}


def state_from_device(state: str) -> ExtensionState:
    return _DEVICE_STATES.get(state.upper(), ExtensionState.UNKNOWN)


@dataclass(frozen=True)
class ExtensionPresence:
    exten: str
    context: str
    state: ExtensionState
    since: float  # monotonic instant of the last change
    version: int  # +1 on every change: what a NOTIFY's dialog-info version can follow


@dataclass(frozen=True)
class PresenceChanged:
    presence: ExtensionPresence
    previous: ExtensionState


class PresenceBook:
    def __init__(self, contexts: Iterable[str] = ("hq",)) -> None:
        self._contexts = frozenset(contexts)
        self._by_exten: dict[str, ExtensionPresence] = {}
        self._hint_device: dict[str, str] = {}  # device (hint with one device) -> exten

    def get(self, exten: str) -> ExtensionPresence | None:
        return self._by_exten.get(exten)

    def snapshot(self) -> list[ExtensionPresence]:
        return sorted(self._by_exten.values(), key=lambda p: p.exten)

    def on_extension_status(
        self, exten: str, context: str, hint: str, status: int, now: float
    ) -> PresenceChanged | None:
        if context not in self._contexts or not exten:
            return None
        if hint and "&" not in hint:
            self._hint_device[hint] = exten
        return self._set(exten, context, state_from_status(status), now)

    def on_device_state(self, device: str, state: str, now: float) -> PresenceChanged | None:
        exten = self._hint_device.get(device)
        if exten is None:
            return None
        return self._set(exten, self._by_exten[exten].context, state_from_device(state), now)

    def on_disconnected(self, now: float) -> list[PresenceChanged]:
        out = []
        for p in list(self._by_exten.values()):
            change = self._set(p.exten, p.context, ExtensionState.UNKNOWN, now)
            if change is not None:
                out.append(change)
        return out

    def _set(self, exten: str, context: str, state: ExtensionState, now: float) -> PresenceChanged | None:
        old = self._by_exten.get(exten)
        if old is not None and old.state is state:
            return None
        new = ExtensionPresence(exten, context, state, now, 1 if old is None else old.version + 1)
        self._by_exten[exten] = new
        return PresenceChanged(new, ExtensionState.UNKNOWN if old is None else old.state)
