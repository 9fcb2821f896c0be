"""A UDP relay for tests: forwards datagrams both ways with an optional delay, and can tap,
drop, replay and tamper them. Runs in-process (asyncio) or as ``python -m tests.tunnel.relay``."""

from __future__ import annotations

import argparse
import asyncio
import heapq
import socket
import sys
from dataclasses import dataclass, field

Address = tuple[str, int]


@dataclass
class UdpRelay:
    """Listens on ``listen``; datagrams from a client go to ``target`` from a per-client socket."""

    listen: Address
    target: Address
    delay: float = 0.0
    cut: bool = False
    tap: list[bytes] = field(default_factory=list)
    tapping: bool = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._front = self._socket(self.listen)
        self.listen = self._front.getsockname()[:2]
        self._clients: dict[Address, socket.socket] = {}
        self._loop.add_reader(self._front.fileno(), self._from_client)
        self._timer: asyncio.TimerHandle | None = None
        self._queue: list[tuple[float, int, socket.socket, bytes, Address]] = []
        self._n = 0

    def _socket(self, addr: Address) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(addr)
        return sock

    def _from_client(self) -> None:
        while True:
            try:
                data, addr = self._front.recvfrom(65535)
            except BlockingIOError:
                return
            back = self._clients.get(addr)
            if back is None:
                back = self._clients[addr] = self._socket((self.listen[0], 0))
                self._loop.add_reader(back.fileno(), self._from_target, back, addr)
            if self.tapping:
                self.tap.append(data)
            self._schedule(back, data, self.target)

    def _from_target(self, back: socket.socket, client: Address) -> None:
        while True:
            try:
                data, _ = back.recvfrom(65535)
            except BlockingIOError:
                return
            self._schedule(self._front, data, client)

    def inject(self, data: bytes, client: Address | None = None) -> None:
        """Send ``data`` to the target as if from the (first) client: a replay or a forgery."""
        back = self._clients[client] if client else next(iter(self._clients.values()))
        back.sendto(data, self.target)

    def _schedule(self, sock: socket.socket, data: bytes, to: Address) -> None:
        if self.cut:
            return
        if not self.delay:
            sock.sendto(data, to)
            return
        self._n += 1
        heapq.heappush(self._queue, (self._loop.time() + self.delay, self._n, sock, data, to))
        if self._timer is None:
            self._timer = self._loop.call_at(self._queue[0][0], self._release)

    def _release(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, _, sock, data, to = heapq.heappop(self._queue)
            try:
                sock.sendto(data, to)
            except OSError:
                pass
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._release)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sock in [self._front, *self._clients.values()]:
            self._loop.remove_reader(sock.fileno())
            sock.close()


def _endpoint(text: str) -> Address:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen")
    parser.add_argument("target")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    relay = UdpRelay(_endpoint(args.listen), _endpoint(args.target), args.delay_ms / 1000)
    await relay.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
