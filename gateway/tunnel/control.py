"""Control-channel messages and their framing over the TLS byte stream.

Each message is ``u32 length | u16 header length | JSON header | body``. The JSON
header holds the type name and the small fields; the one ``body`` field of a
message (ledger records, certificates) travels raw after it, so bulk data is
never base64-inflated. Other ``bytes`` fields (public keys) are hex in the JSON.

``ControlDecoder`` is sans-I/O: feed it stream bytes, take complete messages.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

from gateway.tunnel.errors import ControlProtocolError

MAX_MESSAGE = 4 * 1024 * 1024
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Hello:
    """First message each side sends; ``epoch`` changes when a gateway process restarts."""

    node: str
    epoch: str
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Ping:
    nonce: int
    sent_at: float


@dataclass(frozen=True)
class Pong:
    nonce: int
    sent_at: float


@dataclass(frozen=True)
class RekeyOffer:
    generation: int
    key_id: int
    public: bytes


@dataclass(frozen=True)
class RekeyAnswer:
    generation: int
    key_id: int
    public: bytes


@dataclass(frozen=True)
class RekeyDone:
    generation: int


@dataclass(frozen=True)
class RekeyRequest:
    reason: str


@dataclass(frozen=True)
class FlowOpen:
    flow_id: int
    src: str
    dst: str
    service: str
    traffic_class: int
    meta: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class FlowAccepted:
    flow_id: int


@dataclass(frozen=True)
class FlowRefused:
    flow_id: int
    reason: str


@dataclass(frozen=True)
class FlowClosed:
    flow_id: int
    reason: str


@dataclass(frozen=True)
class Message:
    """A store-and-forward message from node ``src`` to node ``dst``, routed hop by hop."""

    message_id: str
    src: str
    dst: str
    topic: str
    body: bytes = b""


@dataclass(frozen=True)
class MessageAck:
    """``src`` (the receiver) has handled ``message_id``; routed back to ``dst`` (the sender)."""

    message_id: str
    src: str
    dst: str


ControlMessage = (
    Hello
    | Ping
    | Pong
    | RekeyOffer
    | RekeyAnswer
    | RekeyDone
    | RekeyRequest
    | FlowOpen
    | FlowAccepted
    | FlowRefused
    | FlowClosed
    | Message
    | MessageAck
)

_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        Hello,
        Ping,
        Pong,
        RekeyOffer,
        RekeyAnswer,
        RekeyDone,
        RekeyRequest,
        FlowOpen,
        FlowAccepted,
        FlowRefused,
        FlowClosed,
        Message,
        MessageAck,
    )
}
_LENGTHS = struct.Struct("!IH")


def encode(message: ControlMessage) -> bytes:
    header: dict[str, Any] = {"t": type(message).__name__}
    body = b""
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name == "body":
            body = value
        elif isinstance(value, bytes):
            header[f.name] = value.hex()
        elif isinstance(value, Mapping):
            header[f.name] = dict(value)
        else:
            header[f.name] = value
    head = json.dumps(header, separators=(",", ":")).encode()
    return _LENGTHS.pack(2 + len(head) + len(body), len(head)) + head + body


def decode(frame: bytes) -> ControlMessage:
    """One message from ``frame`` (without its u32 length prefix)."""
    (head_len,) = struct.unpack_from("!H", frame)
    try:
        header = json.loads(frame[2 : 2 + head_len])
        cls = _TYPES[header.pop("t")]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ControlProtocolError("unreadable control message header") from None
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        if name == "body":
            values[name] = bytes(frame[2 + head_len :])
        elif name in header:
            values[name] = _field(hint, header[name], name)
    try:
        message: ControlMessage = cls(**values)
    except TypeError as exc:
        raise ControlProtocolError(f"{cls.__name__}: {exc}") from None
    return message


def _field(hint: Any, value: Any, name: str) -> Any:
    expected: dict[str, type | tuple[type, ...]] = {
        "int": int,
        "float": (int, float),
        "str": str,
        "bytes": str,
        "Mapping[str, str]": dict,
    }
    kind = expected.get(str(hint))
    if kind is None or isinstance(value, bool) or not isinstance(value, kind):
        raise ControlProtocolError(f"field {name} has the wrong type")
    if hint == "bytes" and isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise ControlProtocolError(f"field {name} is not hex") from None
    if hint == "float" and isinstance(value, int | float):
        return float(value)
    if hint == "Mapping[str, str]" and isinstance(value, dict):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise ControlProtocolError(f"field {name} must map strings to strings")
        return MappingProxyType(dict(value))
    return value


class ControlDecoder:
    """Reassembles messages from a byte stream."""

    _SIZE: ClassVar[struct.Struct] = struct.Struct("!I")

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[ControlMessage]:
        self._buffer += data
        while len(self._buffer) >= 4:
            (length,) = self._SIZE.unpack_from(self._buffer)
            if length < 2 or length > MAX_MESSAGE:
                raise ControlProtocolError(f"control message length {length} out of range")
            if len(self._buffer) < 4 + length:
                return
            frame = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            yield decode(frame)
