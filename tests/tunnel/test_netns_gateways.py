"""The whole product end to end: a phone call from a site to HQ through a hub, over the tunnel, with failover.

    [site ns]  baresip alice -- seabridge run (site1) ==leased: 75 ms==  [hub ns] seabridge run (hub) == [hq ns]
                                                    ==satellite: 300 ms, 3 % loss each way, 6 Mbit/s==
                                                                         seabridge run (hq) -- baresip ceo

Every program is a real process in its namespace (`ip netns exec`); the gateways know
each other only as tunnel nodes: the site's trunk to HQ and HQ's trunk to the site ride
tunnel flows routed through the hub, and so does the call's RTP. Mid-call the leased line
is cut (nftables), the tunnel moves to the satellite path and the call goes on; the line
comes back and so does the traffic. Media gaps are measured and printed, never asserted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.support.audio import read_wav, tone_present, write_tone
from tests.support.baresip import PhoneAccount
from tests.support.gateway import seabridge

from .gateways import hq_config, install_identity, site_config
from .netns import Topology, sh
from .nsprocs import NsBaresip, NsGateway
from .pkihelp import TestCa

SITE_LEASED, HUB_LEASED = "10.72.1.2", "10.72.1.1"
SITE_SAT, HUB_SAT = "10.72.2.2", "10.72.2.1"
HUB_GROUND, HQ_GROUND = "10.72.3.1", "10.72.3.2"
ALICE_TONE, CEO_TONE = 1000, 1500

SITE_TUNNEL = f"""
[tunnel]
enabled = true
node = "site1"
[[tunnel.peers]]
name = "hub"
[[tunnel.peers.paths]]
name = "leased"
address = "{HUB_LEASED}"
bind = "{SITE_LEASED}"
priority = 10
[[tunnel.peers.paths]]
name = "satellite"
address = "{HUB_SAT}"
bind = "{SITE_SAT}"
priority = 20
rate_kbps = 6000
[[tunnel.routes]]
destination = "*"
via = "hub"
"""

HUB_TUNNEL = """
[tunnel]
enabled = true
node = "hub"
listen = ["0.0.0.0:4500"]
[[tunnel.peers]]
name = "site1"
dial = false
paths = [{ name = "leased", priority = 10 }, { name = "satellite", priority = 20, rate_kbps = 6000 }]
[[tunnel.peers]]
name = "hq"
dial = false
paths = [{ name = "ground" }]
"""

HQ_TUNNEL = f"""
[tunnel]
enabled = true
node = "hq"
[[tunnel.peers]]
name = "hub"
paths = [{{ name = "ground", address = "{HUB_GROUND}" }}]
[[tunnel.routes]]
destination = "*"
via = "hub"
"""


@dataclass
class World:
    topo: Topology
    site: NsGateway
    hub: NsGateway
    hq: NsGateway
    phones: list[NsBaresip] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    async def api(self, gw: NsGateway, path: str) -> Any:
        if gw.netns not in self.tokens:
            self.tokens[gw.netns] = seabridge("token", "create", "--admin", config=gw.config_path).stdout.strip()
        return await gw.api(path, self.tokens[gw.netns])

    async def until(self, gw: NsGateway, path: str, check: Any, within: float = 30.0) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            body = await self.api(gw, path)
            if check(body):
                return body
            if loop.time() > deadline:
                raise AssertionError(f"{gw.netns} {path}: condition not met within {within} s: {body}")
            await asyncio.sleep(0.1)

    async def phone(self, gw: NsGateway, user: str, domain: str, password: str, freq: int) -> NsBaresip:
        folder = gw.folder.parent
        tone = write_tone(folder / f"tone{freq}.wav", freq, 60)
        account = PhoneAccount(user, domain, password, gw.sip_address)
        phone = NsBaresip(user, folder / f"phone-{user}", account, tone, netns=gw.netns)
        self.phones.append(phone)
        await phone.start()
        await phone.wait_registered()
        return phone

    def cut_leased(self) -> None:
        name = self.topo.ifname("sl")
        self.topo.nft(
            "site",
            "table inet cut {\n"
            f' chain o {{ type filter hook output priority 0; oifname "{name}" drop; }}\n'
            f' chain i {{ type filter hook input priority 0; iifname "{name}" drop; }}\n'
            "}\n",
        )

    def restore_leased(self) -> None:
        self.topo.run("site", "nft", "delete", "table", "inet", "cut", check=False)


def build_topology(topo: Topology) -> None:
    for role in ("site", "hub", "hq", "lwan", "swan"):
        topo.add_ns(role)
    topo.veth("site", "sl", "lwan", "la")
    topo.veth("lwan", "lb", "hub", "hl")
    topo.veth("site", "ss", "swan", "sa")
    topo.veth("swan", "sb", "hub", "hs")
    topo.veth("hub", "hh", "hq", "qh")
    topo.address("site", "sl", f"{SITE_LEASED}/24")
    topo.address("hub", "hl", f"{HUB_LEASED}/24")
    topo.address("site", "ss", f"{SITE_SAT}/24")
    topo.address("hub", "hs", f"{HUB_SAT}/24")
    topo.address("hub", "hh", f"{HUB_GROUND}/24")
    topo.address("hq", "qh", f"{HQ_GROUND}/24")
    topo.delay_line("lwan", "la", "lb", 75)
    topo.delay_line("swan", "sa", "sb", 300)
    for role, ifname in (("site", "ss"), ("hub", "hs")):
        name = topo.ifname(ifname)
        topo.nft(
            role,
            "table inet satloss {\n"
            f' chain o {{ type filter hook output priority 0; oifname "{name}" numgen random mod 100 < 3 drop; }}\n'
            "}\n",
        )
        topo.run(role, "tc", "qdisc", "add", "dev", name, "root", "tbf", "rate", "6mbit", "burst", "32kbit",
                 "latency", "400ms")  # fmt: skip


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    topo = Topology(tmp_path)
    gateways: list[NsGateway] = []
    phones: list[NsBaresip] = []
    try:
        build_topology(topo)
        ca = TestCa()
        site = NsGateway(
            tmp_path / "site", extra_config=site_config(SITE_TUNNEL), log_level="info", netns=topo.ns("site")
        )
        hub = NsGateway(tmp_path / "hub", extra_config=HUB_TUNNEL, log_level="info", netns=topo.ns("hub"))
        hq = NsGateway(tmp_path / "hq", extra_config=hq_config(HQ_TUNNEL), log_level="info", netns=topo.ns("hq"))
        gateways += [site, hub, hq]
        for gw, node in ((site, "site1"), (hub, "hub"), (hq, "hq")):
            install_identity(gw, ca, node)
            gw.write_config()
        site.add_user("alice@acme", "kinshasa", "alice-pass-1", number="2001")
        hq.add_user("ceo@hq", "beijing", "ceo-pass-100", number="100")
        hq.add_user("kinshasa@hq", "kinshasa", "site-trunk-pass-9")
        # Let every start finish (or fail) before teardown stops them.
        failed = [r for r in await asyncio.gather(*(gw.start() for gw in gateways), return_exceptions=True) if r]
        if failed:
            raise failed[0]
        world = World(topo, site, hub, hq, phones)
        yield world
    finally:
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)
        await asyncio.gather(*(gw.stop() for gw in gateways), return_exceptions=True)
        topo.close()
        leftovers = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(topo.prefix)]
        assert not leftovers, leftovers


class Sampler:
    """Samples a gateway's bridge counters every few tens of ms: when packets stopped arriving, and for how long."""

    def __init__(self, world: World, gw: NsGateway) -> None:
        self.world, self.gw = world, gw
        self.samples: list[tuple[float, int]] = []  # (time, packets out of the tunnel so far)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            media = (await self.world.api(self.gw, "/api/tunnel"))["media"]
            if media:
                self.samples.append((time.monotonic(), media[0]["from_tunnel"]))
            await asyncio.sleep(0.02)

    async def longest_gap(self) -> float:
        """The longest time without a new packet out of the tunnel (to the resolution of the sampling)."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        last_change, last_count, longest = self.samples[0][0], self.samples[0][1], 0.0
        for at, count in self.samples[1:]:
            if count != last_count:
                longest = max(longest, at - last_change)
                last_change, last_count = at, count
        return longest


def tone_windows(path: Path, freq: float, window_s: float = 0.04) -> list[bool]:
    samples, rate = read_wav(path)
    size = int(window_s * rate)
    out = []
    for start in range(0, len(samples) - size + 1, size):
        win = samples[start : start + size]
        energy = sum(x * x for x in win) / size
        out.append(energy >= 1e-4 and tone_present_in(win, rate, freq, energy))
    return out


def tone_present_in(win: list[float], rate: int, freq: float, energy: float) -> bool:
    from tests.support.audio import goertzel_power

    return goertzel_power(win, rate, freq) / 2 > 0.6 * energy


async def test_site_calls_hq_through_the_hub_and_survives_a_leased_line_cut(world: World) -> None:
    site, hq = world.site, world.hq
    started = time.monotonic()
    trunks = await world.until(
        site, "/api/trunks", lambda b: b["trunks"][0]["registration"] == "registered" and b["trunks"][0]["reachable"]
    )
    print(f"\nsite registered with HQ through the hub {time.monotonic() - started:.1f} s after start: {trunks}")
    alice, ceo = await asyncio.gather(
        world.phone(site, "alice", "acme", "alice-pass-1", ALICE_TONE),
        world.phone(hq, "ceo", "hq", "ceo-pass-100", CEO_TONE),
    )

    dialled = time.monotonic()
    await alice.dial("sip:8100@acme")
    await ceo.wait_event("CALL_INCOMING", timeout=20)
    await ceo.accept()
    await alice.wait_event("CALL_ESTABLISHED", timeout=20)
    answered = time.monotonic()
    print(f"call set up in {answered - dialled:.2f} s (digest challenge and answer through the hub)")
    (stream,) = (await world.until(site, "/api/tunnel", lambda b: b["media"] and b["media"][0]["to_tunnel"] > 0))[
        "media"
    ]
    assert stream["flow"] and stream["peer"] == "hq"

    # The call's own timeline (cut at 4 s, restore at 9 s), not a wait for an event.
    await asyncio.sleep(3.0)
    samplers = {"site hears HQ": Sampler(world, site), "HQ hears the site": Sampler(world, hq)}
    await asyncio.sleep(1.0)
    before = (await world.api(site, "/api/tunnel"))["media"][0]
    world.cut_leased()
    cut_at = time.monotonic() - answered
    on_sat = await world.until(site, "/api/tunnel", lambda b: b["links"]["hub"]["active_path"] == "satellite")
    moved = time.monotonic() - answered - cut_at
    await asyncio.sleep(5.0 - moved)
    mid = on_sat["media"][0]
    world.restore_leased()
    back = await world.until(site, "/api/tunnel", lambda b: b["links"]["hub"]["active_path"] == "leased")
    returned = time.monotonic() - answered - cut_at - 5.0
    await asyncio.sleep(3.0)
    gaps = {who: await sampler.longest_gap() for who, sampler in samplers.items()}
    after = (await world.api(site, "/api/tunnel"))["media"][0]
    hq_side = (await world.api(hq, "/api/tunnel"))["media"][0]
    leased = {p["name"]: p for p in back["links"]["hub"]["paths"]}["leased"]
    await alice.hangup()
    await ceo.wait_event("CALL_CLOSED", timeout=20)
    ended = time.monotonic()

    print(f"leased line cut {cut_at:.1f} s into the call; site saw the satellite path active {moved:.2f} s later")
    print(f"leased line restored; traffic back on it {returned:.2f} s later (hold-down included)")
    print(
        f"site bridge: {after['to_tunnel']} packets into the tunnel, {after['from_tunnel']} out of it;"
        f" HQ bridge: {hq_side['to_tunnel']} in, {hq_side['from_tunnel']} out"
        f" (before the cut {before['to_tunnel']}/{before['from_tunnel']}, at the switch {mid['to_tunnel']}/"
        f"{mid['from_tunnel']})"
    )
    print(f"leased path after restore: rtt {round((leased['srtt'] or 0) * 1000)} ms, up {leased['up']}")
    for phone, freq, who in ((ceo, ALICE_TONE, "HQ hears the site"), (alice, CEO_TONE, "site hears HQ")):
        (recording,) = phone.received_audio()
        windows = tone_windows(recording, freq)
        print(
            f"{who}: media gap at the cut {gaps[who]:.2f} s (bridge counters);"
            f" recording {len(windows) * 0.04:.1f} s for {ended - answered:.1f} s of call,"
            f" {freq} Hz in {sum(windows) * 0.04:.1f} s of it"
        )
        assert tone_present(recording, freq), who

    # Both media flows close with the call; only the trunk's SIP flow stays between the gateways.
    for gw in (site, hq):
        done = await world.until(gw, "/api/tunnel", lambda b: not b["media"])
        assert done["flows"]["local"] == 1, done["flows"]

    # HQ -> site through the hub: the site's trunk knows HQ by the tunnel node its messages come from.
    mark = len(alice.events)
    await ceo.dial("sip:72001@hq")
    await alice.wait_event("CALL_INCOMING", after=mark, timeout=20)
    await alice.accept()
    await ceo.wait_event("CALL_ESTABLISHED", after=mark, timeout=20)
    await world.until(hq, "/api/tunnel", lambda b: b["media"] and b["media"][0]["from_tunnel"] > 50)
    await ceo.hangup()
    await alice.wait_event("CALL_CLOSED", after=mark, timeout=20)
    assert tone_present(alice.received_audio()[-1], CEO_TONE) and tone_present(ceo.received_audio()[-1], ALICE_TONE)
