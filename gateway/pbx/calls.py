"""Many AMI events per call in, exactly one record per call out (sans I/O).

Asterisk describes one call with a dozen events over several channels. They share the call's
``Linkedid``; the gateway's Session-ID rides on them as a channel variable (see dialplan.py).
The correlator follows channels per linkedid and, when the last one hangs up, emits one
``PbxCallEnded`` for each call that used the gateway's trunk. Times are the monotonic ``now``
of the events' arrival; the I/O layer turns them into UTC.

Directions: ``into_pbx`` entered Asterisk from the trunk (a site user calling HQ; the site
gateway rated it already), ``from_pbx`` left Asterisk over the trunk (HQ calling a site; charged
to the trunk's configured account).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from gateway.pbx.ami_events import (
    ChannelCreated,
    ChannelHungUp,
    ChannelInfo,
    ChannelStateChanged,
    DialEnded,
    DialStarted,
    PbxEvent,
)
from gateway.pbx.dialplan import SESSION_VARIABLE

Direction = Literal["into_pbx", "from_pbx"]
Disposition = Literal["answered", "no_answer", "busy", "failed", "cancelled", "rejected"]

CHANNEL_UP = 6
# Calls we have emitted, remembered so late or replayed events for them cannot make a second record.
_REMEMBER_ENDED = 4096


@dataclass(frozen=True)
class TrunkBinding:
    endpoint: str  # the gateway's endpoint name in Asterisk's pjsip.conf
    account: str  # the billing account HQ's calls to sites are charged to
    tenant: str
    site: str = "hq"


@dataclass(frozen=True)
class PbxCallRecord:
    session_id: str
    linkedid: str
    direction: Direction
    trunk: str
    account: str  # the trunk's account for from_pbx; "" for into_pbx (the site's gateway charged it)
    tenant: str
    site: str
    caller: str
    callee: str
    started: float
    answered: float | None
    ended: float
    disposition: Disposition
    hangup_cause: int
    # The AMI connection dropped during the call: the end time is when we noticed, not exact.
    incomplete: bool = False

    @property
    def billable_seconds(self) -> float:
        return 0.0 if self.answered is None else max(0.0, self.ended - self.answered)


@dataclass(frozen=True)
class PbxCallEnded:
    record: PbxCallRecord


@dataclass
class _Call:
    linkedid: str
    started: float
    live: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)  # hung up: events that mention them later do not revive them
    first: ChannelInfo | None = None
    trunk_channels: dict[str, tuple[Direction, str]] = field(default_factory=dict)  # uniqueid -> (direction, trunk)
    session_id: str = ""
    dialled: dict[str, str] = field(default_factory=dict)  # uniqueid -> the Dial string that created it
    answered: float | None = None
    dial_status: str = ""
    cause: int = 0
    incomplete: bool = False


class CallCorrelator:
    def __init__(self, trunks: Iterable[TrunkBinding], variable: str = SESSION_VARIABLE) -> None:
        self._trunks = {t.endpoint: t for t in trunks}
        self._variable = variable
        self._calls: dict[str, _Call] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def on_event(self, event: PbxEvent, now: float) -> list[PbxCallEnded]:
        if isinstance(event, ChannelCreated | ChannelStateChanged):
            self._see(event.channel, now)
        elif isinstance(event, DialStarted):
            if event.caller is not None:
                self._see(event.caller, now)
            call = self._see(event.callee, now)
            if call is not None:
                call.dialled.setdefault(event.callee.uniqueid, event.dial_string)
        elif isinstance(event, DialEnded):
            if event.caller is not None:
                self._see(event.caller, now)
            call = self._see(event.callee, now)
            if call is not None and event.status:
                call.dial_status = event.status
        elif isinstance(event, ChannelHungUp):
            return self._hung_up(event, now)
        return []

    def resync(self, live: Iterable[ChannelInfo], now: float) -> list[PbxCallEnded]:
        """After a reconnect: ``live`` is every channel Asterisk has now (CoreShowChannels).

        Calls whose channels all vanished while we were away end now, marked incomplete;
        channels that appeared meanwhile are followed from now on.
        """
        alive: dict[str, set[str]] = {}
        for chan in live:
            linkedid = chan.linkedid or chan.uniqueid
            alive.setdefault(linkedid, set()).add(chan.uniqueid)
            known = self._calls.get(linkedid)
            if known is None or chan.uniqueid not in known.live:
                call = self._see(chan, now)
                if call is not None:
                    call.incomplete = True  # it started while we were not listening
        out: list[PbxCallEnded] = []
        for linkedid, call in list(self._calls.items()):
            call.live &= alive.get(linkedid, set())
            if not call.live:
                call.incomplete = True
                out += self._finish(call, now)
        return out

    # --- internals -----------------------------------------------------------------------------

    def _see(self, chan: ChannelInfo, now: float) -> _Call | None:
        linkedid = chan.linkedid or chan.uniqueid
        if not linkedid or linkedid in self._ended:
            return None
        call = self._calls.get(linkedid)
        if call is None:
            call = self._calls[linkedid] = _Call(linkedid, now)
        if chan.uniqueid and chan.uniqueid not in call.gone:
            call.live.add(chan.uniqueid)
        if call.first is None or chan.uniqueid == linkedid:
            call.first = chan  # the call's first channel: its caller ID is the call's caller
        session = chan.variable(self._variable)
        if session and not call.session_id:
            call.session_id = session
        if chan.endpoint in self._trunks and chan.uniqueid not in call.trunk_channels:
            # The channel that started the call came in over the trunk; any other trunk channel was dialled.
            direction: Direction = "into_pbx" if chan.uniqueid == linkedid else "from_pbx"
            call.trunk_channels[chan.uniqueid] = (direction, chan.endpoint)
        if chan.uniqueid in call.trunk_channels and chan.state == CHANNEL_UP and call.answered is None:
            call.answered = now
        return call

    def _hung_up(self, event: ChannelHungUp, now: float) -> list[PbxCallEnded]:
        call = self._see(event.channel, now)
        if call is None:
            return []
        call.live.discard(event.channel.uniqueid)
        call.gone.add(event.channel.uniqueid)
        if event.channel.uniqueid in call.trunk_channels or not call.cause:
            call.cause = event.cause
        if call.live:
            return []
        return self._finish(call, now)

    def _finish(self, call: _Call, now: float) -> list[PbxCallEnded]:
        del self._calls[call.linkedid]
        self._ended[call.linkedid] = None
        while len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        if not call.trunk_channels:
            return []  # a call among HQ phones: not the gateway's to record
        legs = sorted(call.trunk_channels.values())  # "from_pbx" < "into_pbx": a call that came in wins
        direction, endpoint = legs[-1]
        trunk = self._trunks[endpoint]
        first = call.first
        record = PbxCallRecord(
            # The dialplan mints md5(linkedid) when a call starts at HQ; use the same if events
            # that carried the variable were missed, so both sides still agree.
            session_id=call.session_id or hashlib.md5(call.linkedid.encode()).hexdigest(),
            linkedid=call.linkedid,
            direction=direction,
            trunk=endpoint,
            account=trunk.account if direction == "from_pbx" else "",
            tenant=trunk.tenant,
            site=trunk.site,
            caller=(first.caller_num if first else "") or "",
            callee=self._callee(call, direction, endpoint),
            started=call.started,
            answered=call.answered,
            ended=now,
            disposition=_disposition(call),
            hangup_cause=call.cause,
            incomplete=call.incomplete,
        )
        return [PbxCallEnded(record)]

    @staticmethod
    def _callee(call: _Call, direction: Direction, endpoint: str) -> str:
        if direction == "into_pbx":
            return call.first.exten if call.first is not None else ""
        for uid, (_, trunk) in call.trunk_channels.items():
            if trunk == endpoint and uid in call.dialled:
                # Dial(PJSIP/alice@seabridge) shows "alice@seabridge": the site user is before the @.
                return call.dialled[uid].partition("@")[0]
        return ""


def _disposition(call: _Call) -> Disposition:
    if call.answered is not None:
        return "answered"
    status = call.dial_status.upper()
    if status == "BUSY" or call.cause == 17:
        return "busy"
    if status == "NOANSWER" or call.cause in (18, 19):
        return "no_answer"
    if status == "CANCEL":
        return "cancelled"
    if call.cause == 21:
        return "rejected"
    if call.cause == 16:
        return "cancelled"  # a normal clearing before anyone answered: the caller gave up
    return "failed"
