"""Free ports for test services: single ports above the kernel's ephemeral range, blocks from a range nobody else uses."""

from __future__ import annotations

import itertools
import os
import socket

_next_block = itertools.count(0)
# Two test runs on one machine start at different places in the range.
_next_free = itertools.count(os.getpid() * 7919 % 1000)
FREE_BASE = 61000
FREE_LIMIT = 65000
FREE_STRIDE = 4
# Below the relay tests (20000-32000) and the kernel's ephemeral range (32768+), so nothing else takes them.
BLOCK_BASE = 10000
BLOCK_LIMIT = 20000
BLOCK_SIZE = 200


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on ``host``, with the three ports after it (SIP listens on both, TLS on +1).

    Ports come from above the kernel's ephemeral range (32768-60999): a port the kernel picked
    for us and we released could be handed to any outgoing connection before the service under
    test binds it, and the test would fail on a clash it did not make.
    """
    slots = (FREE_LIMIT - FREE_BASE) // FREE_STRIDE
    for _ in range(slots):
        # Whole slots, so the ports a caller derives from its own (SIP's TLS on +1, sipp's
        # media on +1..+3) are never the next caller's port.
        port = FREE_BASE + FREE_STRIDE * (next(_next_free) % slots)
        if all(_is_free(p, host) for p in range(port, port + FREE_STRIDE)):
            return port
    raise RuntimeError(f"no four free ports in {FREE_BASE}-{FREE_LIMIT} on {host}")


def _is_free(port: int, host: str) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def port_block(size: int = BLOCK_SIZE) -> tuple[int, int]:
    """A block of UDP ports [first, last] for a media range (RTP/RTCP pairs).

    Blocks are handed out round-robin and reused once free again (tests stop their processes).
    """
    count = (BLOCK_LIMIT - BLOCK_BASE) // BLOCK_SIZE
    for _ in range(count):
        first = BLOCK_BASE + (next(_next_block) % count) * BLOCK_SIZE
        if all(_udp_free(p) for p in range(first, first + size, 10)):
            return first, first + size - 1
    # Everything looks busy (another test run on this machine): the relay steps over held pairs.
    first = BLOCK_BASE + (next(_next_block) % count) * BLOCK_SIZE
    return first, first + size - 1


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
