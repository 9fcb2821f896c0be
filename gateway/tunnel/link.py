"""One link's media channel, sans-I/O: frames in and out, keys, paths, classes, timers.

Driven like aioquic's connection: ``send`` (API), ``receive`` (a datagram), and
``handle_timer(now)`` at ``next_deadline()``. Results are taken with
``transmit()`` (datagrams to put on named paths) and ``events()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.tunnel.arq import ArqReceiver, ArqSender, ArqSettings, Dedup
from gateway.tunnel.classes import POLICIES
from gateway.tunnel.errors import AuthenticationFailed, FrameError
from gateway.tunnel.frame import (
    HEADER_SIZE,
    OVERHEAD,
    Flags,
    FrameType,
    Header,
    Probe,
    TrafficClass,
    pack_nack,
    parse_header,
    parse_nack,
    parse_probe,
)
from gateway.tunnel.keys import KeyManager
from gateway.tunnel.pathmon import MonitorSettings, PathEvent, PathMonitor, PathSpec, PathStats
from gateway.tunnel.shaper import PathShaper


@dataclass(frozen=True)
class PathSettings:
    name: str
    priority: int
    rate_kbps: int = 0


@dataclass(frozen=True)
class LinkSettings:
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    arq: ArqSettings = field(default_factory=ArqSettings)
    duplicate_voice: bool = False
    # Largest UDP payload we put on a path; a datagram bigger than this minus OVERHEAD is refused.
    mtu: int = 1400


@dataclass(frozen=True)
class DatagramReceived:
    flow_id: int
    payload: bytes


@dataclass(frozen=True)
class PathAddressLearned:
    """An authenticated probe came for ``path`` from ``source`` (opaque to the core: an address)."""

    path: str
    source: object


LinkEvent = DatagramReceived | PathAddressLearned | PathEvent


@dataclass
class LinkCounters:
    rx_frames: int = 0
    tx_frames: int = 0
    replayed: int = 0
    tampered: int = 0
    malformed: int = 0
    unknown_key: int = 0
    unknown_flow: int = 0
    unknown_path: int = 0
    no_key: int = 0
    oversized: int = 0
    duplicates: int = 0
    retransmitted: int = 0
    nacks_sent: int = 0
    arq_lost: int = 0
    arq_recovered: int = 0


@dataclass
class PathCounters:
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    shaped_drops: int = 0


# Control-class flows (signalling such as SIP) carry a one-byte fragment header on every frame:
# index << 4 | (count - 1), so a message up to MAX_FRAGMENTS frames long crosses a 1400-byte path.
MAX_FRAGMENTS = 16


class _FlowState:
    __slots__ = ("flow_id", "traffic_class", "next_seq", "sender", "receiver", "dedup", "parts")

    def __init__(self, flow_id: int, traffic_class: TrafficClass, arq: ArqSettings) -> None:
        self.flow_id = flow_id
        self.traffic_class = traffic_class
        self.next_seq = 0
        policy = POLICIES[traffic_class]
        self.sender = ArqSender(arq) if policy.retransmit else None
        self.receiver = ArqReceiver(arq, first_seq=0) if policy.in_order else None
        self.dedup = Dedup()
        self.parts: list[bytes] = []


class LinkCore:
    def __init__(
        self, peer: str, paths: Sequence[PathSettings], keys: KeyManager, settings: LinkSettings, now: float
    ) -> None:
        self.peer = peer
        self.keys = keys
        self.settings = settings
        self.monitor = PathMonitor([PathSpec(p.name, p.priority) for p in paths], settings.monitor, now)
        self._shapers = {p.name: PathShaper(p.rate_kbps, now) for p in paths}
        self.path_counters = {p.name: PathCounters() for p in paths}
        self.counters = LinkCounters()
        self._flows: dict[int, _FlowState] = {}
        self._ordered: set[int] = set()  # flows with an ArqReceiver, polled by the timer
        # Retransmitted flows whose last frame goes again after a quiet spell: a lost final frame
        # leaves no gap for the receiver to NACK (TCP's tail loss probe, for the same reason).
        self._tails: dict[int, tuple[float, int]] = {}
        self._out: list[tuple[str, bytes]] = []
        self._events: list[LinkEvent] = []

    @property
    def max_payload(self) -> int:
        return self.settings.mtu - OVERHEAD

    def max_datagram(self, traffic_class: TrafficClass) -> int:
        """Largest datagram a flow of this class accepts (control flows are fragmented)."""
        if traffic_class is TrafficClass.CONTROL:
            return MAX_FRAGMENTS * (self.max_payload - 1)
        return self.max_payload

    # -- flows

    def open_flow(self, flow_id: int, traffic_class: TrafficClass) -> None:
        self._flows[flow_id] = _FlowState(flow_id, traffic_class, self.settings.arq)
        if self._flows[flow_id].receiver is not None:
            self._ordered.add(flow_id)

    def close_flow(self, flow_id: int) -> None:
        state = self._flows.pop(flow_id, None)
        self._ordered.discard(flow_id)
        self._tails.pop(flow_id, None)
        if state is not None:
            self._fold_counters(state)

    def _fold_counters(self, state: _FlowState) -> None:
        self.counters.duplicates += state.dedup.duplicates
        if state.receiver is not None:
            self.counters.arq_lost += state.receiver.lost
            self.counters.arq_recovered += state.receiver.recovered

    def has_flow(self, flow_id: int) -> bool:
        return flow_id in self._flows

    # -- sending

    def send(self, flow_id: int, payload: bytes, now: float) -> bool:
        """Queue one datagram of an open flow; False if it was dropped (no key, too big, unknown flow)."""
        flow = self._flows.get(flow_id)
        if flow is None:
            self.counters.unknown_flow += 1
            return False
        if len(payload) > self.max_datagram(flow.traffic_class):
            self.counters.oversized += 1
            return False
        if flow.traffic_class is TrafficClass.CONTROL:
            size = self.max_payload - 1
            chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
            sent = True
            for index, chunk in enumerate(chunks):
                sent &= self._send_frame(flow, bytes([index << 4 | (len(chunks) - 1)]) + chunk, now)
            return sent
        return self._send_frame(flow, payload, now)

    def _send_frame(self, flow: _FlowState, payload: bytes, now: float) -> bool:
        flow_id = flow.flow_id
        seq16 = flow.next_seq
        flow.next_seq = (seq16 + 1) & 0xFFFF
        if flow.sender is not None:
            flow.sender.record(seq16, payload, now, self.monitor.srtt())
            self._tails[flow_id] = (now + self._tail_delay(), 2)
        duplicate = flow.traffic_class is TrafficClass.VOICE and self.settings.duplicate_voice
        sent = False
        for i, path in enumerate(self.monitor.send_paths(duplicate)):
            flags = Flags.DUPLICATE if i else Flags.NONE
            sent |= self._emit(path, FrameType.DATA, flow.traffic_class, flags, flow_id, seq16, payload, now)
        return sent

    def _tail_delay(self) -> float:
        rtt = self.monitor.srtt()
        return max(0.2, 1.5 * (rtt if rtt is not None else self.settings.arq.default_rtt))

    def _tail_probes(self, now: float) -> None:
        for flow_id, (due, left) in list(self._tails.items()):
            if now < due:
                continue
            flow = self._flows.get(flow_id)
            if flow is None or flow.sender is None or left <= 0:
                del self._tails[flow_id]
                continue
            seq16 = (flow.next_seq - 1) & 0xFFFF
            for _, payload in flow.sender.on_nack([seq16]):
                (path,) = self.monitor.send_paths()
                self._emit(path, FrameType.DATA, flow.traffic_class, Flags.RETRANSMIT, flow_id, seq16, payload, now)
            self._tails[flow_id] = (now + 2 * self._tail_delay(), left - 1)

    def _emit(
        self,
        path: str,
        frame_type: FrameType,
        traffic_class: TrafficClass,
        flags: Flags,
        flow_id: int,
        flow_seq: int,
        payload: bytes,
        now: float,
    ) -> bool:
        key = self.keys.send_key
        if key is None:
            self.counters.no_key += 1
            return False
        seq = key.next_seq
        key.next_seq = seq + 1
        header = Header(frame_type, traffic_class, flags, key.key_id, seq, flow_id, flow_seq).pack()
        frame = key.key.seal(seq, header, payload)
        for ready in self._shapers[path].submit(frame, traffic_class, now):
            self._put(path, ready)
        return True

    def _put(self, path: str, frame: bytes) -> None:
        counters = self.path_counters[path]
        counters.tx_frames += 1
        counters.tx_bytes += len(frame)
        self.counters.tx_frames += 1
        self._out.append((path, frame))

    # -- receiving

    def receive(self, data: bytes, now: float, path: str | None = None, source: object = None) -> None:
        try:
            header = parse_header(data)
        except FrameError:
            self.counters.malformed += 1
            return
        key = self.keys.receive_keys.get(header.key_id)
        if key is None:
            self.counters.unknown_key += 1
            return
        if not key.window.check(header.seq):
            self.counters.replayed += 1
            return
        try:
            body = key.key.open(header.seq, data[:HEADER_SIZE], data[HEADER_SIZE:])
        except AuthenticationFailed:
            self.counters.tampered += 1
            return
        key.window.accept(header.seq)
        self.counters.rx_frames += 1
        if path is not None and path in self.path_counters:
            counters = self.path_counters[path]
            counters.rx_frames += 1
            counters.rx_bytes += len(data)
        kind = header.type
        if kind is FrameType.DATA:
            self._on_data(header, body, now)
        elif kind is FrameType.PROBE or kind is FrameType.PROBE_REPLY:
            self._on_probe(kind, body, now, source)
        elif kind is FrameType.NACK:
            self._on_nack(header, body, now)

    def _on_data(self, header: Header, body: bytes, now: float) -> None:
        flow = self._flows.get(header.flow_id)
        if flow is None:
            self.counters.unknown_flow += 1
            return
        if flow.receiver is not None:
            for payload in flow.receiver.on_frame(header.flow_seq, body, now):
                self._deliver(flow, payload)
        elif flow.dedup.first_time(header.flow_seq):
            self._events.append(DatagramReceived(header.flow_id, body))

    def _deliver(self, flow: _FlowState, payload: bytes) -> None:
        if flow.traffic_class is not TrafficClass.CONTROL:
            self._events.append(DatagramReceived(flow.flow_id, payload))
            return
        if not payload:
            self.counters.malformed += 1
            return
        index, count = payload[0] >> 4, (payload[0] & 0x0F) + 1
        if index == 0:
            flow.parts = []
        if index != len(flow.parts):
            flow.parts = []  # a fragment was given up by the retransmission window: drop the message
            return
        flow.parts.append(payload[1:])
        if len(flow.parts) == count:
            self._events.append(DatagramReceived(flow.flow_id, b"".join(flow.parts)))
            flow.parts = []

    def _on_probe(self, kind: FrameType, body: bytes, now: float, source: object) -> None:
        try:
            probe = parse_probe(body)
        except FrameError:
            self.counters.malformed += 1
            return
        if probe.path not in self._shapers:
            self.counters.unknown_path += 1
            return
        if kind is FrameType.PROBE:
            self._events.append(PathAddressLearned(probe.path, source))
            self._emit(probe.path, FrameType.PROBE_REPLY, TrafficClass.CONTROL, Flags.NONE, 0, 0, body, now)
        else:
            self._events.extend(self.monitor.on_reply(probe.path, probe.probe_id, now))

    def _on_nack(self, header: Header, body: bytes, now: float) -> None:
        flow = self._flows.get(header.flow_id)
        if flow is None or flow.sender is None:
            self.counters.unknown_flow += 1
            return
        try:
            seqs = parse_nack(body)
        except FrameError:
            self.counters.malformed += 1
            return
        (path,) = self.monitor.send_paths()
        for seq16, payload in flow.sender.on_nack(seqs):
            self.counters.retransmitted += 1
            self._emit(path, FrameType.DATA, flow.traffic_class, Flags.RETRANSMIT, flow.flow_id, seq16, payload, now)

    # -- timers

    def handle_timer(self, now: float) -> None:
        self._events.extend(self.monitor.poll(now))
        if self.keys.send_key is not None:
            for due in self.monitor.probes_due(now):
                body = Probe(due.path, due.probe_id, now).pack()
                self._emit(due.path, FrameType.PROBE, TrafficClass.CONTROL, Flags.NONE, 0, 0, body, now)
        self._tail_probes(now)
        rtt = self.monitor.srtt()
        for flow_id in list(self._ordered):
            receiver = self._flows[flow_id].receiver
            assert receiver is not None
            delivered, nacks = receiver.poll(now, rtt)
            for payload in delivered:
                self._deliver(self._flows[flow_id], payload)
            if nacks:
                (path,) = self.monitor.send_paths()
                self.counters.nacks_sent += 1
                traffic_class = self._flows[flow_id].traffic_class
                self._emit(path, FrameType.NACK, traffic_class, Flags.NONE, flow_id, 0, pack_nack(nacks), now)
        for path, shaper in self._shapers.items():
            if shaper.waiting:
                for frame in shaper.poll(now):
                    self._put(path, frame)
        self.keys.expire(now)

    def next_deadline(self, now: float) -> float:
        deadlines = [self.monitor.next_deadline()]
        rtt = self.monitor.srtt()
        for flow_id in self._ordered:
            receiver = self._flows[flow_id].receiver
            assert receiver is not None
            deadline = receiver.next_deadline(rtt)
            if deadline is not None:
                deadlines.append(deadline)
        for shaper in self._shapers.values():
            deadline = shaper.next_deadline(now)
            if deadline is not None:
                deadlines.append(deadline)
        deadlines.extend(due for due, _ in self._tails.values())
        key_deadline = self.keys.next_deadline()
        if key_deadline is not None:
            deadlines.append(key_deadline)
        return min(deadlines)

    # -- results

    def transmit(self) -> list[tuple[str, bytes]]:
        out, self._out = self._out, []
        return out

    def events(self) -> list[LinkEvent]:
        events, self._events = self._events, []
        return events

    def path_stats(self) -> list[PathStats]:
        return self.monitor.stats()

    def flow_totals(self) -> LinkCounters:
        """Counters including those still held by open flows."""
        totals = LinkCounters(**vars(self.counters))
        for state in self._flows.values():
            totals.duplicates += state.dedup.duplicates
            if state.receiver is not None:
                totals.arq_lost += state.receiver.lost
                totals.arq_recovered += state.receiver.recovered
        return totals
