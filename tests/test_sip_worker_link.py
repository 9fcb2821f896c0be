"""The links between SIP workers: real Unix sockets, frames in order, bursts queued not dropped."""

from __future__ import annotations

import asyncio
import os
import secrets
import struct

from gateway.sip.peer import Peer
from gateway.sip_worker_link import WorkerLink, _FrameReader, decode_frame, encode_frame, link_address


def test_frames_carry_the_peer_and_the_message_unchanged() -> None:
    message = b"SIP/2.0 200 OK\r\nCall-ID: a b\nc\r\n\r\nbody\n with newlines"
    for peer in (Peer("127.0.0.1", 5060, "UDP"), Peer("::1", 40000, "TCP"), Peer("10.0.0.9", 5061, "TLS")):
        assert decode_frame(encode_frame(b"R", peer, message)) == (b"R", peer, message)
        assert decode_frame(encode_frame(b"S", peer, message)) == (b"S", peer, message)


def test_a_mangled_frame_is_refused() -> None:
    for frame in (b"", b"R UDP 127.0.0.1\nx", b"X UDP h 1\nx", b"R UDP h port\nx", b"R UDP h 1"):
        assert decode_frame(frame) is None


def test_frames_are_whole_however_the_stream_cuts_them() -> None:
    frames = [
        encode_frame(b"R", Peer("127.0.0.1", 5060 + i, "UDP"), b"SIP/2.0 200 OK\r\n\r\n" + b"x" * i) for i in range(5)
    ]
    stream = b"".join(struct.pack("!I", len(f)) + f for f in frames)
    for cut in (1, 2, 3, 5, 7, 64, len(stream)):
        got: list[bytes] = []
        reader = _FrameReader(got.append)
        reader._trusted = True  # as connection_made decides for a peer of our user
        for start in range(0, len(stream), cut):
            reader.data_received(stream[start : start + cut])
        assert got == frames, cut
        assert not reader._buffer


async def _links(run: str) -> tuple[WorkerLink, WorkerLink, list[tuple[bytes, Peer]], list[tuple[bytes, Peer]]]:
    got: list[tuple[bytes, Peer]] = []
    sent: list[tuple[bytes, Peer]] = []
    first = WorkerLink(run, 0, lambda d, p: got.append((d, p)), lambda d, p: sent.append((d, p)))
    second = WorkerLink(run, 1, lambda d, p: None, lambda d, p: None)
    await first.start()
    await second.start()
    return first, second, got, sent


async def _until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_burst_arrives_whole_and_in_order() -> None:
    # Far beyond a Unix datagram queue (net.unix.max_dgram_qlen, 10 by default), sent at once.
    first, second, got, _ = await _links(secrets.token_hex(4))
    try:
        source = Peer("127.0.0.1", 5070, "UDP")
        messages = [b"INVITE %d " % i + b"x" * (i % 3000) for i in range(3000)]
        for message in messages:
            second.forward(0, message, source)
        await _until(lambda: len(got) == len(messages))
        assert got == [(m, source) for m in messages]
        assert second.dropped == 0 and second.forwarded == len(messages)
        # Connected now: a pass's frames go out together, still whole and in order.
        got.clear()
        for message in messages:
            second.forward(0, message, source)
        await _until(lambda: len(got) == len(messages))
        assert got == [(m, source) for m in messages]
        assert second.dropped == 0 and second.forwarded == 2 * len(messages)
    finally:
        await first.close()
        await second.close()


async def test_the_largest_sip_message_crosses() -> None:
    first, second, got, sent = await _links(secrets.token_hex(4))
    try:
        big = secrets.token_bytes(65535)
        peer = Peer("192.0.2.7", 5060, "TCP")
        second.forward(0, big, peer)
        second.send_via(0, big, peer)
        await _until(lambda: got and sent)
        assert got == [(big, peer)] and sent == [(big, peer)]
    finally:
        await first.close()
        await second.close()


async def test_a_missing_worker_costs_a_dropped_message_not_a_crash() -> None:
    first, second, _, _ = await _links(secrets.token_hex(4))
    try:
        second.forward(5, b"BYE", Peer("127.0.0.1", 5070, "UDP"))  # no worker 5
        await _until(lambda: second.dropped == 1)
        assert second.forwarded == 0
    finally:
        await first.close()
        await second.close()


async def test_a_process_of_another_user_cannot_hand_a_worker_messages() -> None:
    # Abstract sockets have no file permissions: the link checks the peer's uid itself.
    assert os.getuid() == 0, "the test suite runs as root (scripts/test installs packages)"
    run = secrets.token_hex(4)
    first, second, got, _ = await _links(run)
    try:
        intruder = (
            "import socket, struct\n"
            f"s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect({link_address(run, 0)!r})\n"
            "frame = b'R UDP 10.0.0.1 5060\\nINVITE sip:x@y SIP/2.0\\r\\n\\r\\n'\n"
            "s.sendall(struct.pack('!I', len(frame)) + frame)\n"
            "s.settimeout(5)\n"
            "try:\n    assert s.recv(1) == b''\n"  # the worker closes the connection at once
            "except ConnectionResetError:\n    pass\n"
        )
        # The system's python: the test's own lives under /root, which nobody cannot read.
        proc = await asyncio.create_subprocess_exec(
            "/usr/bin/python3", "-c", intruder, user=65534, group=65534, cwd="/", stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err.decode()
        second.forward(0, b"OPTIONS sip:x@y SIP/2.0", Peer("127.0.0.1", 5070, "UDP"))  # ours still arrive
        await _until(lambda: len(got) == 1)
        assert got == [(b"OPTIONS sip:x@y SIP/2.0", Peer("127.0.0.1", 5070, "UDP"))]
    finally:
        await first.close()
        await second.close()
