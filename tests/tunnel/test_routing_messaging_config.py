from __future__ import annotations

import pytest

from gateway.config import parse_config
from gateway.configschema import ConfigError
from gateway.storage.sqlite import SqliteDatabase
from gateway.tunnel.control import FlowAccepted, FlowClosed, FlowOpen, FlowRefused, Message
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.messaging import OUTBOX_SCHEMA, MemoryOutboxStore, Outbox, RecentIds, SqliteOutboxStore
from gateway.tunnel.routing import (
    FlowInstalled,
    FlowRemoved,
    FlowSwitch,
    IncomingFlowArrived,
    LocalFlowAccepted,
    LocalFlowClosed,
    LocalFlowRefused,
    RouteTable,
    SendControl,
)


def switches() -> dict[str, FlowSwitch]:
    return {
        "site1": FlowSwitch("site1", RouteTable("site1", ["hub"], {"*": "hub"})),
        "hub": FlowSwitch("hub", RouteTable("hub", ["site1", "hq"], {})),
        "hq": FlowSwitch("hq", RouteTable("hq", ["hub"], {"site1": "hub"})),
    }


def deliver(sw: dict[str, FlowSwitch], origin: str, actions: list, log: list) -> None:  # type: ignore[type-arg]
    """Carry SendControl actions to the switch at the other end of each link."""
    queue = [(origin, a) for a in actions]
    while queue:
        node, action = queue.pop(0)
        log.append((node, action))
        if isinstance(action, SendControl):
            queue += [(action.link, a) for a in sw[action.link].on_control(node, action.message)]


def test_flow_set_up_through_a_hub_and_closed() -> None:
    sw = switches()
    log: list = []  # type: ignore[type-arg]
    key, actions = sw["site1"].open("hq", "rtp", TrafficClass.VOICE, {"call": "c1"})
    assert key is not None and key[0] == "hub"
    deliver(sw, "site1", actions, log)
    arrived = next(a for n, a in log if isinstance(a, IncomingFlowArrived))
    assert arrived.src == "site1" and arrived.service == "rtp" and arrived.meta["call"] == "c1"
    assert sw["hub"].transit_count == 1
    # the hub's forwarding entries pair the two link-local ids
    (hq_key,) = [k for k in sw["hub"].forward if k[0] == "hq"]
    assert sw["hub"].forward[hq_key] == ("site1", key[1]) and sw["hub"].forward[("site1", key[1])] == hq_key
    log.clear()
    deliver(sw, "hq", sw["hq"].accept(arrived.key), log)
    assert ("site1", LocalFlowAccepted(key)) in log
    log.clear()
    deliver(sw, "hq", sw["hq"].close(arrived.key, "bye"), log)
    assert ("site1", LocalFlowClosed(key, "bye")) in log
    assert sw["hub"].transit_count == 0 and not sw["hub"].forward
    assert sum(isinstance(a, FlowRemoved) for _, a in log) == 4


def test_no_route_is_refused_back_to_the_origin() -> None:
    sw = switches()
    log: list = []  # type: ignore[type-arg]
    key, actions = sw["site1"].open("lagos", "rtp", TrafficClass.VOICE, {})
    deliver(sw, "site1", actions, log)
    refused = [a for n, a in log if isinstance(a, LocalFlowRefused)]
    assert refused == [LocalFlowRefused(key, "hub has no route to lagos")]  # type: ignore[arg-type]


def test_link_ids_do_not_clash_between_the_two_ends() -> None:
    a = FlowSwitch("a", RouteTable("a", ["b"], {}))
    b = FlowSwitch("b", RouteTable("b", ["a"], {}))
    ids_a = {a.open("b", "s", TrafficClass.TV, {})[0][1] for _ in range(50)}  # type: ignore[index]
    ids_b = {b.open("a", "s", TrafficClass.TV, {})[0][1] for _ in range(50)}  # type: ignore[index]
    assert not ids_a & ids_b and len(ids_a) == 50


def test_peer_restart_closes_its_flows_beyond_the_hub() -> None:
    sw = switches()
    log: list = []  # type: ignore[type-arg]
    key, actions = sw["site1"].open("hq", "tv", TrafficClass.TV, {})
    deliver(sw, "site1", actions, log)
    log.clear()
    deliver(sw, "hub", sw["hub"].link_reset("site1", "site1 restarted"), log)
    assert any(isinstance(a, LocalFlowClosed) and a.reason == "site1 restarted" for n, a in log)
    assert sw["hq"].local_count == 0


def test_duplicate_open_and_bad_class_refused() -> None:
    hub = switches()["hub"]
    first = hub.on_control("site1", FlowOpen(3, "site1", "hq", "x", 1))
    assert any(isinstance(a, FlowInstalled) for a in first)
    again = hub.on_control("site1", FlowOpen(3, "site1", "hq", "x", 1))
    assert again == [SendControl("site1", FlowRefused(3, "flow id already in use"))]
    bad = hub.on_control("site1", FlowOpen(5, "site1", "hq", "x", 7))
    assert bad == [SendControl("site1", FlowRefused(5, "unknown traffic class"))]
    assert hub.on_control("site1", FlowClosed(99, "x")) == []
    assert hub.on_control("site1", FlowAccepted(99)) == []


def test_outbox_retries_until_acknowledged() -> None:
    box = Outbox(retry=30.0)
    m = Message("ledger:s1:1:1", "site1", "hq", "ledger", b"row")
    box.add(m, 0.0)
    box.add(m, 0.0)  # idempotent
    assert box.due(0.0) == [m] and box.due(1.0) == []
    assert box.next_deadline() == 30.0 and box.due(30.0) == [m]
    box.route_up({"hq"}, 31.0)
    assert box.due(31.0) == [m]
    assert box.acknowledged(m.message_id) and not box.acknowledged(m.message_id) and len(box) == 0


def test_recent_ids_are_bounded() -> None:
    ids = RecentIds(size=2)
    for i in range(3):
        ids.add(("site1", str(i)))
    assert ("site1", "0") not in ids and ("site1", "2") in ids


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_outbox_stores(kind: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = SqliteDatabase(tmp_path / "o.db", OUTBOX_SCHEMA) if kind == "sqlite" else None
    store = SqliteOutboxStore(db) if db else MemoryOutboxStore()
    try:
        for i in range(3):
            await store.put(Message(f"m{i}", "site1", "hq", "ledger", bytes([i, 0, 255])))
        await store.put(Message("m1", "site1", "hq", "ledger", b"dup"))
        await store.remove("m0")
        assert [(m.message_id, m.body) for m in await store.pending()] == [
            ("m1", b"\x01\x00\xff"),
            ("m2", b"\x02\x00\xff"),
        ]
    finally:
        if db:
            db.close()


def test_tunnel_config_parses_and_names_bad_keys() -> None:
    data = {
        "tunnel": {
            "enabled": True,
            "node": "site1",
            "peers": [
                {
                    "name": "hub",
                    "paths": [
                        {"name": "leased", "address": "10.0.0.1", "priority": 10, "rate_kbps": 2000},
                        {"name": "satellite", "address": "10.1.0.1", "priority": 20},
                    ],
                }
            ],
            "routes": [{"destination": "*", "via": "hub"}],
            "forwards": [{"name": "sip", "listen": "127.0.0.1:5070", "peer": "hq", "service": "pbx"}],
        }
    }
    config = parse_config(data).tunnel
    assert config.peers[0].paths[1].priority == 20 and config.route_map() == {"*": "hub"}
    data["tunnel"]["peers"][0]["paths"][0]["address"] = "not-an-ip"  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"tunnel.peers\[0\].paths\[0\].address"):
        parse_config(data)
    with pytest.raises(ConfigError, match="routes"):
        parse_config({"tunnel": {"routes": [{"destination": "*", "via": "nobody"}]}})
    with pytest.raises(ConfigError, match="dial"):
        parse_config({"tunnel": {"peers": [{"name": "hub", "paths": [{"name": "p"}]}]}})
