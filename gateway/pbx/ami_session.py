"""One AMI connection's logic, sans I/O: login, actions and their answers, keep-alive, events.

Driven by ``receive_data(bytes, now)``, ``send_action(...)`` and ``handle_timer(now)``; it hands
back bytes (``data_to_send``), events (``next_event``) and one deadline (``get_timer``).

Login uses the MD5 challenge, so the secret never crosses the wire. A connection that goes
quiet is probed with ``Ping``; no answer in ``ping_timeout`` means a dead peer (a satellite
link that dropped without a FIN), reported as ``ConnectionTimedOut`` so the I/O layer reconnects.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from gateway.pbx.ami_events import PbxEvent, parse_event
from gateway.pbx.ami_frame import AmiMessage, AmiParser, Banner, encode_action
from gateway.pbx.errors import AmiNotConnected, AmiProtocolError


class State(Enum):
    AWAITING_BANNER = "awaiting banner"
    CHALLENGING = "challenging"
    LOGGING_IN = "logging in"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionSettings:
    login_timeout: float = 10.0
    action_timeout: float = 15.0
    ping_interval: float = 20.0
    ping_timeout: float = 10.0
    # Classes of events to receive; the rest (dialplan, cdr, TestEvent...) never cross the wire.
    events: str = "system,call,security"


@dataclass(frozen=True)
class LoggedIn:
    protocol_version: str


@dataclass(frozen=True)
class LoginRefused:
    message: str


@dataclass(frozen=True)
class ActionCompleted:
    action_id: str
    action: str
    response: AmiMessage
    events: tuple[AmiMessage, ...] = ()  # the list an EventList action returned


@dataclass(frozen=True)
class ActionFailed:
    action_id: str
    action: str
    message: str


@dataclass(frozen=True)
class ConnectionTimedOut:
    waiting_for: str


SessionEvent = LoggedIn | LoginRefused | ActionCompleted | ActionFailed | ConnectionTimedOut | PbxEvent


@dataclass
class _Pending:
    action: str
    deadline: float
    response: AmiMessage | None = None
    events: list[AmiMessage] = field(default_factory=list)


class AmiSession:
    def __init__(self, username: str, secret: str, now: float, settings: SessionSettings | None = None) -> None:
        self._username = username
        self._secret = secret
        self._settings = settings or SessionSettings()
        self._parser = AmiParser()
        self._out = bytearray()
        self._events: deque[SessionEvent] = deque()
        self._ids = itertools.count(1)
        self._pending: dict[str, _Pending] = {}
        self._internal: dict[str, str] = {}  # action id -> Challenge/Login/Ping
        self._protocol_version = ""
        self.state = State.AWAITING_BANNER
        self._login_deadline: float | None = now + self._settings.login_timeout
        self._last_rx = now
        self._ping_deadline: float | None = None

    # --- what the I/O layer calls ------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.state is State.READY

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def receive_data(self, data: bytes, now: float) -> None:
        if self.state is State.CLOSED:
            return
        self._last_rx = now
        self._parser.receive_data(data)
        while not self.closed:  # a message may close the session (login refused)
            item = self._parser.next_message()
            if item is None:
                return
            if isinstance(item, Banner):
                self._on_banner(item)
            else:
                self._on_message(item)

    def send_action(
        self, action: str, fields: Iterable[tuple[str, str]], now: float, timeout: float | None = None
    ) -> str:
        """Queue an action; its answer comes back as ActionCompleted or ActionFailed with this id."""
        if self.state is not State.READY:
            raise AmiNotConnected(f"AMI session is {self.state.value}")
        action_id = f"sb-{next(self._ids)}"
        self._out += encode_action(action, action_id, fields)
        self._pending[action_id] = _Pending(action, now + (timeout or self._settings.action_timeout))
        return action_id

    def handle_timer(self, now: float) -> None:
        if self.state is State.CLOSED:
            return
        if self._login_deadline is not None and now >= self._login_deadline:
            self._close(ConnectionTimedOut("login"))
            return
        if self._ping_deadline is not None and now >= self._ping_deadline:
            self._close(ConnectionTimedOut("ping"))
            return
        for action_id, pending in list(self._pending.items()):
            if now >= pending.deadline:
                del self._pending[action_id]
                self._events.append(ActionFailed(action_id, pending.action, "no answer from Asterisk in time"))
        if self.ready and self._ping_deadline is None and now >= self._last_rx + self._settings.ping_interval:
            self._send_internal("Ping", ())
            self._ping_deadline = now + self._settings.ping_timeout

    def get_timer(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        candidates = [p.deadline for p in self._pending.values()]
        if self._login_deadline is not None:
            candidates.append(self._login_deadline)
        if self._ping_deadline is not None:
            candidates.append(self._ping_deadline)
        elif self.ready:
            candidates.append(self._last_rx + self._settings.ping_interval)
        return min(candidates) if candidates else None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_event(self) -> SessionEvent | None:
        return self._events.popleft() if self._events else None

    def connection_lost(self) -> list[ActionFailed]:
        """The socket closed: every unanswered action failed (none is re-sent: an Originate
        sent twice rings a phone twice)."""
        failed = [ActionFailed(i, p.action, "AMI connection lost") for i, p in self._pending.items()]
        self._pending.clear()
        self.state = State.CLOSED
        return failed

    # --- login ------------------------------------------------------------------------------

    def _on_banner(self, banner: Banner) -> None:
        if self.state is not State.AWAITING_BANNER:
            raise AmiProtocolError("a second banner")
        self._protocol_version = banner.version
        self.state = State.CHALLENGING
        self._send_internal("Challenge", [("AuthType", "MD5")])

    def _on_login_step(self, kind: str, msg: AmiMessage) -> None:
        if msg.response != "Success":
            self._close(LoginRefused(msg.get("Message") or f"{kind} refused"))
        elif kind == "Challenge":
            key = hashlib.md5((msg.get("Challenge") + self._secret).encode()).hexdigest()  # AMI's own scheme
            events = self._settings.events
            fields = [("AuthType", "MD5"), ("Username", self._username), ("Key", key), ("Events", events)]
            self.state = State.LOGGING_IN
            self._send_internal("Login", fields)
        else:
            self.state = State.READY
            self._login_deadline = None
            self._events.append(LoggedIn(self._protocol_version))

    # --- messages ---------------------------------------------------------------------------

    def _on_message(self, msg: AmiMessage) -> None:
        action_id = msg.action_id
        # Events first: some carry a Response field of their own (OriginateResponse does).
        if not msg.has("Event") and msg.has("Response"):
            kind = self._internal.pop(action_id, None)
            if kind == "Ping":
                self._ping_deadline = None
            elif kind is not None:
                self._on_login_step(kind, msg)
            elif action_id in self._pending:
                self._on_response(action_id, msg)
            return
        pending = self._pending.get(action_id) if action_id else None
        if pending is not None and pending.response is not None:
            # An event of a list the action asked for (CoreShowChannels, ExtensionStateList...).
            if msg.get("EventList").lower() == "complete":
                del self._pending[action_id]
                self._events.append(ActionCompleted(action_id, pending.action, pending.response, tuple(pending.events)))
            else:
                pending.events.append(msg)
            return
        if msg.has("Event"):
            self._events.append(parse_event(msg))

    def _on_response(self, action_id: str, msg: AmiMessage) -> None:
        pending = self._pending[action_id]
        if msg.response not in ("Success", "Goodbye"):
            del self._pending[action_id]
            self._events.append(ActionFailed(action_id, pending.action, msg.get("Message") or msg.response))
        elif msg.get("EventList").lower() == "start":
            pending.response = msg
        else:
            del self._pending[action_id]
            self._events.append(ActionCompleted(action_id, pending.action, msg))

    def _send_internal(self, action: str, fields: Iterable[tuple[str, str]]) -> None:
        action_id = f"sb-{next(self._ids)}"
        self._internal[action_id] = action
        self._out += encode_action(action, action_id, fields)

    def _close(self, event: SessionEvent) -> None:
        self.state = State.CLOSED
        self._events.append(event)
