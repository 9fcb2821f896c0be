"""SIP over a byte stream (TCP, TLS): message framing by Content-Length, sans-I/O.

RFC 3261 section 18.3: on a stream, Content-Length is mandatory and is the only
way to find where a message ends. CRLF keep-alives (RFC 5626 section 3.5.1)
arrive between messages: a double CRLF is a ping that wants a single CRLF pong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import SipProtocolError

# At most ten digits: int() refuses over 4300, and no message is that long anyway.
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,10})[ \t]*$", re.IGNORECASE | re.MULTILINE)


class FramingError(SipProtocolError):
    """The stream cannot be resynchronised: answer if possible, then close the connection."""


@dataclass(frozen=True)
class KeepAlivePing:
    """A CRLFCRLF ping: answer with one CRLF."""


Frame = bytes | KeepAlivePing


class StreamFramer:
    def __init__(self, max_message_bytes: int = 65535) -> None:
        self._buffer = bytearray()
        self._max = max_message_bytes

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Frame | None:
        buf = self._buffer
        # Keep-alives and stray line ends between messages.
        if buf.startswith(b"\r\n\r\n"):
            del buf[:4]
            return KeepAlivePing()
        if buf == b"\r\n" or buf == b"\r\n\r":
            return None  # maybe the start of a ping
        while buf.startswith(b"\r\n") and not buf.startswith(b"\r\n\r\n"):
            del buf[:2]
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._max:
                raise FramingError("headers larger than the message size limit", 513)
            return None
        head = bytes(buf[:end])
        lengths = _CONTENT_LENGTH.findall(head)
        if not lengths:
            raise FramingError("Content-Length is required on a stream transport", 400)
        if len(set(lengths)) != 1:
            raise FramingError("conflicting Content-Length headers", 400)
        total = end + 4 + int(lengths[0])
        if total > self._max:
            raise FramingError("message larger than the size limit", 513)
        if len(buf) < total:
            return None
        message = bytes(buf[:total])
        del buf[:total]
        return message

    @property
    def buffered(self) -> int:
        return len(self._buffer)
