"""Unix stream sockets between SIP workers: a message that landed on the wrong worker moves on.

The kernel spreads datagrams over the workers by source address; the owner of a message is
decided by its Call-ID (gateway/sip/shard.py). A message for another worker is passed on
as it came, with the address it came from, so the owner answers it as if it had received
it. Only worker 0 holds TCP and TLS connections: another worker hands it what must go
out over one of them.

Streams, not datagrams: a Unix datagram queue holds only net.unix.max_dgram_qlen messages
(10 by default), so a burst would be dropped while the owner is busy; a stream queues it.
Each frame is a 4-byte length, then ``R`` (received: handle it) or ``S`` (send it out over
your connection to the peer), ``transport host port``, a newline, and the SIP message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import cast

from gateway.sip.peer import Peer

log = logging.getLogger("seabridge.sip.workers")

_LENGTH = struct.Struct("!I")
# A SIP message is at most 64 KiB; room for the frame header too.
_MAX_FRAME = 70_000
# Frames queued for a worker that is not reading (stopped, or far behind) are dropped past
# this: like datagrams lost on the wire, the senders' retransmissions cover them.
_MAX_QUEUED_BYTES = 16 * 1024 * 1024


def link_address(run_id: str, index: int) -> str:
    """An abstract-namespace name: nothing on disk to clean up, gone with the process."""
    return f"\0seabridge-sip-{run_id}-{index}"


def same_user(transport: asyncio.BaseTransport) -> bool:
    """Whether the process at the other end of a Unix connection runs as our user.

    Abstract-namespace sockets have no file permissions: any local process could connect and
    hand a worker SIP "received from" any address (a trusted trunk's, say). Only the
    gateway's own processes, which run as its user, may.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return bool(uid == os.getuid())


def control_address(run_id: str, index: int) -> str:
    """Where a worker answers worker 0's questions (its metrics, its calls)."""
    return f"\0seabridge-sipctl-{run_id}-{index}"


def encode_frame(kind: bytes, peer: Peer, data: bytes) -> bytes:
    return b"%s %s %s %d\n" % (kind, peer.transport.encode(), peer.host.encode(), peer.port) + data


def decode_frame(frame: bytes) -> tuple[bytes, Peer, bytes] | None:
    header, sep, data = frame.partition(b"\n")
    parts = header.split(b" ")
    if not sep or len(parts) != 4 or parts[0] not in (b"R", b"S") or not parts[3].isdigit():
        return None
    return parts[0], Peer(parts[2].decode(), int(parts[3]), parts[1].decode()), data


class _FrameReader(asyncio.Protocol):
    """The receiving end of one connection from another worker."""

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._trusted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._trusted = same_user(transport)
        if not self._trusted:
            log.error("refused a sip worker link from another user")
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self._trusted:
            return
        if self._buffer:  # the rest of a frame that came before
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        # Frames are sliced from what came (one copy each): a read holds whole frames but
        # for the last, which waits in the buffer for its rest.
        size = len(data)
        offset = 0
        while size - offset >= 4:
            (length,) = _LENGTH.unpack_from(data, offset)
            if length > _MAX_FRAME:
                log.error("oversized frame from a sip worker: closing the link", extra={"bytes": length})
                assert self._transport is not None
                self._transport.close()
                return
            end = offset + 4 + length
            if end > size:
                break
            self._deliver(data[offset + 4 : end])
            offset = end
        if offset < size:
            self._buffer += memoryview(data)[offset:]


class WorkerLink:
    """This worker's end: receives frames from the others and sends them theirs."""

    def __init__(
        self,
        run_id: str,
        index: int,
        received: Callable[[bytes, Peer], None],
        send_out: Callable[[bytes, Peer], None],
    ) -> None:
        self._run_id = run_id
        self._index = index
        self._received = received
        self._send_out = send_out
        self._server: asyncio.AbstractServer | None = None
        self._out: dict[int, asyncio.Transport] = {}
        self._waiting: dict[int, list[bytes]] = {}
        # Frames for a connected worker, written together once this loop pass is over: one
        # write (and one wake-up of the owner) for all the messages a pass passes on.
        self._pending: dict[int, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.forwarded = 0
        self.dropped = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # Bound here, not by the loop: uvloop rejects abstract-namespace paths.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(link_address(self._run_id, self._index))
        sock.setblocking(False)
        self._server = await loop.create_unix_server(lambda: _FrameReader(self._frame), sock=sock)

    def forward(self, index: int, data: bytes, source: Peer) -> None:
        """Hand a received message to its owner."""
        self._send(index, encode_frame(b"R", source, data))

    def send_via(self, index: int, data: bytes, destination: Peer) -> None:
        """Ask worker ``index`` to send a message over its connection to ``destination``."""
        self._send(index, encode_frame(b"S", destination, data))

    def _send(self, index: int, frame: bytes) -> None:
        out = self._out.get(index)
        if out is not None and out.is_closing():
            del self._out[index]
            out = None
        if out is not None:
            if out.get_write_buffer_size() > _MAX_QUEUED_BYTES:
                self._drop(index, "its queue is full")
                return
            pending = self._pending.get(index)
            if pending is None:
                pending = self._pending[index] = []
                asyncio.get_running_loop().call_soon(self._write_pending, index, out)
            pending.append(_LENGTH.pack(len(frame)))
            pending.append(frame)
            self.forwarded += 1
            return
        waiting = self._waiting.setdefault(index, [])
        waiting.append(frame)
        if len(waiting) == 1:
            task = asyncio.get_running_loop().create_task(self._connect(index))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _write_pending(self, index: int, out: asyncio.Transport) -> None:
        pending = self._pending.pop(index, None)
        if pending and not out.is_closing():
            out.write(b"".join(pending))

    async def _connect(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, link_address(self._run_id, index))
            transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=sock)
        except OSError as exc:
            sock.close()
            # Not started yet, or being restarted: what waited is lost, like datagrams on the wire.
            for _ in self._waiting.pop(index, []):
                self._drop(index, str(exc))
            return
        out = transport
        self._out[index] = out
        for frame in self._waiting.pop(index, []):
            out.write(_LENGTH.pack(len(frame)) + frame)
            self.forwarded += 1

    def _drop(self, index: int, why: str) -> None:
        self.dropped += 1
        log.warning("sip message not passed to its worker", extra={"worker": index, "error": why})

    def _frame(self, frame: bytes) -> None:
        decoded = decode_frame(frame)
        if decoded is None:
            log.warning("bad frame from a sip worker", extra={"bytes": len(frame)})
            return
        kind, peer, data = decoded
        try:
            if kind == b"R":
                self._received(data, peer)
            else:
                self._send_out(data, peer)
        except Exception:
            log.exception("sip worker frame failed", extra={"peer": str(peer)})

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for out in self._out.values():
            out.close()
        if self._server is not None:
            self._server.close()
