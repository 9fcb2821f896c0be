"""A userspace Ethernet bridge that delays every frame: a satellite link for tests (this kernel has no netem).

Run inside a network namespace holding two interfaces:
    python -m tests.support.delay_bridge IFACE_A IFACE_B DELAY_SECONDS
Frames read from one interface (AF_PACKET, all protocols) are written to the
other ``DELAY_SECONDS`` later, in order. Prints "ready" once both are bound.
"""

from __future__ import annotations

import heapq
import itertools
import select
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def bridge(a: str, b: str, delay: float) -> None:
    sockets = {}
    for name in (a, b):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((name, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setblocking(False)
        sockets[name] = sock
    other = {sockets[a]: sockets[b], sockets[b]: sockets[a]}
    queue: list[tuple[float, int, socket.socket, bytes]] = []
    order = itertools.count()
    print("ready", flush=True)
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        readable, _, _ = select.select(list(other), [], [], timeout)
        for sock in readable:
            while True:
                try:
                    frame, address = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if address[2] == PACKET_OUTGOING:
                    continue  # our own transmissions, seen again on the same interface
                heapq.heappush(queue, (time.monotonic() + delay, next(order), other[sock], frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                out.send(frame)
            except OSError:
                pass  # a frame too big or the interface going down: a lossy link drops it


if __name__ == "__main__":
    bridge(sys.argv[1], sys.argv[2], float(sys.argv[3]))
