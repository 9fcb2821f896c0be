"""A userspace Ethernet delay line between two interfaces (this kernel has no netem).

Run inside a namespace that holds both interfaces: every frame arriving on one is
sent out of the other ``delay`` seconds later, in order. Transparent to IP, so the
tunnel's TCP control channel and UDP media both see the delay.

    python -m tests.tunnel.delaybridge IF_A IF_B --delay-ms 300
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import socket
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def open_raw(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


class DelayLine:
    def __init__(self, a: str, b: str, delay: float) -> None:
        self.delay = delay
        self.socks = {a: open_raw(a), b: open_raw(b)}
        self.other = {a: b, b: a}
        self.queue: collections.deque[tuple[float, socket.socket, bytes]] = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.timer: asyncio.TimerHandle | None = None
        self.frames = 0
        for name, sock in self.socks.items():
            self.loop.add_reader(sock.fileno(), self._readable, name)

    def _readable(self, name: str) -> None:
        sock = self.socks[name]
        out = self.socks[self.other[name]]
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmission seen again
            self.frames += 1
            if self.delay <= 0:
                self._send(out, data)
                continue
            # One fixed delay keeps the queue in arrival order: a deque, not a heap.
            self.queue.append((self.loop.time() + self.delay, out, data))
            if self.timer is None:
                self.timer = self.loop.call_at(self.queue[0][0], self._release)

    def _release(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, out, data = self.queue.popleft()
            self._send(out, data)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._release)

    @staticmethod
    def _send(out: socket.socket, data: bytes) -> None:
        try:
            out.send(data)
        except OSError:
            pass  # interface down or frame too big: the wire drops it too


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    DelayLine(args.a, args.b, args.delay_ms / 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
