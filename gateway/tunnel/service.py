"""The tunnel service: wires links, sockets, control connections and the flow switch together.

This is the only module that owns the event loop's timers for the tunnel: each
link's core gets one ``call_at`` timer re-armed to its ``next_deadline`` after the
loop has done a batch of work (``_rearm``), the aioquic way. Everything it decides
comes from the cores; it does I/O and calls applications back.

Applications use: ``open_flow``, ``serve``, ``send_message``/``on_message``,
``status``; the gateway's SIGHUP handler uses ``apply_peers``. See docs/tunnel.md.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from OpenSSL import SSL

from gateway.tunnel import control
from gateway.tunnel.arq import ArqSettings
from gateway.tunnel.classes import parse_class
from gateway.tunnel.config import TunnelConfig, TunnelPathConfig, TunnelPeerConfig, parse_endpoint
from gateway.tunnel.controlconn import ControlConnection
from gateway.tunnel.errors import ControlProtocolError, FlowRefused, TunnelError
from gateway.tunnel.flows import Flow
from gateway.tunnel.frame import TrafficClass, peek_key_id
from gateway.tunnel.keys import KeyIdAllocator, KeyManager
from gateway.tunnel.link import DatagramReceived, LinkCore, LinkSettings, PathAddressLearned, PathSettings
from gateway.tunnel.messaging import MemoryOutboxStore, Outbox, OutboxStore, RecentIds
from gateway.tunnel.pathmon import ActivePathChanged, MonitorSettings, PathCameUp, PathWentDown
from gateway.tunnel.peerlink import PeerLink
from gateway.tunnel.routing import (
    FlowInstalled,
    FlowKey,
    FlowRemoved,
    FlowSwitch,
    IncomingFlowArrived,
    LocalFlowAccepted,
    LocalFlowClosed,
    LocalFlowRefused,
    RouteTable,
    SendControl,
    SwitchAction,
)
from gateway.tunnel.tls import Identity, TlsSession, make_context
from gateway.tunnel.udp import Address, MediaSocket

log = logging.getLogger("seabridge.tunnel")

FlowHandler = Callable[[Flow], object]
MessageHandler = Callable[[str, bytes], Awaitable[None]]


@dataclass(frozen=True)
class PeersApplied:
    """What ``apply_peers`` changed (node names); ``failed``: new links that could not bind their sockets."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    failed: tuple[str, ...] = ()
    routes_changed: bool = False


@dataclass
class NodeCounters:
    unknown_key: int = 0
    malformed: int = 0
    peers_refused: int = 0
    forwarded: int = 0


def link_settings(config: TunnelConfig) -> LinkSettings:
    return LinkSettings(
        monitor=MonitorSettings(
            interval=config.probe_interval_ms / 1000,
            idle_interval=config.idle_probe_interval_ms / 1000,
            dead_after=config.dead_after_ms / 1000,
            restore_after=config.restore_after_ms / 1000,
        ),
        arq=ArqSettings(
            min_window=config.retransmit_window_min_ms / 1000,
            window_rtts=config.retransmit_window_rtts,
            max_window=config.retransmit_window_max_ms / 1000,
        ),
        mtu=config.mtu,
    )


class TunnelService:
    def __init__(
        self,
        config: TunnelConfig,
        identity: Identity,
        *,
        outbox: OutboxStore | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.node = identity.node
        self.epoch = secrets.token_hex(8)
        self.counters = NodeCounters()
        self._store = outbox or MemoryOutboxStore()
        self._outbox = Outbox(config.message_retry_s)
        self._recent = RecentIds()
        self._allocator = KeyIdAllocator()
        self.links: dict[str, PeerLink] = {}
        self._key_index: dict[int, PeerLink] = {}
        self.switch = FlowSwitch(self.node, RouteTable(self.node, [p.name for p in config.peers], config.route_map()))
        self._flows: dict[FlowKey, Flow] = {}
        self._opening: dict[FlowKey, asyncio.Future[None]] = {}
        self._services: dict[str, FlowHandler] = {}
        self._message_handlers: dict[str, MessageHandler] = {}
        self._sockets: list[MediaSocket] = []
        self._listen_socks: list[MediaSocket] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: set[PeerLink] = set()
        self._rearm_scheduled = False
        self._stopping = False
        self._client_ctx: SSL.Context | None = None
        self._server_ctx: SSL.Context | None = None
        self.link_up_callbacks: list[Callable[[str], None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.reload_identity(self.identity)
        listen: list[tuple[str, int, str]] = []
        for endpoint in self.config.listen:
            host, port = parse_endpoint(endpoint, "listen")
            sock = MediaSocket.bind(host, port, self._on_datagram, name=f"listen {endpoint}")
            self._sockets.append(sock)
            self._listen_socks.append(sock)
            listen.append((host, port, endpoint))
        # Links exist before the TCP listeners accept: the trust check reads them.
        for peer in self.config.peers:
            self._add_link(peer, now)
        for host, port, endpoint in listen:
            server = await self._loop.create_server(self._accept, host, port, reuse_address=True)
            self._servers.append(server)
            log.info("tunnel %s listening on %s (TCP control, UDP media)", self.node, endpoint)
        for message in await self._store.pending():
            self._outbox.add(message, now)
        self._spawn(self._housekeeping())

    def _add_link(self, peer: TunnelPeerConfig, now: float) -> PeerLink:
        """Make the link to ``peer``, bind its dialled paths' sockets and start dialling (if it dials)."""
        keys = KeyManager(
            initiator=self.node < peer.name,
            allocator=self._allocator,
            overlap=self.config.rekey_overlap_s,
            interval=self.config.rekey_interval_s,
            window_size=self.config.replay_window,
        )
        paths = [PathSettings(p.name, p.priority, p.rate_kbps) for p in peer.paths]
        settings = replace(link_settings(self.config), duplicate_voice=peer.duplicate_voice)
        link = PeerLink(peer, LinkCore(peer.name, paths, keys, settings, now))
        try:
            for path in peer.paths:
                if peer.dial and path.address:
                    sock = MediaSocket.bind(path.bind or _wildcard(path.address), 0, self._on_datagram, name=path.name)
                    link.sockets.append(sock)
                    link.set_endpoint(path.name, sock, (path.address, path.port))
                elif path.address and self._listen_socks:
                    link.set_endpoint(path.name, self._listen_socks[0], (path.address, path.port))
        except OSError:
            for sock in link.sockets:
                sock.close()
            raise
        self.links[peer.name] = link
        if peer.dial:
            link.dialer = self._spawn(self._dial_loop(link))
        self._mark(link)
        return link

    def _remove_link(self, name: str, reason: str) -> int:
        """Take the link to ``name`` down for good (flows, control channel, keys, sockets); returns the flows closed."""
        link = self.links[name]
        flows = len(self.switch.flows_on(name))
        self._apply(self.switch.link_removed(name, reason))  # while the control channel can still say so
        if link.dialer is not None:
            link.dialer.cancel()
        if link.control is not None:
            link.control.close(reason)
        if link.timer is not None:
            link.timer.cancel()
            link.timer = None
        self._dirty.discard(link)
        link.core.keys.release_all()
        for key_id in [k for k, v in self._key_index.items() if v is link]:
            del self._key_index[key_id]
        for sock in link.sockets:
            sock.close()
        del self.links[name]
        return flows

    def apply_peers(self, config: TunnelConfig) -> PeersApplied:
        """Make the peers and routes of ``config`` those in use, now; nothing else of it is read.

        A peer no longer listed is revoked: its flows close (the peer is told why), its control
        channel closes, its keys go, and the trust check refuses it from then on. A new peer's link
        is made as at start; a peer whose settings changed is removed and added again. Flows on
        links that did not change are untouched (routes only steer flows opened from now on).
        """
        now = self._loop.time()
        current = {name: link.config for name, link in self.links.items()}
        wanted = {p.name: p for p in config.peers}
        removed = tuple(n for n in current if n not in wanted)
        changed = tuple(n for n in current if n in wanted and wanted[n] != current[n])
        added = tuple(n for n in wanted if n not in current)
        failed: list[str] = []
        for name in removed:
            closed = self._remove_link(name, f"{name} revoked: no longer on {self.node}'s trusted list")
            log.warning(
                "tunnel %s: peer %s revoked: removed from the peers list; flows closed: %d", self.node, name, closed
            )
        for name in changed:
            closed = self._remove_link(name, f"link {self.node}-{name} reconfigured")
            log.warning("tunnel %s: peer %s changed: link made anew; flows closed: %d", self.node, name, closed)
        for name in changed + added:
            try:
                self._add_link(wanted[name], now)
            except OSError as exc:
                failed.append(name)
                log.error("tunnel %s: peer %s not added: %s", self.node, name, exc)
                continue
            if name in added:
                log.info("tunnel %s: peer %s added", self.node, name)
        routes_changed = config.routes != self.config.routes
        self.switch.routes = RouteTable(self.node, list(self.links), config.route_map())
        self.config = replace(
            self.config, peers=tuple(p for p in config.peers if p.name in self.links), routes=config.routes
        )
        return PeersApplied(added, removed, changed, tuple(failed), routes_changed)

    def reload_identity(self, identity: Identity) -> None:
        """Use a (renewed) certificate for connections made from now on."""
        self.identity = identity
        self._client_ctx = make_context(identity, client=True)
        self._server_ctx = make_context(identity, client=False)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for key in list(self._flows):
            self._flows.pop(key)._mark_closed("tunnel stopped")
        for link in self.links.values():
            if link.control is not None:
                link.control.close("tunnel stopped")
            if link.timer is not None:
                link.timer.cancel()
            link.core.keys.release_all()
            for sock in link.sockets:
                sock.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()
        for sock in self._sockets:
            sock.close()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ application API

    def serve(self, service: str, handler: FlowHandler) -> None:
        """Accept flows for ``service``; ``handler`` gets each new Flow (set its receiver there)."""
        self._services[service] = handler

    def unserve(self, service: str) -> None:
        self._services.pop(service, None)

    async def open_flow(
        self,
        peer: str,
        service: str,
        traffic_class: TrafficClass | str = TrafficClass.VOICE,
        meta: Mapping[str, str] | None = None,
        answer_within: float = 10.0,
    ) -> Flow:
        """Open a flow to ``service`` on node ``peer`` (routed via hubs); raises FlowRefused."""
        if isinstance(traffic_class, str):
            traffic_class = parse_class(traffic_class)
        first_hop = self.switch.routes.next_hop(peer)
        if first_hop is None or first_hop not in self.links:
            raise FlowRefused(f"{self.node} has no route to {peer}")
        if not self.links[first_hop].connected:
            raise FlowRefused(f"link to {first_hop} is down")
        key, actions = self.switch.open(peer, service, traffic_class, meta or {})
        assert key is not None
        link = self.links[key[0]]
        flow = Flow(
            self,
            key,
            peer,
            service,
            traffic_class,
            MappingProxyType(dict(meta or {})),
            link.core.max_datagram(traffic_class),
        )
        self._flows[key] = flow
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._opening[key] = waiter
        self._apply(actions)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), answer_within)
        except TimeoutError:
            self._close_flow(key, "open timed out")
            raise FlowRefused(f"no answer from {peer} within {answer_within} s") from None
        finally:
            self._opening.pop(key, None)
        return flow

    def on_message(self, topic: str, handler: MessageHandler) -> None:
        """Handle store-and-forward messages of ``topic``: ``await handler(src_node, body)``."""
        self._message_handlers[topic] = handler

    async def send_message(self, dst: str, topic: str, body: bytes, message_id: str | None = None) -> str:
        """Queue a message for node ``dst``; kept (durably) and resent until ``dst`` acknowledges it.

        Give a ``message_id`` derived from what the message records (e.g. session id, leg and rating
        run) so a repeat after a crash is recognised as the same message.
        """
        message = control.Message(message_id or uuid.uuid4().hex, self.node, dst, topic, body)
        await self._store.put(message)
        self._outbox.add(message, self._loop.time())
        self._pump_outbox()
        return message.message_id

    @property
    def pending_messages(self) -> int:
        return len(self._outbox)

    async def wait_connected(self, peer: str) -> None:
        """Until the link to neighbour ``peer`` has its control channel and media keys (wrap in a timeout)."""
        await self.links[peer].ready.wait()

    # ------------------------------------------------------------------ flows

    def _send_on_flow(self, key: FlowKey, data: bytes) -> bool:
        link = self.links[key[0]]
        ok = link.core.send(key[1], data, self._loop.time())
        link.transmit()
        self._mark(link)
        return ok

    def _close_flow(self, key: FlowKey, reason: str) -> None:
        self._apply(self.switch.close(key, reason))
        flow = self._flows.pop(key, None)
        if flow is not None:
            flow._mark_closed(reason)

    def _apply(self, actions: list[SwitchAction]) -> None:
        for action in actions:
            if isinstance(action, SendControl):
                link = self.links.get(action.link)
                if link is not None and link.connected and link.control is not None:
                    link.control.send(action.message)
                elif isinstance(action.message, control.FlowOpen):
                    # Answer at once rather than let the opener wait for a reply that cannot come.
                    log.info("flow to %s not forwarded: link %s is down", action.message.dst, action.link)
                    refusal = control.FlowRefused(action.message.flow_id, f"link {self.node}-{action.link} is down")
                    self._apply(self.switch.on_control(action.link, refusal))
            elif isinstance(action, FlowInstalled):
                self.links[action.key[0]].core.open_flow(action.key[1], action.traffic_class)
            elif isinstance(action, FlowRemoved):
                self.links[action.key[0]].core.close_flow(action.key[1])
            elif isinstance(action, IncomingFlowArrived):
                self._incoming(action)
            elif isinstance(action, LocalFlowAccepted):
                waiter = self._opening.get(action.key)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif isinstance(action, LocalFlowRefused | LocalFlowClosed):
                self._flow_ended(action.key, action.reason)

    def _flow_ended(self, key: FlowKey, reason: str) -> None:
        waiter = self._opening.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_exception(FlowRefused(reason))
        flow = self._flows.pop(key, None)
        if flow is not None:
            flow._mark_closed(reason)

    def _incoming(self, event: IncomingFlowArrived) -> None:
        handler = self._services.get(event.service)
        if handler is None:
            self._apply(self.switch.refuse(event.key, f"{self.node} offers no service {event.service!r}"))
            return
        link = self.links[event.key[0]]
        flow = Flow(
            self,
            event.key,
            event.src,
            event.service,
            event.traffic_class,
            event.meta,
            link.core.max_datagram(event.traffic_class),
        )
        self._flows[event.key] = flow
        self._apply(self.switch.accept(event.key))
        try:
            handler(flow)
        except Exception:
            log.exception("service %s failed to take a flow from %s", event.service, event.src)
            self._close_flow(event.key, "service failed")

    # ------------------------------------------------------------------ media channel

    def _on_datagram(self, sock: MediaSocket, data: bytes, addr: Address) -> None:
        key_id = peek_key_id(data)
        if key_id is None:
            self.counters.malformed += 1
            return
        link = self._key_index.get(key_id)
        if link is None or key_id not in link.core.keys.receive_keys:
            link = self._find_key(key_id)
            if link is None:
                self.counters.unknown_key += 1
                return
        link.core.receive(data, self._loop.time(), link.path_of(sock, addr), (sock, addr))
        self._after(link)

    def _find_key(self, key_id: int) -> PeerLink | None:
        for link in self.links.values():
            if key_id in link.core.keys.receive_keys:
                self._key_index[key_id] = link
                return link
        self._key_index.pop(key_id, None)
        return None

    def _after(self, link: PeerLink) -> None:
        """Act on what a link core produced: deliver, forward, log; send its frames; re-arm later."""
        now = self._loop.time()
        for event in link.core.events():
            if isinstance(event, DatagramReceived):
                key = (link.name, event.flow_id)
                target = self.switch.forward.get(key)
                if target is not None:
                    out = self.links[target[0]]
                    out.core.send(target[1], event.payload, now)
                    out.transmit()
                    self._mark(out)
                    self.counters.forwarded += 1
                else:
                    flow = self._flows.get(key)
                    if flow is not None:
                        flow._deliver(event.payload)
            elif isinstance(event, PathAddressLearned):
                link.learn(event.path, event.source)
            elif isinstance(event, ActivePathChanged):
                log.warning("link %s: traffic moves from path %s to %s", link.name, event.old, event.new)
                self._maybe_move_control(link)
            elif isinstance(event, PathWentDown):
                log.warning("link %s: path %s is down", link.name, event.path)
            elif isinstance(event, PathCameUp):
                log.info("link %s: path %s is up", link.name, event.path)
        link.transmit()
        self._mark(link)

    def _mark(self, link: PeerLink) -> None:
        self._dirty.add(link)
        if not self._rearm_scheduled:
            self._rearm_scheduled = True
            self._loop.call_soon(self._rearm)

    def _rearm(self) -> None:
        self._rearm_scheduled = False
        now = self._loop.time()
        dirty, self._dirty = self._dirty, set()
        for link in dirty:
            if self.links.get(link.name) is not link:
                continue  # removed meanwhile
            deadline = link.core.next_deadline(now)
            if link.timer is not None and link.timer_at is not None and link.timer_at <= deadline:
                continue
            if link.timer is not None:
                link.timer.cancel()
            link.timer_at = deadline
            link.timer = self._loop.call_at(max(deadline, now), self._on_timer, link)

    def _on_timer(self, link: PeerLink) -> None:
        link.timer = None
        link.timer_at = None
        if self._stopping:
            return
        now = self._loop.time()
        keys = link.core.keys
        if link.connected and keys.rekey_due(now):
            self._start_rekey(link)
        link.core.handle_timer(now)
        for key_id in [k for k, v in self._key_index.items() if v is link and k not in keys.receive_keys]:
            del self._key_index[key_id]
        self._after(link)

    # ------------------------------------------------------------------ control channel

    def _trusted(self, node: str) -> bool:
        return node in self.links

    def _accept(self) -> ControlConnection:
        assert self._server_ctx is not None
        tls = TlsSession(self._server_ctx, client=False, trusted=self._trusted)
        return ControlConnection(tls, self._on_ready, self._on_control, self._on_lost, label="incoming")

    async def _dial_loop(self, link: PeerLink) -> None:
        backoff = 1.0
        while not self._stopping:
            for path in self._dial_order(link):
                conn = await self._dial(link, path)
                if conn is None:
                    continue
                backoff = 1.0
                await conn.finished
                break
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _dial_order(self, link: PeerLink) -> list[TunnelPathConfig]:
        paths = [p for p in link.config.paths if p.address]
        stats = {s.name: s for s in link.core.path_stats()}
        return sorted(paths, key=lambda p: (not stats[p.name].active, not stats[p.name].up, p.priority))

    async def _dial(self, link: PeerLink, path: TunnelPathConfig) -> ControlConnection | None:
        assert self._client_ctx is not None
        tls = TlsSession(self._client_ctx, client=True, trusted=self._trusted, expected_peer=link.name)
        conn = ControlConnection(tls, self._on_ready, self._on_control, self._on_lost, label=f"to {link.name}")
        conn.path = path.name
        local = (path.bind, 0) if path.bind else None
        try:
            async with asyncio.timeout(10.0):
                await self._loop.create_connection(lambda: conn, path.address, path.port, local_addr=local)
                await asyncio.shield(conn.established)
        except (OSError, TimeoutError) as exc:
            link.last_error = f"dial {path.name}: {exc or 'timed out'}"
            conn.close(link.last_error)
            return None
        except TunnelError as exc:
            link.last_error = str(exc)
            return None
        except asyncio.CancelledError:
            conn.close("link removed")
            raise
        return conn

    def _maybe_move_control(self, link: PeerLink) -> None:
        """A dialled control connection on a path now down is stuck: redial on the active path."""
        conn = link.control
        if conn is None or conn.path is None or not link.config.dial:
            return
        stats = {s.name: s for s in link.core.path_stats()}
        if conn.path in stats and not stats[conn.path].up:
            conn.close(f"path {conn.path} is down; reconnecting over {link.core.monitor.active}")

    def _on_ready(self, conn: ControlConnection) -> None:
        node = conn.peer
        assert node is not None
        link = self.links.get(node)
        if link is None:
            conn.close(f"node {node!r} is not on the trusted list")
            return
        if link.control is not None and link.control is not conn:
            link.control.close("replaced by a new connection")
        link.control = conn
        link.hello_received = False
        link.connects += 1
        link.core.keys.attach(conn.tls.exporter)
        conn.send(control.Hello(self.node, self.epoch))

    def _on_lost(self, conn: ControlConnection, reason: str) -> None:
        if not conn.established.done():
            conn.established.set_exception(TunnelError(reason))
            conn.established.exception()  # retrieved: the dialler reads it via shield
        if not conn.finished.done():
            conn.finished.set_result(reason)
        node = conn.peer
        if node is None or not conn.ready:
            if conn.refused:
                self.counters.peers_refused += 1
                log.warning("tunnel %s refused a peer (%s): %s", self.node, conn.label, reason)
            else:
                log.info("tunnel %s: control connection %s failed: %s", self.node, conn.label, reason)
            return
        link = self.links.get(node)
        if link is not None and link.control is conn:
            link.control = None
            link.hello_received = False
            link.ready.clear()
            link.core.keys.detach()
            link.last_error = reason
            if not self._stopping:
                log.warning("link %s: control channel lost: %s", node, reason)

    def _on_control(self, conn: ControlConnection, message: control.ControlMessage) -> None:
        node = conn.peer
        assert node is not None
        link = self.links.get(node)
        if link is None or link.control is not conn:
            return
        try:
            self._dispatch(link, conn, message)
        except ControlProtocolError as exc:
            conn.close(f"protocol error: {exc}")

    def _dispatch(self, link: PeerLink, conn: ControlConnection, message: control.ControlMessage) -> None:
        now = self._loop.time()
        keys = link.core.keys
        if isinstance(message, control.Hello):
            self._on_hello(link, conn, message)
        elif isinstance(message, control.Ping):
            conn.send(control.Pong(message.nonce, message.sent_at))
        elif isinstance(message, control.Pong):
            pass
        elif isinstance(message, control.RekeyOffer):
            conn.send(keys.on_offer(message, now))
        elif isinstance(message, control.RekeyAnswer):
            conn.send(keys.on_answer(message, now))
            self._rekeyed(link)
        elif isinstance(message, control.RekeyDone):
            keys.on_done(message)
            self._rekeyed(link)
        elif isinstance(message, control.RekeyRequest):
            if keys.initiator and not keys.rekey_in_progress:
                self._start_rekey(link)
        elif isinstance(message, control.FlowOpen | control.FlowAccepted | control.FlowRefused | control.FlowClosed):
            self._apply(self.switch.on_control(link.name, message))
        elif isinstance(message, control.Message):
            self._on_message(link, message)
        elif isinstance(message, control.MessageAck):
            self._on_ack(message)

    def _on_hello(self, link: PeerLink, conn: ControlConnection, hello: control.Hello) -> None:
        if hello.node != link.name:
            conn.close(f"Hello names {hello.node!r} but the certificate names {link.name!r}")
            return
        if link.peer_epoch is not None and link.peer_epoch != hello.epoch:
            log.warning("link %s: peer restarted; closing its flows", link.name)
            self._apply(self.switch.link_reset(link.name, f"{link.name} restarted"))
        link.peer_epoch = hello.epoch
        link.hello_received = True
        if link.core.keys.initiator:
            self._start_rekey(link)
        if not conn.established.done():
            conn.established.set_result(None)
        log.info("link %s: control channel up (%s)", link.name, conn.label)
        self._outbox.route_up(None, self._loop.time())
        self._pump_outbox()
        for callback in self.link_up_callbacks:
            callback(link.name)

    def _start_rekey(self, link: PeerLink) -> None:
        if link.control is not None:
            link.control.send(link.core.keys.start_rekey())

    def _rekeyed(self, link: PeerLink) -> None:
        for key_id in link.core.keys.receive_keys:
            self._key_index[key_id] = link
        if link.connected and link.core.keys.send_key is not None:
            link.ready.set()
        self._mark(link)

    # ------------------------------------------------------------------ store-and-forward messages

    def _route(self, message: control.Message | control.MessageAck) -> bool:
        hop = self.switch.routes.next_hop(message.dst)
        link = self.links.get(hop) if hop else None
        if link is None or not link.connected or link.control is None:
            return False
        link.control.send(message)
        return True

    def _pump_outbox(self) -> None:
        now = self._loop.time()
        for message in self._outbox.due(now):
            self._route(message)

    def _on_message(self, link: PeerLink, message: control.Message) -> None:
        if message.dst != self.node:
            self._route(message)  # relayed, not stored: the origin resends until acknowledged
            return
        ack = control.MessageAck(message.message_id, self.node, message.src)
        if (message.src, message.message_id) in self._recent:
            self._route(ack)
            return
        handler = self._message_handlers.get(message.topic)
        if handler is None:
            log.warning("no handler for messages of topic %r from %s; left unacknowledged", message.topic, message.src)
            return
        self._spawn(self._handle_message(handler, message, ack))

    async def _handle_message(self, handler: MessageHandler, message: control.Message, ack: control.MessageAck) -> None:
        try:
            await handler(message.src, message.body)
        except Exception:
            log.exception("handler for %s from %s failed; the sender will retry", message.topic, message.src)
            return
        self._recent.add((message.src, message.message_id))
        self._route(ack)

    def _on_ack(self, ack: control.MessageAck) -> None:
        if ack.dst != self.node:
            self._route(ack)
            return
        if self._outbox.acknowledged(ack.message_id):
            self._spawn(self._store.remove(ack.message_id))

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        """Keepalives, dead control connections, message retries: once a second is plenty for all three."""
        next_ping = 0.0
        while not self._stopping:
            now = self._loop.time()
            if now >= next_ping:
                next_ping = now + self.config.keepalive_s
                for link in self.links.values():
                    conn = link.control
                    if conn is None or not conn.ready:
                        continue
                    if now - conn.last_rx > self.config.control_timeout_s:
                        conn.close(f"no control traffic for {self.config.control_timeout_s:.0f} s")
                    else:
                        conn.send(control.Ping(secrets.randbits(32), now))
            self._pump_outbox()
            await asyncio.sleep(min(1.0, self.config.keepalive_s))

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, object]:
        links = {}
        for name, link in self.links.items():
            totals = link.core.flow_totals()
            links[name] = {
                "connected": link.connected,
                "last_error": link.last_error,
                "active_path": link.core.monitor.active,
                "key_generation": link.core.keys.send_key.generation if link.core.keys.send_key else None,
                "rotations": link.core.keys.rotations,
                "counters": vars(totals),
                "paths": [
                    {
                        **vars(s),
                        **vars(link.core.path_counters[s.name]),
                        "address": _fmt(link.endpoints.get(s.name)),
                    }
                    for s in link.core.path_stats()
                ],
            }
        return {
            "node": self.node,
            "counters": vars(self.counters),
            "flows": {"local": self.switch.local_count, "transit": self.switch.transit_count},
            "pending_messages": len(self._outbox),
            "links": links,
        }


def _fmt(endpoint: object) -> str | None:
    addr = getattr(endpoint, "addr", None)
    return f"{addr[0]}:{addr[1]}" if addr else None


def _wildcard(address: str) -> str:
    return "::" if ":" in address else "0.0.0.0"
