"""SDP between two gateways joined by a tunnel trunk: streams are named by flow, never by address.

The gateway that sends an offer or answer into the tunnel hides every address of its own
(``c=IN IP4 0.0.0.0``, port 9, the origin's address) and names, per media line, the
tunnel flow that carries it (``a=tunnel-flow:N``: the voice flow of this call with
``stream = N``). The gateway that receives it puts back the local address of the bridge
socket that joins that flow to its own relay, so each relay only ever sends RTP to a
socket on its own box.

Pure functions over :class:`SessionDescription`; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from gateway.sip.sdp import Media, SessionDescription

Addr = tuple[str, int]

FLOW_ATTRIBUTE = "tunnel-flow"
PLACEHOLDER_ADDRESS = "0.0.0.0"
# The discard port, as ICE uses it for "no address here" (RFC 8839): never a real destination.
PLACEHOLDER_PORT = 9

# Attributes that carry one side's transport addresses: they must not cross the tunnel.
_ADDRESS_ATTRIBUTES = ("rtcp:", "candidate:", "ice-", "end-of-candidates", "remote-candidates", FLOW_ATTRIBUTE)


def to_tunnel(sdp: SessionDescription) -> SessionDescription:
    """The description as it travels through the tunnel: flows named, our addresses hidden."""
    media = []
    for index, m in enumerate(sdp.media):
        attributes = tuple(a for a in m.attributes if not a.startswith(_ADDRESS_ATTRIBUTES))
        if m.port:
            attributes += (f"{FLOW_ATTRIBUTE}:{index}",)
        port = PLACEHOLDER_PORT if m.port else 0
        media.append(replace(m, port=port, connection=None, attributes=attributes))
    return replace(
        sdp,
        origin=_origin_at(sdp.origin, PLACEHOLDER_ADDRESS),
        connection=_connection(PLACEHOLDER_ADDRESS),
        media=tuple(media),
    )


def flow_streams(sdp: SessionDescription) -> tuple[int, ...]:
    """The stream numbers (flows) a description received from the tunnel names, one per live media line."""
    return tuple(stream_of(m, index) for index, m in enumerate(sdp.media) if m.port)


def stream_of(media: Media, index: int) -> int:
    """The flow a media line names; its position when it names none (or names it badly)."""
    value = media.attribute(FLOW_ATTRIBUTE)
    return int(value) if value is not None and value.isdigit() else index


def from_tunnel(sdp: SessionDescription, bridges: Mapping[int, Addr]) -> SessionDescription:
    """The description for our own SIP stack: each stream at the local bridge of its flow.

    A stream without a bridge keeps the placeholder (our relay then has nowhere to send
    it, which is right for a call the tunnel side has already forgotten).
    """
    media = []
    first: Addr | None = None
    for index, m in enumerate(sdp.media):
        attributes = tuple(a for a in m.attributes if not a.startswith(FLOW_ATTRIBUTE))
        bridge = bridges.get(stream_of(m, index)) if m.port else None
        if bridge is None:
            hidden = _connection(PLACEHOLDER_ADDRESS) if m.port else None
            media.append(replace(m, connection=hidden, attributes=attributes))
            continue
        first = first or bridge
        media.append(replace(m, port=bridge[1], connection=_connection(bridge[0]), attributes=attributes))
    address = first[0] if first is not None else PLACEHOLDER_ADDRESS
    return replace(sdp, origin=_origin_at(sdp.origin, address), connection=_connection(address), media=tuple(media))


def _connection(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


def _origin_at(origin: str, address: str) -> str:
    parts = origin.split()
    if len(parts) != 6:
        return origin
    return " ".join([*parts[:3], "IN", "IP6" if ":" in address else "IP4", address])
