"""AMI framing, sans I/O: bytes in, ``AmiMessage`` values out; actions to bytes.

On the wire AMI is a banner line (``Asterisk Call Manager/11.0.0``) then messages of
``Key: Value`` lines, each message ended by an empty line, CRLF throughout. Keys repeat
(``ChanVariable`` once per channel variable), so a message keeps its fields in order as pairs.
Text is UTF-8 (caller names in Chinese arrive as UTF-8); undecodable bytes are replaced, never
dropped silently into a shorter name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.pbx.errors import AmiProtocolError

# Far above any real event (a DialBegin with many channel variables is ~2 KB): a peer that
# sends more without an empty line is not speaking AMI, and must not fill our memory.
MAX_MESSAGE_BYTES = 256 * 1024
_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Banner:
    """The first line Asterisk sends: the AMI protocol version (not Asterisk's own)."""

    version: str


@dataclass(frozen=True)
class AmiMessage:
    fields: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str = "") -> str:
        """The first value of ``key`` (keys compare without case, as Asterisk's do)."""
        want = key.lower()
        for k, v in self.fields:
            if k.lower() == want:
                return v
        return default

    def get_all(self, key: str) -> tuple[str, ...]:
        want = key.lower()
        return tuple(v for k, v in self.fields if k.lower() == want)

    def has(self, key: str) -> bool:
        want = key.lower()
        return any(k.lower() == want for k, _ in self.fields)

    @property
    def event(self) -> str:
        return self.get("Event")

    @property
    def response(self) -> str:
        return self.get("Response")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")

    def variables(self, prefix: str = "") -> dict[str, str]:
        """Channel variables of the channel whose fields start with ``prefix`` ("" or "Dest").

        Asterisk writes ``ChanVariable: NAME=value`` in channel snapshots, ``DestChanVariable``
        for the second channel of an event, and ``ChanVariable(PJSIP/x-1): NAME=value`` in
        OriginateResponse.
        """
        key = f"{prefix}ChanVariable".lower()
        out: dict[str, str] = {}
        for k, v in self.fields:
            lk = k.lower()
            if lk == key or (lk.startswith(key + "(") and lk.endswith(")")):
                name, sep, value = v.partition("=")
                if sep:
                    out[name] = value
        return out


class AmiParser:
    """Feed it bytes as they arrive; take complete messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._banner_seen = False

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> Banner | AmiMessage | None:
        """The next complete item, or None until more bytes arrive.

        Raises AmiProtocolError when the stream cannot be AMI.
        """
        if not self._banner_seen:
            return self._banner()
        while True:
            end = self._buffer.find(_END)
            if end < 0:
                if len(self._buffer) > MAX_MESSAGE_BYTES:
                    raise AmiProtocolError(f"a message longer than {MAX_MESSAGE_BYTES} bytes")
                return None
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + len(_END)]
            if raw.strip():  # stray blank lines between messages carry nothing
                return parse_message(raw)

    def _banner(self) -> Banner | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > 1024:
                raise AmiProtocolError("no AMI banner")
            return None
        line = bytes(self._buffer[:end]).decode("utf-8", "replace")
        del self._buffer[: end + 2]
        name, sep, version = line.partition("/")
        if not sep or "Call Manager" not in name:
            raise AmiProtocolError(f"not an AMI banner: {line[:80]!r}")
        self._banner_seen = True
        return Banner(version.strip())


def parse_message(raw: bytes) -> AmiMessage:
    """One message's bytes (without the ending empty line) as an AmiMessage."""
    pairs: list[tuple[str, str]] = []
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue  # AMI has no field without a colon; skip rather than invent one
        pairs.append((key.strip(), value[1:] if value.startswith(" ") else value))
    return AmiMessage(tuple(pairs))


def encode_action(action: str, action_id: str, fields: Iterable[tuple[str, str]] = ()) -> bytes:
    """An action's bytes. Values come from API callers: a CR or LF in one would start a new
    field or a new action (``\\r\\nAction: Command``), so they are refused, not escaped."""
    lines = [("Action", action), ("ActionID", action_id), *fields]
    out: list[str] = []
    for key, value in lines:
        if not key or any(c in key for c in ":\r\n") or any(c in value for c in "\r\n\x00"):
            raise AmiProtocolError(f"unsafe AMI field {key!r}")
        out.append(f"{key}: {value}\r\n")
    out.append("\r\n")
    return "".join(out).encode("utf-8")
