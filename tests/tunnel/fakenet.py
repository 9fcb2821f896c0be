"""Two LinkCores joined by simulated paths (delay, loss, cut), stepped with a fake clock."""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field

from gateway.tunnel.keys import KeyIdAllocator, KeyManager
from gateway.tunnel.link import DatagramReceived, LinkCore, LinkEvent, LinkSettings, PathSettings


def session_exporter(secret: bytes):  # type: ignore[no-untyped-def]
    return lambda context: hashlib.sha256(secret + context).digest()


def keyed_pair(overlap: float = 30.0) -> tuple[KeyManager, KeyManager]:
    a = KeyManager(initiator=True, allocator=KeyIdAllocator(), overlap=overlap)
    b = KeyManager(initiator=False, allocator=KeyIdAllocator(), overlap=overlap)
    rekey(a, b, b"tls-session-1", now=0.0)
    return a, b


def rekey(a: KeyManager, b: KeyManager, secret: bytes | None, now: float) -> None:
    if secret is not None:
        a.attach(session_exporter(secret))
        b.attach(session_exporter(secret))
    answer = b.on_offer(a.start_rekey(), now)
    b.on_done(a.on_answer(answer, now))


@dataclass
class SimPath:
    name: str
    delay: float
    loss: float = 0.0
    cut: bool = False


@dataclass
class Net:
    a: LinkCore
    b: LinkCore
    paths: dict[str, SimPath]
    now: float = 0.0
    seed: int = 1
    queue: list[tuple[float, int, str, str, bytes]] = field(default_factory=list)
    received: dict[str, list[DatagramReceived]] = field(default_factory=lambda: {"a": [], "b": []})
    events: dict[str, list[LinkEvent]] = field(default_factory=lambda: {"a": [], "b": []})
    wire_log: list[tuple[str, str, bytes]] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def core(self, side: str) -> LinkCore:
        return self.a if side == "a" else self.b

    def _flush(self) -> None:
        for side in ("a", "b"):
            core = self.core(side)
            for path, data in core.transmit():
                self.wire_log.append((side, path, data))
                sim = self.paths[path]
                if sim.cut or self.rng.random() < sim.loss:
                    continue
                self._n += 1
                dest = "b" if side == "a" else "a"
                heapq.heappush(self.queue, (self.now + sim.delay, self._n, dest, path, data))
            for event in core.events():
                self.events[side].append(event)
                if isinstance(event, DatagramReceived):
                    self.received[side].append(event)

    def run_until(self, end: float, tick: float | None = None, on_tick=None) -> None:  # type: ignore[no-untyped-def]
        """Advance the fake clock to ``end``, firing deliveries, timers and an optional app tick."""
        next_tick = self.now if tick is not None else float("inf")
        self._flush()
        while True:
            candidates = [self.a.next_deadline(self.now), self.b.next_deadline(self.now), next_tick]
            if self.queue:
                candidates.append(self.queue[0][0])
            t = max(self.now, min(candidates))
            if t > end:
                self.now = end
                return
            self.now = t
            while self.queue and self.queue[0][0] <= t:
                _, _, dest, path, data = heapq.heappop(self.queue)
                self.core(dest).receive(data, t, path, ("addr", path))
            for core in (self.a, self.b):
                if core.next_deadline(t) <= t:
                    core.handle_timer(t)
            if tick is not None and t >= next_tick:
                assert on_tick is not None
                on_tick(t)
                next_tick += tick
            self._flush()


def make_net(
    paths: list[SimPath], priorities: dict[str, int], settings: LinkSettings | None = None, **kw: object
) -> Net:
    ka, kb = keyed_pair()
    specs = [PathSettings(p.name, priorities[p.name]) for p in paths]
    s = settings or LinkSettings()
    a = LinkCore("b", specs, ka, s, 0.0)
    b = LinkCore("a", specs, kb, s, 0.0)
    return Net(a, b, {p.name: p for p in paths}, **kw)  # type: ignore[arg-type]
