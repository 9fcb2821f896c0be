"""Routes between gateways and the flow switch that sets up flows hop by hop.

A flow is a two-way datagram channel from an application on one gateway to a
service on another. Its frames carry a *link-local* flow id, like a label in
label switching: each hop assigns the id on its outgoing link when it forwards the
``FlowOpen``, and keeps (in link, in id) <-> (out link, out id). Hubs therefore
forward media with one dictionary lookup, never parse node names per packet, and
keep no flow they were not asked to set up.

Ids on a link are allocated by both ends without clashing: the end whose node name
sorts first takes even ids, the other odd ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.tunnel.control import FlowAccepted, FlowClosed, FlowOpen, FlowRefused
from gateway.tunnel.errors import ControlProtocolError
from gateway.tunnel.frame import TrafficClass

FlowKey = tuple[str, int]
"""(the peer of the link, the flow id on that link)."""


class RouteTable:
    def __init__(self, node: str, neighbours: Iterable[str], routes: Mapping[str, str]) -> None:
        self.node = node
        self.neighbours = frozenset(neighbours)
        self.routes = dict(routes)

    def next_hop(self, destination: str) -> str | None:
        if destination in self.neighbours:
            return destination
        return self.routes.get(destination, self.routes.get("*"))


@dataclass(frozen=True)
class SendControl:
    link: str
    message: FlowOpen | FlowAccepted | FlowRefused | FlowClosed


@dataclass(frozen=True)
class FlowInstalled:
    """The media core of ``link`` must hold state for this flow id."""

    key: FlowKey
    traffic_class: TrafficClass


@dataclass(frozen=True)
class FlowRemoved:
    key: FlowKey


@dataclass(frozen=True)
class IncomingFlowArrived:
    """A flow for a local service: accept or refuse it."""

    key: FlowKey
    src: str
    service: str
    traffic_class: TrafficClass
    meta: Mapping[str, str]


@dataclass(frozen=True)
class LocalFlowAccepted:
    key: FlowKey


@dataclass(frozen=True)
class LocalFlowRefused:
    key: FlowKey
    reason: str


@dataclass(frozen=True)
class LocalFlowClosed:
    key: FlowKey
    reason: str


SwitchAction = (
    SendControl
    | FlowInstalled
    | FlowRemoved
    | IncomingFlowArrived
    | LocalFlowAccepted
    | LocalFlowRefused
    | LocalFlowClosed
)


@dataclass
class _Local:
    traffic_class: TrafficClass
    outgoing: bool
    open: bool = False


@dataclass
class _Transit:
    upstream: FlowKey
    downstream: FlowKey
    traffic_class: TrafficClass
    open: bool = False


@dataclass
class FlowSwitch:
    node: str
    routes: RouteTable
    _local: dict[FlowKey, _Local] = field(default_factory=dict)
    _transit: dict[FlowKey, _Transit] = field(default_factory=dict)
    _next_id: dict[str, int] = field(default_factory=dict)
    # The hot path for hubs: where a frame arriving on (link, id) goes next.
    forward: dict[FlowKey, FlowKey] = field(default_factory=dict)

    def _allocate(self, link: str) -> int:
        parity = 0 if self.node < link else 1
        candidate = self._next_id.get(link, parity + 2)
        while (link, candidate) in self._local or (link, candidate) in self._transit:
            candidate = (candidate + 2) & 0xFFFFFFFF or parity + 2
        self._next_id[link] = (candidate + 2) & 0xFFFFFFFF or parity + 2
        return candidate

    # -- the local application

    def open(
        self, dst: str, service: str, traffic_class: TrafficClass, meta: Mapping[str, str]
    ) -> tuple[FlowKey | None, list[SwitchAction]]:
        link = self.routes.next_hop(dst)
        if link is None or dst == self.node:
            return None, []
        key = (link, self._allocate(link))
        self._local[key] = _Local(traffic_class, outgoing=True)
        message = FlowOpen(key[1], self.node, dst, service, int(traffic_class), MappingProxyType(dict(meta)))
        return key, [FlowInstalled(key, traffic_class), SendControl(link, message)]

    def accept(self, key: FlowKey) -> list[SwitchAction]:
        local = self._local.get(key)
        if local is None or local.outgoing:
            return []
        local.open = True
        return [SendControl(key[0], FlowAccepted(key[1]))]

    def refuse(self, key: FlowKey, reason: str) -> list[SwitchAction]:
        if self._local.pop(key, None) is None:
            return []
        return [FlowRemoved(key), SendControl(key[0], FlowRefused(key[1], reason))]

    def close(self, key: FlowKey, reason: str) -> list[SwitchAction]:
        if self._local.pop(key, None) is None:
            return []
        return [FlowRemoved(key), SendControl(key[0], FlowClosed(key[1], reason))]

    # -- control messages from a link

    def on_control(self, link: str, message: FlowOpen | FlowAccepted | FlowRefused | FlowClosed) -> list[SwitchAction]:
        key = (link, message.flow_id)
        if isinstance(message, FlowOpen):
            return self._on_open(key, message)
        if key in self._local:
            return self._on_local(key, message)
        transit = self._transit.get(key)
        if transit is None:
            return []  # already gone: a close crossed a close
        other = transit.downstream if key == transit.upstream else transit.upstream
        if isinstance(message, FlowAccepted):
            if key != transit.downstream:
                raise ControlProtocolError("FlowAccepted from the side that opened the flow")
            transit.open = True
            return [SendControl(other[0], FlowAccepted(other[1]))]
        self._drop_transit(transit)
        reply: FlowRefused | FlowClosed = (
            FlowRefused(other[1], message.reason)
            if isinstance(message, FlowRefused)
            else FlowClosed(other[1], message.reason)
        )
        return [FlowRemoved(transit.upstream), FlowRemoved(transit.downstream), SendControl(other[0], reply)]

    def _on_open(self, key: FlowKey, message: FlowOpen) -> list[SwitchAction]:
        if key in self._local or key in self._transit:
            return [SendControl(key[0], FlowRefused(key[1], "flow id already in use"))]
        try:
            traffic_class = TrafficClass(message.traffic_class)
        except ValueError:
            return [SendControl(key[0], FlowRefused(key[1], "unknown traffic class"))]
        if message.dst == self.node:
            self._local[key] = _Local(traffic_class, outgoing=False)
            return [
                FlowInstalled(key, traffic_class),
                IncomingFlowArrived(key, message.src, message.service, traffic_class, message.meta),
            ]
        out_link = self.routes.next_hop(message.dst)
        if out_link is None or out_link == key[0]:
            return [SendControl(key[0], FlowRefused(key[1], f"{self.node} has no route to {message.dst}"))]
        out_key = (out_link, self._allocate(out_link))
        transit = _Transit(key, out_key, traffic_class)
        self._transit[key] = self._transit[out_key] = transit
        self.forward[key], self.forward[out_key] = out_key, key
        forwarded = FlowOpen(out_key[1], message.src, message.dst, message.service, int(traffic_class), message.meta)
        return [
            FlowInstalled(key, traffic_class),
            FlowInstalled(out_key, traffic_class),
            SendControl(out_link, forwarded),
        ]

    def _on_local(self, key: FlowKey, message: FlowAccepted | FlowRefused | FlowClosed) -> list[SwitchAction]:
        if isinstance(message, FlowAccepted):
            self._local[key].open = True
            return [LocalFlowAccepted(key)]
        del self._local[key]
        if isinstance(message, FlowRefused):
            return [FlowRemoved(key), LocalFlowRefused(key, message.reason)]
        return [FlowRemoved(key), LocalFlowClosed(key, message.reason)]

    def _drop_transit(self, transit: _Transit) -> None:
        for k in (transit.upstream, transit.downstream):
            self._transit.pop(k, None)
            self.forward.pop(k, None)

    def link_reset(self, link: str, reason: str) -> list[SwitchAction]:
        """The peer on ``link`` restarted: its flows are gone; close them here and beyond."""
        actions: list[SwitchAction] = []
        for key in [k for k in self._local if k[0] == link]:
            del self._local[key]
            actions += [FlowRemoved(key), LocalFlowClosed(key, reason)]
        for key, transit in list(self._transit.items()):
            if key[0] == link and key in self._transit:
                other = transit.downstream if key == transit.upstream else transit.upstream
                self._drop_transit(transit)
                actions += [
                    FlowRemoved(key),
                    FlowRemoved(other),
                    SendControl(other[0], FlowClosed(other[1], reason)),
                ]
        return actions

    def link_removed(self, link: str, reason: str) -> list[SwitchAction]:
        """``link`` goes for good (its peer revoked or reconfigured): tell its peer, close its flows here and beyond."""
        notices: list[SwitchAction] = [SendControl(link, FlowClosed(k[1], reason)) for k, _ in self.flows_on(link)]
        self._next_id.pop(link, None)
        return notices + self.link_reset(link, reason)

    def flows_on(self, link: str) -> list[tuple[FlowKey, TrafficClass]]:
        out = [(k, v.traffic_class) for k, v in self._local.items() if k[0] == link]
        out += [(k, v.traffic_class) for k, v in self._transit.items() if k[0] == link]
        return out

    @property
    def transit_count(self) -> int:
        return len(self._transit) // 2

    @property
    def local_count(self) -> int:
        return len(self._local)
