"""What the HQ Asterisk needs so its events carry the gateway's Session-ID.

The gateway sends ``Session-ID: <uuid>;remote=<uuid>`` (RFC 7989) on every INVITE it places
over the trunk. Two Gosub routines in the PBX's dialplan carry it (a ``;`` starts a comment in
extensions.conf: the texts escape it):

* ``seabridge-session`` copies the header's local UUID into an inherited channel variable (so
  every channel the call creates, the dialled HQ phone's too, has it), or mints one from the
  call's linkedid when the call starts at HQ;
* ``seabridge-session-header`` is a Dial pre-dial handler (``b()``) that puts the variable back
  on the INVITE Asterisk sends to the gateway, so HQ's calls to sites carry it too.

``manager.conf``'s ``channelvars`` then makes Asterisk add ``ChanVariable: NAME=value`` to every
AMI event about such a channel. The tests configure their private Asterisk from these same
texts; docs/pbx.md shows them to the PBX's administrator.
"""

from __future__ import annotations

SESSION_VARIABLE = "SEABRIDGE_SESSION_ID"
SESSION_HEADER = "Session-ID"
NULL_UUID = "0" * 32


def dialplan_snippet(variable: str = SESSION_VARIABLE) -> str:
    """extensions.conf contexts to Gosub into (see the module's docstring)."""
    return f"""\
[seabridge-session]
; Gosub(seabridge-session,s,1) first thing for every call that may touch the gateway trunk.
exten => s,1,GotoIf($["${{{variable}}}" != ""]?done)
 same => n,Set(SB_SESSION_HDR=${{PJSIP_HEADER(read,{SESSION_HEADER})}})
 same => n,Set(SB_SESSION_UUID=${{TOLOWER(${{CUT(SB_SESSION_HDR,\\;,1)}})}})
 same => n,GotoIf($["${{REGEX("^[0-9a-f]{{32}}$" ${{SB_SESSION_UUID}})}}" = "1"]?adopt)
 same => n,Set(SB_SESSION_UUID=${{MD5(${{CHANNEL(linkedid)}})}})
 same => n(adopt),Set(__{variable}=${{SB_SESSION_UUID}})
 same => n(done),Return()

[seabridge-session-header]
; Dial(PJSIP/user@seabridge,,b(seabridge-session-header^s^1)) on calls towards the gateway.
exten => s,1,Set(PJSIP_HEADER(add,{SESSION_HEADER})=${{{variable}}}\\;remote={NULL_UUID})
 same => n,Return()
"""


def manager_general_lines(variable: str = SESSION_VARIABLE) -> str:
    """Lines for manager.conf's [general] section."""
    return f"channelvars = {variable}\n"


def manager_user_section(user: str, secret: str, permit: str = "127.0.0.1/255.255.255.255") -> str:
    """A manager.conf user with the rights the gateway uses and no more."""
    return f"""\
[{user}]
secret = {secret}
deny = 0.0.0.0/0.0.0.0
permit = {permit}
; call: channel and extension-state events; security: failed logins; system: boot and shutdown;
; write reporting: CoreShowChannels and ExtensionStateList after a reconnect; originate: click-to-call.
read = system,call,security
write = call,originate,reporting
"""
