"""Which SIP worker process owns a message, read from its raw bytes before it is parsed.

With ``[sip] workers = N`` every worker listens on the same UDP port (SO_REUSEPORT), and the
kernel hands each datagram to one of them by its source address, not by call. A call is
owned by one worker: the one its Call-ID hashes to. The B2BUA mints its B-leg Call-IDs so
that they hash to the same worker, so every message of both legs (responses, ACK, BYE,
CANCEL, re-INVITE) finds its call's state with one look at the Call-ID.

Messages that are not a call's belong to worker 0, the full gateway: presence (SUBSCRIBE,
NOTIFY, PUBLISH, MESSAGE) and the responses to requests only it sends (REGISTER to trunks,
OPTIONS keep-alives). Requests that need no state (REGISTER, OPTIONS) are served where
they land: bindings live in the shared location store.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from gateway.sip.dialog import new_call_id

# Header names are case-insensitive; "i" is Call-ID's compact form (RFC 3261 section 7.3.3).
# A header follows a line break (the first line is the start line): a literal "\n" to scan
# for is twice as fast as "^", which is tried at every position.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_CSEQ_METHOD = re.compile(rb"\ncseq[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)

# Served by worker 0 alone: presence lives there, and it alone registers with trunks and
# sends keep-alives, so responses to REGISTER and OPTIONS are its own.
_FIRST_WORKER_REQUESTS = frozenset({b"SUBSCRIBE", b"NOTIFY", b"PUBLISH", b"MESSAGE"})
_FIRST_WORKER_RESPONSES = _FIRST_WORKER_REQUESTS | {b"REGISTER", b"OPTIONS"}
# Served by whichever worker the kernel chose: no call state.
_ANY_WORKER_REQUESTS = frozenset({b"REGISTER", b"OPTIONS"})


@dataclass(frozen=True)
class Shard:
    """This process's place among the SIP workers: ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker index {self.index} is outside 0..{self.count - 1}")

    def owner(self, call_id: bytes) -> int:
        return zlib.crc32(call_id) % self.count

    def worker_for(self, data: bytes) -> int | None:
        """The worker that must handle this message, or None for "whoever received it"
        (a message we cannot read is answered by the parser where it landed)."""
        if self.count == 1:
            return None
        end = data.find(b"\r\n\r\n")
        end = len(data) if end < 0 else end  # the headers only: a body cannot steer a message
        cseq = _CSEQ_METHOD.search(data, 0, end)
        call_id = _CALL_ID.search(data, 0, end)
        if cseq is None or call_id is None or not call_id.group(1):
            return None
        method = cseq.group(1).upper()
        if data.startswith(b"SIP/"):
            return 0 if method in _FIRST_WORKER_RESPONSES else self.owner(call_id.group(1))
        if method in _FIRST_WORKER_REQUESTS:
            return 0
        if method in _ANY_WORKER_REQUESTS:
            return None
        return self.owner(call_id.group(1))

    def new_call_id(self, host: str) -> str:
        """A fresh Call-ID that hashes to this worker (one try in ``count``, on average)."""
        while True:
            call_id = new_call_id(host)
            if self.count == 1 or self.owner(call_id.encode()) == self.index:
                return call_id


# One SIP process: every message is its own.
SINGLE_PROCESS = Shard()
