"""RFC 3261 section 17 transactions (with RFC 6026's Accepted states), sans-I/O.

Everything that affects the four state machines lives in the tables below:
``(state, input) -> Transition``. A network input with no entry is a stray
retransmission and is absorbed; a TU input with no entry is a bug in the
caller and raises TransactionError.

The layer is driven by three things only: ``receive(message, source, now)``,
calls from the TU (``send_request``, ``respond``) and ``handle_timers(now)``.
It queues datagrams for ``take_outgoing()`` and reports ``next_deadline()``.

Beyond the RFC's server INVITE machine, the Accepted state also retransmits
the 2xx until its ACK arrives (the UAS core's job in section 13.3.1.4), so a
B2BUA above us never runs timers of its own for that. Its automatic 100 Trying
waits ``TimerConfig.trying`` for the TU's own answer (section 17.2.1 asks for it
only when the TU will not answer within 200 ms): an INVITE answered sooner (a 407
challenge, a callee's quick 180) costs no 100 at all, and a retransmitted INVITE
gets the 100 at once.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Final

from gateway.sip.errors import TransactionError
from gateway.sip.headers import Via
from gateway.sip.lazy import once
from gateway.sip.message import Headers, Request, Response, make_response
from gateway.sip.peer import Peer

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True)
class TimerConfig:
    """T1, T2, T4 in seconds; raise T1 for satellite peers (600 ms round trips)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    # How long a client transaction waits for a final answer (Timers B and F); None: 64*T1.
    timer_b: float | None = None
    # How long a server INVITE waits for the TU's own response before sending 100 Trying.
    trying: float = 0.05

    @once
    def fixed_durations(self) -> dict[Input, float]:
        """The timers that do not back off, and how long each runs (a lookup per timer started)."""
        return _fixed_durations(self)


class Kind(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's own hash runs Python code

    CLIENT_INVITE = "client-invite"
    CLIENT_NON_INVITE = "client-non-invite"
    SERVER_INVITE = "server-invite"
    SERVER_NON_INVITE = "server-non-invite"


class State(enum.Enum):
    __hash__ = object.__hash__

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    ACKED = "acked"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Input(enum.Enum):
    __hash__ = object.__hash__

    PROVISIONAL = "1xx received"
    SUCCESS = "2xx received"
    FAILURE = "3xx-6xx received"
    REQUEST = "request retransmission"
    ACK = "ACK received"
    TU_PROVISIONAL = "TU sends 1xx"
    TU_SUCCESS = "TU sends 2xx"
    TU_FAILURE = "TU sends 3xx-6xx"
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"
    TIMER_R = "R"  # 2xx retransmission (RFC 3261 section 13.3.1.4)
    TIMER_TRYING = "100"  # the automatic 100 Trying is due (section 17.2.1)


class Action(enum.Enum):
    __hash__ = object.__hash__

    PASS_UP = "pass response to TU"
    PASS_ACK = "pass ACK to TU"
    SEND_ACK = "send ACK for non-2xx"
    RETRANSMIT = "retransmit request"
    SEND_RESPONSE = "send TU's response"
    RESEND_RESPONSE = "resend last response"
    SEND_TRYING = "send 100 Trying"
    REPORT_TIMEOUT = "report timeout to TU"


@dataclass(frozen=True)
class Transition:
    actions: tuple[Action, ...]
    next: State
    start: tuple[Input, ...] = ()
    stop: tuple[Input, ...] = ()


_T = Transition
_A, _S = Action, State
_I = Input

TABLES: dict[Kind, dict[tuple[State, Input], Transition]] = {
    Kind.CLIENT_INVITE: {
        (_S.CALLING, _I.PROVISIONAL): _T((_A.PASS_UP,), _S.PROCEEDING, stop=(_I.TIMER_A, _I.TIMER_B)),
        (_S.CALLING, _I.SUCCESS): _T((_A.PASS_UP,), _S.ACCEPTED, start=(_I.TIMER_M,), stop=(_I.TIMER_A, _I.TIMER_B)),
        (_S.CALLING, _I.FAILURE): _T(
            (_A.PASS_UP, _A.SEND_ACK), _S.COMPLETED, start=(_I.TIMER_D,), stop=(_I.TIMER_A, _I.TIMER_B)
        ),
        (_S.CALLING, _I.TIMER_A): _T((_A.RETRANSMIT,), _S.CALLING, start=(_I.TIMER_A,)),
        (_S.CALLING, _I.TIMER_B): _T((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.PROCEEDING, _I.PROVISIONAL): _T((_A.PASS_UP,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.SUCCESS): _T((_A.PASS_UP,), _S.ACCEPTED, start=(_I.TIMER_M,)),
        (_S.PROCEEDING, _I.FAILURE): _T((_A.PASS_UP, _A.SEND_ACK), _S.COMPLETED, start=(_I.TIMER_D,)),
        (_S.ACCEPTED, _I.SUCCESS): _T((_A.PASS_UP,), _S.ACCEPTED),
        (_S.ACCEPTED, _I.TIMER_M): _T((), _S.TERMINATED),
        (_S.COMPLETED, _I.FAILURE): _T((_A.SEND_ACK,), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_D): _T((), _S.TERMINATED),
    },
    Kind.CLIENT_NON_INVITE: {
        (_S.TRYING, _I.PROVISIONAL): _T((_A.PASS_UP,), _S.PROCEEDING),
        (_S.TRYING, _I.SUCCESS): _T((_A.PASS_UP,), _S.COMPLETED, start=(_I.TIMER_K,), stop=(_I.TIMER_E, _I.TIMER_F)),
        (_S.TRYING, _I.FAILURE): _T((_A.PASS_UP,), _S.COMPLETED, start=(_I.TIMER_K,), stop=(_I.TIMER_E, _I.TIMER_F)),
        (_S.TRYING, _I.TIMER_E): _T((_A.RETRANSMIT,), _S.TRYING, start=(_I.TIMER_E,)),
        (_S.TRYING, _I.TIMER_F): _T((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.PROCEEDING, _I.PROVISIONAL): _T((_A.PASS_UP,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.SUCCESS): _T(
            (_A.PASS_UP,), _S.COMPLETED, start=(_I.TIMER_K,), stop=(_I.TIMER_E, _I.TIMER_F)
        ),
        (_S.PROCEEDING, _I.FAILURE): _T(
            (_A.PASS_UP,), _S.COMPLETED, start=(_I.TIMER_K,), stop=(_I.TIMER_E, _I.TIMER_F)
        ),
        (_S.PROCEEDING, _I.TIMER_E): _T((_A.RETRANSMIT,), _S.PROCEEDING, start=(_I.TIMER_E,)),
        (_S.PROCEEDING, _I.TIMER_F): _T((_A.REPORT_TIMEOUT,), _S.TERMINATED),
        (_S.COMPLETED, _I.TIMER_K): _T((), _S.TERMINATED),
    },
    Kind.SERVER_INVITE: {
        # A retransmission before any response: the caller is waiting, so the 100 goes now.
        (_S.PROCEEDING, _I.REQUEST): _T((_A.RESEND_RESPONSE,), _S.PROCEEDING, stop=(_I.TIMER_TRYING,)),
        (_S.PROCEEDING, _I.TIMER_TRYING): _T((_A.SEND_TRYING,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.TU_PROVISIONAL): _T((_A.SEND_RESPONSE,), _S.PROCEEDING, stop=(_I.TIMER_TRYING,)),
        (_S.PROCEEDING, _I.TU_SUCCESS): _T(
            (_A.SEND_RESPONSE,), _S.ACCEPTED, start=(_I.TIMER_L, _I.TIMER_R), stop=(_I.TIMER_TRYING,)
        ),
        (_S.PROCEEDING, _I.TU_FAILURE): _T(
            (_A.SEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_G, _I.TIMER_H), stop=(_I.TIMER_TRYING,)
        ),
        (_S.ACCEPTED, _I.REQUEST): _T((_A.RESEND_RESPONSE,), _S.ACCEPTED),
        (_S.ACCEPTED, _I.TU_SUCCESS): _T((_A.SEND_RESPONSE,), _S.ACCEPTED),
        (_S.ACCEPTED, _I.ACK): _T((_A.PASS_ACK,), _S.ACKED, stop=(_I.TIMER_R,)),
        (_S.ACCEPTED, _I.TIMER_R): _T((_A.RESEND_RESPONSE,), _S.ACCEPTED, start=(_I.TIMER_R,)),
        (_S.ACCEPTED, _I.TIMER_L): _T((_A.REPORT_TIMEOUT,), _S.TERMINATED, stop=(_I.TIMER_R,)),
        (_S.ACKED, _I.REQUEST): _T((), _S.ACKED),
        (_S.ACKED, _I.ACK): _T((), _S.ACKED),
        (_S.ACKED, _I.TIMER_L): _T((), _S.TERMINATED),
        (_S.COMPLETED, _I.REQUEST): _T((_A.RESEND_RESPONSE,), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_G): _T((_A.RESEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_G,)),
        (_S.COMPLETED, _I.TIMER_H): _T((_A.REPORT_TIMEOUT,), _S.TERMINATED, stop=(_I.TIMER_G,)),
        (_S.COMPLETED, _I.ACK): _T((), _S.CONFIRMED, start=(_I.TIMER_I,), stop=(_I.TIMER_G, _I.TIMER_H)),
        (_S.CONFIRMED, _I.ACK): _T((), _S.CONFIRMED),
        (_S.CONFIRMED, _I.REQUEST): _T((), _S.CONFIRMED),
        (_S.CONFIRMED, _I.TIMER_I): _T((), _S.TERMINATED),
    },
    Kind.SERVER_NON_INVITE: {
        (_S.TRYING, _I.REQUEST): _T((), _S.TRYING),
        (_S.TRYING, _I.TU_PROVISIONAL): _T((_A.SEND_RESPONSE,), _S.PROCEEDING),
        (_S.TRYING, _I.TU_SUCCESS): _T((_A.SEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_J,)),
        (_S.TRYING, _I.TU_FAILURE): _T((_A.SEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_J,)),
        (_S.PROCEEDING, _I.REQUEST): _T((_A.RESEND_RESPONSE,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.TU_PROVISIONAL): _T((_A.SEND_RESPONSE,), _S.PROCEEDING),
        (_S.PROCEEDING, _I.TU_SUCCESS): _T((_A.SEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_J,)),
        (_S.PROCEEDING, _I.TU_FAILURE): _T((_A.SEND_RESPONSE,), _S.COMPLETED, start=(_I.TIMER_J,)),
        (_S.COMPLETED, _I.REQUEST): _T((_A.RESEND_RESPONSE,), _S.COMPLETED),
        (_S.COMPLETED, _I.TIMER_J): _T((), _S.TERMINATED),
    },
}

INITIAL_STATE = {
    Kind.CLIENT_INVITE: (State.CALLING, (Input.TIMER_A, Input.TIMER_B)),
    Kind.CLIENT_NON_INVITE: (State.TRYING, (Input.TIMER_E, Input.TIMER_F)),
    Kind.SERVER_INVITE: (State.PROCEEDING, (Input.TIMER_TRYING,)),
    Kind.SERVER_NON_INVITE: (State.TRYING, ()),
}

# Timers that back off: first interval T1, then doubling (capped at T2 where marked).
_BACKOFF_CAPPED = {Input.TIMER_E, Input.TIMER_G, Input.TIMER_R}
_BACKOFF = {Input.TIMER_A} | _BACKOFF_CAPPED
# Retransmission timers run only over UDP; the wait-for-stragglers timers are zero on TCP/TLS.
_UNRELIABLE_ONLY = {Input.TIMER_A, Input.TIMER_E, Input.TIMER_G}
_ZERO_WHEN_RELIABLE = {Input.TIMER_D, Input.TIMER_I, Input.TIMER_J, Input.TIMER_K}
_FIXED_TIMERS = frozenset({Input.TIMER_D, Input.TIMER_I, Input.TIMER_J, Input.TIMER_K, Input.TIMER_L, Input.TIMER_M})
# Heap entries name their timer by its value: a tuple holding only strings and numbers is
# one the collector stops tracking, and tens of thousands of timers are pending at a time.
_INPUT_OF = {i.value: i for i in Input}
# The other way: ``Input.value`` is a Python-level property, two calls per read; a timer
# started reads it, and its heap entry keeps the text (a tuple of strings, which the
# collector stops walking), not the member.
_VALUE_OF = {i: i.value for i in Input}


def _fixed_durations(t: TimerConfig) -> dict[Input, float]:
    """Every timer that does not back off, with its duration under ``t``."""
    timers = [Input.TIMER_B, Input.TIMER_F, Input.TIMER_H, Input.TIMER_J, Input.TIMER_L, Input.TIMER_M]
    timers += [Input.TIMER_I, Input.TIMER_K, Input.TIMER_D, Input.TIMER_TRYING]
    return {timer: _fixed_duration(timer, t) for timer in timers}


def _fixed_duration(timer: Input, t: TimerConfig) -> float:
    if timer in (Input.TIMER_B, Input.TIMER_F) and t.timer_b is not None:
        return t.timer_b
    if timer in (Input.TIMER_B, Input.TIMER_F, Input.TIMER_H, Input.TIMER_J, Input.TIMER_L, Input.TIMER_M):
        return 64 * t.t1
    if timer in (Input.TIMER_I, Input.TIMER_K):
        return t.t4
    if timer is Input.TIMER_D:
        return max(t.timer_d, 64 * t.t1)
    if timer is Input.TIMER_TRYING:
        return t.trying
    raise AssertionError(timer)


# --- keys and events ---------------------------------------------------------


# Identifies a transaction: (branch, sent-by, method, server?); ACK and CANCEL map as RFC 3261
# section 17.2.3 says. A plain tuple: it is a dictionary key several times per message and
# hashes and compares in C, and unlike a named tuple (a subclass) the garbage collector stops
# tracking it, which matters for the tens of thousands that wait out their timers.
TxKey = tuple[str, str, str, bool]


@dataclass(frozen=True)
class RequestReceived:
    key: TxKey
    request: Request
    source: Peer
    # For CANCEL: the INVITE server transaction it targets, if we have it.
    cancels: TxKey | None = None


@dataclass(frozen=True)
class AckReceived:
    """An ACK for a 2xx: end-to-end, outside any transaction (RFC 3261 section 17.1.1.3)."""

    request: Request
    source: Peer


@dataclass(frozen=True)
class ResponseReceived:
    key: TxKey
    response: Response


@dataclass(frozen=True)
class TransactionTimedOut:
    key: TxKey
    # For a server INVITE: True when the ACK for our 2xx never came.
    after_success: bool = False


Event = RequestReceived | AckReceived | ResponseReceived | TransactionTimedOut


@dataclass(slots=True)
class _Transaction:
    key: TxKey
    kind: Kind
    state: State
    # Kept while the transaction may still need it (to answer it, build an ACK, resend it);
    # dropped once it only absorbs retransmissions for up to 64*T1: thousands wait so at
    # any time, and what they keep is what every full garbage collection walks.
    request: Request | None
    destination: Peer
    timers: TimerConfig
    request_bytes: bytes = b""
    last_response_bytes: bytes = b""
    ack_bytes: bytes = b""  # client INVITE: the ACK for its 3xx-6xx, resent for each retransmission
    accepted: tuple[str, int] | None = None  # server INVITE answered 2xx: its (Call-ID, CSeq number)
    deadlines: dict[Input, float] = field(default_factory=dict)
    # The last interval of each backing-off timer: made on the first one started (most
    # server transactions never run one, and every dict is one more object for the collector).
    intervals: dict[Input, float] | None = None


# States in which a transaction only absorbs retransmissions until a timer ends it.
_WAITING = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED, State.ACKED})

# Of those, the ones where all that is left is one silent last timer, and any input is
# answered from bytes already made (or passed up as it came). A transaction in one of them
# is kept as a plain tuple of strings, numbers and bytes, which the garbage collector stops
# tracking: several of them per call wait out 64*T1, so tens of thousands at a time, and each
# kept as objects was several more for every collection to walk.
_RESTING_STATES: tuple[tuple[Kind, State], ...] = (
    (Kind.CLIENT_INVITE, State.ACCEPTED),  # Timer M: 2xx retransmissions go up for a new ACK
    (Kind.CLIENT_INVITE, State.COMPLETED),  # Timer D: the same ACK again for each 3xx-6xx
    (Kind.CLIENT_NON_INVITE, State.COMPLETED),  # Timer K
    (Kind.SERVER_INVITE, State.ACKED),  # Timer L
    (Kind.SERVER_INVITE, State.CONFIRMED),  # Timer I
    (Kind.SERVER_NON_INVITE, State.COMPLETED),  # Timer J: the final response again
)
_RESTING = {pair: code for code, pair in enumerate(_RESTING_STATES)}
_CONFIRMED = _RESTING[(Kind.SERVER_INVITE, State.CONFIRMED)]
_RESTING_ACTIONS = frozenset({Action.PASS_UP, Action.SEND_ACK, Action.RESEND_RESPONSE})


def _check_resting_tables() -> None:
    """What the tuple form relies on: inputs leave a resting state as it is, its timer ends it quietly."""
    for kind, state in _RESTING_STATES:
        for (from_, inp), transition in TABLES[kind].items():
            if from_ is not state:
                continue
            if inp in _FIXED_TIMERS:
                assert transition.next is State.TERMINATED and not transition.actions
            else:
                assert transition.next is state and not transition.start and not transition.stop
                assert set(transition.actions) <= _RESTING_ACTIONS


_check_resting_tables()


# A resting transaction, as a plain tuple (a named tuple is a subclass, which the collector
# tracks for ever): index into _RESTING_STATES, the bytes an input is answered with (b"" if
# none), where they go (host, port, transport), a server INVITE's (Call-ID, CSeq number) if
# answered 2xx, and when its last timer ends it.
_Resting = tuple[int, bytes, str, int, str, tuple[str, int] | None, float]
_CODE: Final = 0
_RESEND: Final = 1
_HOST: Final = 2
_PORT: Final = 3
_TRANSPORT: Final = 4
_ACCEPTED: Final = 5
_UNTIL: Final = 6


def server_key(request: Request, top: Via) -> TxKey:
    method = "INVITE" if request.method == "ACK" else request.method
    branch = top.branch or ""
    sent_by = f"{top.host}:{top.port or 5060}".lower()
    if not branch.startswith(MAGIC_COOKIE):
        # RFC 2543 peers: no usable branch, so key on what identifies the request instead.
        branch = f"2543|{request.call_id}|{request.from_.tag}|{request.cseq.number}|{request.uri}"
    return (branch, sent_by, method, True)


def client_key(branch: str, method: str) -> TxKey:
    return (branch, "", "INVITE" if method == "ACK" else method, False)


def response_destination(top: Via, source: Peer) -> Peer:
    """Where responses go (RFC 3261 section 18.2.2 with RFC 3581 rport).

    Over TCP and TLS the answer goes back on the connection the request came on.
    """
    if source.reliable:
        return source
    host = top.received or source.host
    if top.rport is not None:
        port = int(top.rport) if top.rport.isdigit() else source.port
    else:
        port = top.port or 5060
    return Peer(host, port, "UDP")


class TransactionLayer:
    def __init__(self, timers: TimerConfig | None = None) -> None:
        self.timers = timers or TimerConfig()
        self._txs: dict[TxKey, _Transaction] = {}
        # Server INVITEs answered 2xx, by (Call-ID, CSeq number): the ACK has its own branch.
        self._accepted: dict[tuple[str, int], TxKey] = {}
        self._resting: dict[TxKey, _Resting] = {}
        self._heap: list[tuple[float, int, TxKey, str]] = []
        self._seq = itertools.count()
        # Datagrams queued to send: read-only outside (a caller may look before it takes).
        self.outgoing: list[tuple[bytes, Peer]] = []

    # --- introspection -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._txs) + len(self._resting)

    def state(self, key: TxKey) -> State | None:
        tx = self._txs.get(key)
        if tx is not None:
            return tx.state
        resting = self._resting.get(key)
        return _RESTING_STATES[resting[_CODE]][1] if resting is not None else None

    def take_outgoing(self) -> list[tuple[bytes, Peer]]:
        out, self.outgoing = self.outgoing, []
        return out

    def next_deadline(self) -> float | None:
        while self._heap:
            when, _, key, timer = self._heap[0]
            tx = self._txs.get(key)
            if tx is not None:
                if tx.deadlines.get(_INPUT_OF[timer]) == when:
                    return when
            else:
                resting = self._resting.get(key)
                if resting is not None and resting[_UNTIL] == when:
                    return when
            heapq.heappop(self._heap)  # stale: the timer was stopped or re-armed
        return None

    # --- network input -------------------------------------------------------

    def receive(self, message: Request | Response, source: Peer, now: float) -> list[Event]:
        if isinstance(message, Response):
            return self._receive_response(message, now)
        return self._receive_request(message, source, now)

    def _receive_response(self, response: Response, now: float) -> list[Event]:
        vias = response.vias
        if len(vias) != 1:
            return []  # RFC 3261 section 8.1.3.3: more than one Via means not for us
        key = client_key(vias[0].branch or "", response.cseq.method)
        if response.status < 200:
            inp = Input.PROVISIONAL
        elif response.status < 300:
            inp = Input.SUCCESS
        else:
            inp = Input.FAILURE
        tx = self._txs.get(key)
        if tx is None:
            resting = self._resting.get(key)
            return [] if resting is None else self._rest_input(key, resting, inp, response)
        return self._fire(tx, inp, now, response=response)

    def _receive_request(self, request: Request, source: Peer, now: float) -> list[Event]:
        top = request.top_via
        stamped = _stamp_via(top, source)
        if stamped is not top:
            request = request.with_top_via(stamped)
            top = stamped
        key = server_key(request, top)
        if request.method == "ACK":
            tx = self._txs.get(key)
            if tx is not None and tx.state in (State.COMPLETED, State.CONFIRMED):
                return self._fire(tx, Input.ACK, now, ack=request, source=source)
            resting = self._resting.get(key)
            if resting is not None and resting[_CODE] == _CONFIRMED:
                return self._rest_input(key, resting, Input.ACK, request)
            # An ACK for a 2xx has a branch of its own: it is matched by Call-ID and CSeq.
            accepted = self._accepted.get((request.call_id, request.cseq.number))
            if accepted is not None:
                tx = self._txs.get(accepted)
                if tx is not None:
                    return self._fire(tx, Input.ACK, now, ack=request, source=source)
                resting = self._resting.get(accepted)
                if resting is not None:
                    return self._rest_input(accepted, resting, Input.ACK, request)
            return [AckReceived(request, source)]
        tx = self._txs.get(key)
        if tx is not None:
            return self._fire(tx, Input.REQUEST, now)
        resting = self._resting.get(key)
        if resting is not None:
            return self._rest_input(key, resting, Input.REQUEST, request)
        kind = Kind.SERVER_INVITE if request.method == "INVITE" else Kind.SERVER_NON_INVITE
        tx = self._create(key, kind, request, response_destination(top, source), now)
        cancels = None
        if request.method == "CANCEL":
            invite_key = (key[0], key[1], "INVITE", True)
            cancels = invite_key if invite_key in self._txs or invite_key in self._resting else None
        return [RequestReceived(key, request, source, cancels)]

    # --- TU input ------------------------------------------------------------

    def send_request(self, request: Request, destination: Peer, now: float, timers: TimerConfig | None = None) -> TxKey:
        """Start a client transaction; ``request``'s top Via must carry a fresh branch."""
        if request.method == "ACK":
            raise TransactionError("ACK is not sent in a transaction; use send_stateless")
        branch = request.top_via.branch or ""
        if not branch.startswith(MAGIC_COOKIE):
            raise TransactionError("client requests need an RFC 3261 branch")
        key = client_key(branch, request.method)
        if key in self._txs or key in self._resting:
            raise TransactionError(f"a transaction with branch {branch} already exists")
        kind = Kind.CLIENT_INVITE if request.method == "INVITE" else Kind.CLIENT_NON_INVITE
        tx = self._create(key, kind, request, destination, now, timers)
        tx.request_bytes = bytes(request)
        self.outgoing.append((tx.request_bytes, destination))
        return key

    def respond(self, key: TxKey, response: Response, now: float) -> list[Event]:
        tx = self._txs.get(key)
        if tx is None:
            raise TransactionError(f"no server transaction {key}")
        if response.status < 200:
            inp = Input.TU_PROVISIONAL
        elif response.status < 300:
            inp = Input.TU_SUCCESS
        else:
            inp = Input.TU_FAILURE
        return self._fire(tx, inp, now, response=response)

    def send_stateless(self, message: Request | Response, destination: Peer) -> None:
        """Send outside any transaction (ACK for 2xx, stateless error responses)."""
        self.outgoing.append((bytes(message), destination))

    def transport_failed(self, peer: Peer, now: float) -> list[Event]:
        """A connection to ``peer`` could not be made: its client transactions fail now.

        RFC 3261 section 17.1.4: a transport error is reported to the TU as a timeout.
        """
        events: list[Event] = []
        for tx in [t for t in self._txs.values() if t.destination == peer and not t.key[3]]:
            if tx.state in (State.CALLING, State.TRYING, State.PROCEEDING):
                events.append(TransactionTimedOut(tx.key))
                tx.state = State.TERMINATED
                self._remove(tx)
        return events

    def request_of(self, key: TxKey) -> Request | None:
        """The request of a transaction still being answered (None once it has its final answer)."""
        tx = self._txs.get(key)
        return tx.request if tx else None

    # --- timers --------------------------------------------------------------

    def handle_timers(self, now: float) -> list[Event]:
        events: list[Event] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key, value = heapq.heappop(self._heap)
            tx = self._txs.get(key)
            if tx is None:
                resting = self._resting.get(key)
                if resting is not None and resting[_UNTIL] == when:
                    self._end_rest(key, resting)  # its last timer, which ends it without a word
                continue
            timer = _INPUT_OF[value]
            if tx.deadlines.get(timer) != when:
                continue
            del tx.deadlines[timer]
            events += self._fire(tx, timer, now)
        return events

    # --- the machine ---------------------------------------------------------

    def _create(
        self,
        key: TxKey,
        kind: Kind,
        request: Request,
        destination: Peer,
        now: float,
        timers: TimerConfig | None = None,
    ) -> _Transaction:
        state, initial_timers = INITIAL_STATE[kind]
        tx = _Transaction(key, kind, state, request, destination, timers or self.timers)
        self._txs[key] = tx
        for timer in initial_timers:
            self._start(tx, timer, now)
        return tx

    def _fire(
        self,
        tx: _Transaction,
        inp: Input,
        now: float,
        *,
        response: Response | None = None,
        ack: Request | None = None,
        source: Peer | None = None,
    ) -> list[Event]:
        transition = TABLES[tx.kind].get((tx.state, inp))
        if transition is None:
            if inp in (Input.TU_PROVISIONAL, Input.TU_SUCCESS, Input.TU_FAILURE):
                raise TransactionError(f"cannot send a {inp.value!r} in state {tx.state.value} ({tx.key})")
            return []
        events: list[Event] = []
        for action in transition.actions:
            events += self._do(tx, action, response, ack, source)
        for timer in transition.stop:
            tx.deadlines.pop(timer, None)
        tx.state = transition.next
        for timer in transition.start:
            self._start(tx, timer, now)
        if tx.kind is Kind.SERVER_INVITE and tx.state is State.ACCEPTED and tx.accepted is None:
            assert tx.request is not None
            tx.accepted = (tx.request.call_id, tx.request.cseq.number)
            self._accepted[tx.accepted] = tx.key
        if tx.state is State.TERMINATED:
            self._remove(tx)
        elif tx.state in _WAITING:
            code = _RESTING.get((tx.kind, tx.state))
            if code is not None:
                self._rest(tx, code)
                return events
            tx.request = None
            tx.request_bytes = b""
            if tx.intervals is not None:
                for timer in tx.deadlines:
                    if timer in _BACKOFF:
                        break
                else:
                    tx.intervals = None  # no retransmission left to back off
        return events

    def _rest(self, tx: _Transaction, code: int) -> None:
        """Keep a transaction that only waits out its last timer as a plain tuple."""
        # Its last timer: the one _check_resting_tables makes sure ends it.
        until = next((when for timer, when in tx.deadlines.items() if timer in _FIXED_TIMERS), math.inf)
        destination = tx.destination
        del self._txs[tx.key]
        self._resting[tx.key] = (
            code,
            tx.ack_bytes or tx.last_response_bytes,
            destination.host,
            destination.port,
            destination.transport,
            tx.accepted,
            until,
        )
        if until == math.inf:
            self._end_rest(tx.key, self._resting[tx.key])

    def _end_rest(self, key: TxKey, resting: _Resting) -> None:
        del self._resting[key]
        accepted = resting[_ACCEPTED]
        if accepted is not None and self._accepted.get(accepted) == key:
            del self._accepted[accepted]

    def _rest_input(self, key: TxKey, resting: _Resting, inp: Input, message: Request | Response) -> list[Event]:
        kind, state = _RESTING_STATES[resting[_CODE]]
        transition = TABLES[kind].get((state, inp))
        if transition is None:
            return []
        events: list[Event] = []
        for action in transition.actions:
            if action is Action.PASS_UP:
                assert isinstance(message, Response)
                events.append(ResponseReceived(key, message))
            elif resting[_RESEND]:  # SEND_ACK or RESEND_RESPONSE: the same bytes as the first time
                self.outgoing.append((resting[_RESEND], Peer(resting[_HOST], resting[_PORT], resting[_TRANSPORT])))
        return events

    def _do(
        self,
        tx: _Transaction,
        action: Action,
        response: Response | None,
        ack: Request | None,
        source: Peer | None,
    ) -> list[Event]:
        if action is Action.PASS_UP:
            assert response is not None
            return [ResponseReceived(tx.key, response)]
        if action is Action.PASS_ACK:
            assert ack is not None and source is not None
            return [AckReceived(ack, source)]
        if action is Action.REPORT_TIMEOUT:
            return [TransactionTimedOut(tx.key, after_success=tx.state is State.ACCEPTED)]
        if action is Action.RETRANSMIT:
            self.outgoing.append((tx.request_bytes, tx.destination))
        elif action is Action.SEND_ACK:
            assert response is not None
            if tx.request is not None:  # the first 3xx-6xx; a retransmission of it gets the same ACK
                tx.ack_bytes = bytes(ack_for_failure(tx.request, response))
            self.outgoing.append((tx.ack_bytes, tx.destination))
        elif action is Action.SEND_RESPONSE:
            assert response is not None
            tx.last_response_bytes = bytes(response)
            self.outgoing.append((tx.last_response_bytes, tx.destination))
        elif action is Action.RESEND_RESPONSE:
            if tx.last_response_bytes:
                self.outgoing.append((tx.last_response_bytes, tx.destination))
            elif tx.kind is Kind.SERVER_INVITE:
                self._send_trying(tx)
        elif action is Action.SEND_TRYING:
            self._send_trying(tx)
        return []

    def _send_trying(self, tx: _Transaction) -> None:
        assert tx.request is not None
        tx.last_response_bytes = bytes(make_response(tx.request, 100))
        self.outgoing.append((tx.last_response_bytes, tx.destination))

    def _start(self, tx: _Transaction, timer: Input, now: float) -> None:
        t = tx.timers
        reliable = tx.destination.transport != "UDP"  # Peer.reliable, without a call per timer
        if reliable and timer in _UNRELIABLE_ONLY:
            return  # a stream transport retransmits for us (RFC 3261 sections 17.1.1.2, 17.1.2.2, 17.2.1)
        if reliable and timer in _ZERO_WHEN_RELIABLE:
            interval = 0.0
        elif timer in _BACKOFF:
            intervals = tx.intervals
            if intervals is None:
                intervals = tx.intervals = {}
            previous = intervals.get(timer)
            if previous is None:
                interval = t.t1
            elif tx.kind is Kind.CLIENT_NON_INVITE and tx.state is State.PROCEEDING:
                interval = t.t2  # RFC 3261 section 17.1.2.2: Proceeding retransmits every T2
            else:
                interval = previous * 2
                if timer in _BACKOFF_CAPPED:
                    interval = min(interval, t.t2)
            intervals[timer] = interval
        else:
            interval = t.fixed_durations[timer]
        when = now + interval
        tx.deadlines[timer] = when
        heapq.heappush(self._heap, (when, next(self._seq), tx.key, _VALUE_OF[timer]))

    def _remove(self, tx: _Transaction) -> None:
        self._txs.pop(tx.key, None)
        if tx.accepted is not None and self._accepted.get(tx.accepted) == tx.key:
            del self._accepted[tx.accepted]


def stamped(request: Request, source: Peer) -> Request:
    """``request`` with its top Via stamped as the transaction layer stamps it on receipt."""
    top = request.top_via
    via = _stamp_via(top, source)
    return request if via is top else request.with_top_via(via)


def _stamp_via(top: Via, source: Peer) -> Via:
    """Add received/rport to the top Via as a server transport must (RFC 3261 18.2.1, RFC 3581)."""
    via = top
    if top.rport is not None and top.rport == "":
        via = via.with_param("rport", str(source.port))
        via = via.with_param("received", source.host)
    elif top.host.strip("[]") != source.host or top.received is not None:
        # A "received" the sender wrote itself is overwritten: responses go where the
        # packet came from, never to an address the request merely names.
        via = via.with_param("received", source.host)
    return via


def ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 section 17.1.1.3)."""
    pairs: list[tuple[str, str]] = [("Via", invite.headers.get("Via") or "")]
    pairs += [("Route", r) for r in invite.headers.get_all("Route")]
    pairs += [
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    return Request(headers=Headers(tuple(pairs)), method="ACK", uri=invite.uri)
