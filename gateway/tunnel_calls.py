"""Which calls cross a tunnel trunk, and when their media streams start and stop (sans-I/O).

The trunk glue shows this core every SIP message that passes between our SIP stack and
the tunnel, with its direction: ``out`` (from our stack into the tunnel) or ``in`` (from
the peer gateway). The core answers with events for the media bridges:

- :class:`StreamsOffered`: an SDP named these streams; each needs a bridge, and the
  gateway that sent the call's INVITE (the *opener*) opens one voice flow per stream;
- :class:`RelayLegDescribed`: our own stack said where its relay leg listens (before
  the relay has sent anything, so the bridge can deliver the far side's first packets);
- :class:`CallFinished`: a BYE, or a final failure of the call's INVITE: close the flows.

A challenge (401/407) does not end a call: the B2BUA retries the INVITE with credentials
under the same Call-ID. Calls that simply go quiet are forgotten by :meth:`TunnelCalls.finish`,
which the glue calls when neither SIP nor media has been seen for a while.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from gateway.b2bua import parse_session_id
from gateway.sip.message import Message, Request, Response
from gateway.sip.sdp import SessionDescription, media_endpoints
from gateway.tunnel_sdp import flow_streams

Addr = tuple[str, int]
Direction = Literal["out", "in"]


@dataclass(frozen=True)
class StreamsOffered:
    call_id: str
    session_id: str
    streams: tuple[int, ...]
    opener: bool  # we sent the call's INVITE: we open the flows
    kinds: tuple[str, ...] = ()  # each stream's media ("audio", "video"), for the flow's traffic class


@dataclass(frozen=True)
class RelayLegDescribed:
    call_id: str
    endpoints: tuple[tuple[int, Addr], ...]  # (stream, where our relay leg receives RTP)


@dataclass(frozen=True)
class CallFinished:
    call_id: str
    reason: str


CallEvent = StreamsOffered | RelayLegDescribed | CallFinished


@dataclass
class _Call:
    session_id: str
    opener: bool
    last_seen: float
    confirmed: bool = False


class TunnelCalls:
    def __init__(self, remember: int = 4096) -> None:
        self._calls: dict[str, _Call] = {}
        # Calls already over: late retransmissions (a 200 to BYE, a repeated 487) must not revive them.
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def __len__(self) -> int:
        return len(self._calls)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def was_finished(self, call_id: str) -> bool:
        return call_id in self._finished

    def last_seen(self, call_id: str) -> float | None:
        call = self._calls.get(call_id)
        return call.last_seen if call is not None else None

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def observe(
        self, message: Message, sdp: SessionDescription | None, direction: Direction, now: float
    ) -> list[CallEvent]:
        """``sdp``: the message's description as it stands on the side it comes from (ours for
        ``out``, the tunnel form for ``in``), or None when it carries none."""
        call_id = message.call_id
        call = self._calls.get(call_id)
        if call is None:
            if call_id in self._finished or not _initial_invite(message):
                return []
            session = parse_session_id(message.headers.get("Session-ID")) or _session_for(call_id)
            call = self._calls[call_id] = _Call(session, opener=direction == "out", last_seen=now)
        call.last_seen = now
        events: list[CallEvent] = []
        if sdp is not None:
            events += self._streams(call_id, call, sdp, direction)
        if isinstance(message, Request) and message.method == "BYE":
            events.append(self.finish(call_id, f"BYE ({direction})"))
        elif isinstance(message, Response) and message.cseq.method == "INVITE" and message.status >= 200:
            if message.status < 300:
                call.confirmed = True
            elif not call.confirmed and message.status not in (401, 407):
                events.append(self.finish(call_id, f"INVITE failed ({message.status})"))
        return events

    def _streams(self, call_id: str, call: _Call, sdp: SessionDescription, direction: Direction) -> list[CallEvent]:
        if direction == "in":
            streams = flow_streams(sdp)
            kinds = tuple(m.kind for m in sdp.media if m.port)
            return [StreamsOffered(call_id, call.session_id, streams, call.opener, kinds)] if streams else []
        endpoints = tuple((i, e) for i, e in enumerate(media_endpoints(sdp)) if e is not None)
        if not endpoints:
            return []
        streams = tuple(i for i, _ in endpoints)
        kinds = tuple(sdp.media[i].kind for i in streams)
        offered = StreamsOffered(call_id, call.session_id, streams, call.opener, kinds)
        return [offered, RelayLegDescribed(call_id, endpoints)]

    def finish(self, call_id: str, reason: str) -> CallFinished:
        self._calls.pop(call_id, None)
        self._finished[call_id] = None
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        return CallFinished(call_id, reason)


def _initial_invite(message: Message) -> bool:
    return isinstance(message, Request) and message.method == "INVITE" and not message.to.tag


def _session_for(call_id: str) -> str:
    """A stable stand-in when the INVITE carried no usable Session-ID (not one of ours)."""
    return hashlib.sha256(call_id.encode()).hexdigest()[:32]
