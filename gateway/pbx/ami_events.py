"""AMI events as typed values: the handful the gateway acts on, and one catch-all.

Names are in the past tense (what the PBX reports has happened); each keeps the AMI
message it came from for fields we do not model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.pbx.ami_frame import AmiMessage

# The events Asterisk's security framework raises (main/security_events.c), by AMI name.
SECURITY_EVENTS = frozenset(
    {
        "FailedACL",
        "InvalidAccountID",
        "SessionLimit",
        "MemoryLimit",
        "LoadAverageLimit",
        "RequestNotAllowed",
        "AuthMethodNotAllowed",
        "RequestBadFormat",
        "SuccessfulAuth",
        "UnexpectedAddress",
        "ChallengeResponseFailed",
        "InvalidPassword",
        "ChallengeSent",
        "InvalidTransport",
    }
)


@dataclass(frozen=True)
class ChannelInfo:
    """One channel's snapshot, as Asterisk puts it in call events."""

    channel: str
    uniqueid: str
    linkedid: str
    state: int
    caller_num: str
    caller_name: str
    connected_num: str
    connected_name: str
    context: str
    exten: str
    account_code: str
    variables: tuple[tuple[str, str], ...] = ()

    def variable(self, name: str) -> str:
        for k, v in self.variables:
            if k == name:
                return v
        return ""

    @property
    def endpoint(self) -> str:
        """``PJSIP/seabridge-0000002a`` -> ``seabridge`` (the name before the sequence suffix)."""
        tech_name = self.channel.partition("/")[2]
        return tech_name.rpartition("-")[0] or tech_name


@dataclass(frozen=True)
class ChannelCreated:
    channel: ChannelInfo
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class ChannelStateChanged:
    channel: ChannelInfo
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class ChannelHungUp:
    channel: ChannelInfo
    cause: int
    cause_text: str
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class DialStarted:
    caller: ChannelInfo | None  # None when Originate dials its first leg
    callee: ChannelInfo
    dial_string: str
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class DialEnded:
    caller: ChannelInfo | None
    callee: ChannelInfo
    status: str  # ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION, CHANUNAVAIL ...
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class ExtensionStateChanged:
    exten: str
    context: str
    hint: str
    status: int  # Asterisk's ast_extension_states bit set: 1 in use, 2 busy, 4 unavailable, 8 ringing, 16 on hold
    status_text: str
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class DeviceStateChanged:
    device: str
    state: str  # NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE, ONHOLD, UNKNOWN
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class SecurityEventReported:
    name: str
    severity: str
    service: str
    account_id: str
    session_id: str
    local_address: str
    remote_address: str
    event_tv: str
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class OriginateFinished:
    action_id: str
    success: bool
    reason: int  # 4 answered, 5 busy, 8 congestion, 1 hung up, 3 ringing timed out, 0 failed
    channel: str
    uniqueid: str
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class AsteriskBooted:
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class AsteriskShutDown:
    restarting: bool
    message: AmiMessage = field(repr=False)


@dataclass(frozen=True)
class OtherEventReceived:
    name: str
    message: AmiMessage = field(repr=False)


PbxEvent = (
    ChannelCreated
    | ChannelStateChanged
    | ChannelHungUp
    | DialStarted
    | DialEnded
    | ExtensionStateChanged
    | DeviceStateChanged
    | SecurityEventReported
    | OriginateFinished
    | AsteriskBooted
    | AsteriskShutDown
    | OtherEventReceived
)


def channel_info(msg: AmiMessage, prefix: str = "") -> ChannelInfo | None:
    """The snapshot of the channel whose fields carry ``prefix``, if the message has one."""
    name = msg.get(prefix + "Channel")
    if not name:
        return None
    return ChannelInfo(
        channel=name,
        uniqueid=msg.get(prefix + "Uniqueid"),
        linkedid=msg.get(prefix + "Linkedid"),
        state=_int(msg.get(prefix + "ChannelState")),
        caller_num=_unknown(msg.get(prefix + "CallerIDNum")),
        caller_name=_unknown(msg.get(prefix + "CallerIDName")),
        connected_num=_unknown(msg.get(prefix + "ConnectedLineNum")),
        connected_name=_unknown(msg.get(prefix + "ConnectedLineName")),
        context=msg.get(prefix + "Context"),
        exten=msg.get(prefix + "Exten"),
        account_code=msg.get(prefix + "AccountCode"),
        variables=tuple(sorted(msg.variables(prefix).items())),
    )


def parse_event(msg: AmiMessage) -> PbxEvent:
    """The typed event for an AMI event message; unknown or incomplete ones stay generic."""
    name = msg.event
    chan = channel_info(msg)
    dest = channel_info(msg, "Dest")
    if name == "Newchannel" and chan:
        return ChannelCreated(chan, msg)
    if name == "Newstate" and chan:
        return ChannelStateChanged(chan, msg)
    if name == "Hangup" and chan:
        return ChannelHungUp(chan, _int(msg.get("Cause")), msg.get("Cause-txt"), msg)
    if name == "DialBegin" and dest:
        return DialStarted(chan, dest, msg.get("DialString"), msg)
    if name == "DialEnd" and dest:
        return DialEnded(chan, dest, msg.get("DialStatus"), msg)
    if name == "ExtensionStatus":
        exten, context, hint = msg.get("Exten"), msg.get("Context"), msg.get("Hint")
        return ExtensionStateChanged(exten, context, hint, _int(msg.get("Status"), -1), msg.get("StatusText"), msg)
    if name == "DeviceStateChange":
        return DeviceStateChanged(msg.get("Device"), msg.get("State"), msg)
    if name in SECURITY_EVENTS:
        return SecurityEventReported(
            name,
            msg.get("Severity"),
            msg.get("Service"),
            _unknown(msg.get("AccountID")),
            msg.get("SessionID"),
            msg.get("LocalAddress"),
            msg.get("RemoteAddress"),
            msg.get("EventTV"),
            msg,
        )
    if name == "OriginateResponse":
        success = msg.response == "Success"
        reason = _int(msg.get("Reason"))
        return OriginateFinished(msg.action_id, success, reason, msg.get("Channel"), msg.get("Uniqueid"), msg)
    if name == "FullyBooted":
        return AsteriskBooted(msg)
    if name == "Shutdown":
        return AsteriskShutDown(msg.get("Restart").lower() == "true", msg)
    return OtherEventReceived(name, msg)


def _int(text: str, default: int = 0) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _unknown(text: str) -> str:
    return "" if text == "<unknown>" else text
