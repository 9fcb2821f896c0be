"""The media channel's UDP sockets: drain every datagram waiting at each wake-up.

asyncio's datagram endpoints read one datagram per event-loop callback (about
30k packets/s here); reading until EAGAIN in one callback multiplies that and lets a
small site box carry hundreds of calls.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass

Address = tuple[str, int]
Receiver = Callable[["MediaSocket", bytes, Address], None]

# Drain at most this many per wake-up so one busy socket cannot starve the loop.
MAX_BATCH = 512


@dataclass
class SocketCounters:
    rx_packets: int = 0
    rx_wakeups: int = 0
    tx_packets: int = 0
    tx_dropped: int = 0


class MediaSocket:
    def __init__(self, sock: socket.socket, receiver: Receiver, name: str = "") -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self._receiver = receiver
        self._loop = asyncio.get_running_loop()
        self.counters = SocketCounters()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self.closed = False

    @classmethod
    def bind(cls, host: str, port: int, receiver: Receiver, name: str = "", buffer: int = 4 << 20) -> MediaSocket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        return cls(sock, receiver, name)

    @property
    def local_address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _on_readable(self) -> None:
        recvfrom = self.sock.recvfrom
        receiver = self._receiver
        self.counters.rx_wakeups += 1
        for _ in range(MAX_BATCH):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP port unreachable surfaces here on Linux; the next read goes on.
                continue
            self.counters.rx_packets += 1
            receiver(self, data, (addr[0], addr[1]))

    def send(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
            self.counters.tx_packets += 1
        except (BlockingIOError, InterruptedError):
            self.counters.tx_dropped += 1  # a full socket buffer: shed, as the wire would
        except OSError:
            self.counters.tx_dropped += 1  # no route (path down) or unreachable

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
