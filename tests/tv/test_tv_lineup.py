"""Lineup configuration, the M3U channel list and the XMLTV guide."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.configschema import ConfigError
from media.tv.config import parse_source
from media.tv.epg import GuideError, parse_xmltv, parse_xmltv_time
from media.tv.m3u import render_m3u

REPO = Path(__file__).resolve().parents[2]

GUIDE = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE tv SYSTEM "xmltv.dtd">
<tv generator-info-name="head-end">
  <channel id="cctv1.cn"><display-name>CCTV-1</display-name><icon src="http://logo/1.png"/></channel>
  <channel id="cctv13.cn"><display-name>CCTV-13</display-name></channel>
  <channel id="secret.cn"><display-name>Other tenant</display-name></channel>
  <programme start="20261126190000 +0800" stop="20261126193000 +0800" channel="cctv1.cn">
    <title lang="zh">Xinwen Lianbo</title><desc>Evening news</desc></programme>
  <programme start="20261126180000 +0800" stop="20261126190000 +0800" channel="cctv1.cn">
    <title>Before</title></programme>
  <programme start="20261126193000 +0800" channel="cctv1.cn"><title>Weather</title></programme>
  <programme start="20261126200000 +0800" stop="20261126210000 +0800" channel="cctv1.cn">
    <title>Drama &amp; more</title></programme>
  <programme start="20261126190000 +0800" stop="20261126200000 +0800" channel="secret.cn">
    <title>Not for acme</title></programme>
</tv>
"""


def lineup(**tv: object) -> dict[str, object]:
    base = {
        "enabled": True,
        "channels": [
            {
                "number": 1,
                "name": "CCTV-1",
                "sources": ["udp://239.1.1.1:5000"],
                "tenants": ["acme"],
                "epg_id": "cctv1.cn",
                "group": "News",
                "logo": "http://logo/1.png",
            },
            {
                "number": 13,
                "name": 'CCTV-13 "News"',
                "sources": ["http://hq/13.ts"],
                "tenants": ["*"],
                "epg_id": "cctv13.cn",
            },
            {
                "number": 99,
                "name": "Globex only",
                "sources": ["http://hq/99/index.m3u8"],
                "tenants": ["globex"],
                "epg_id": "secret.cn",
            },
        ],
    }
    base.update(tv)
    return {"tv": base}


def test_example_lineup_loads() -> None:
    config = load_config(REPO / "config" / "channels.example.toml")
    assert config.tv.enabled and len(config.tv.channels) >= 3
    kinds = {s.kind for ch in config.tv.channels for s in ch.source_specs}
    assert kinds == {"udp", "http", "hls"}
    assert tomllib.loads((REPO / "config" / "channels.example.toml").read_text())["tv"]["channels"]


@pytest.mark.parametrize(
    ("tv", "key"),
    [
        ({"channels": [{"number": 1, "name": "a", "sources": [], "tenants": []}]}, "tv.channels[0].sources"),
        (
            {"channels": [{"number": 1, "name": "a", "sources": ["udp://nohost"], "tenants": []}]},
            "tv.channels[0].sources[0]",
        ),
        (
            {"channels": [{"number": 1, "name": "a", "sources": ["udp://1.2.3.4:5"], "tenants": ["a b"]}]},
            "tv.channels[0].tenants[0]",
        ),
        ({"always_on": [5]}, "tv.always_on"),
        ({"segment_s": 5.0, "max_segment_s": 4.0}, "tv.max_segment_s"),
        (
            {
                "channels": [
                    {
                        "number": 1,
                        "name": "a",
                        "sources": ["udp://1.2.3.4:5"],
                        "tenants": [],
                        "profile": "nope",
                    }
                ]
            },
            "tv.channels",
        ),
        ({"profiles": {"sat": {"width": 641, "height": 360, "video_kbps": 600}}}, "tv.profiles.sat"),
        ({"idle_timout_s": 3}, "tv.idle_timout_s"),
    ],
)
def test_bad_lineup_names_the_key(tv: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"tv": tv})
    assert info.value.key == key


def test_source_urls() -> None:
    s = parse_source("udp://239.1.1.1:5000?iface=eth1")
    assert (s.kind, s.host, s.port, s.iface, s.multicast) == ("udp", "239.1.1.1", 5000, "eth1", True)
    assert parse_source("udp://@:1234").host == "" and parse_source("rtp://@10.0.0.1:1234").host == "10.0.0.1"
    assert parse_source("rtp://232.1.1.1:5004?source=10.9.9.9").source_addr == "10.9.9.9"
    assert parse_source("http://hq/ch.ts").kind == "http"
    assert parse_source("https://hq/live/index.m3u8").kind == "hls"
    assert parse_source("hls+http://hq/live?id=3").url == "http://hq/live?id=3"
    assert parse_source("http://user:pw@hq:8080/a.ts").describe() == "http://hq:8080/a.ts"
    with pytest.raises(ValueError):
        parse_source("udp://239.1.1.1:5000?ttl=3")


def test_m3u_lists_only_what_it_is_given_with_tvg_attributes() -> None:
    config = parse_config(lineup())
    allowed = [ch for ch in config.tv.channels if ch.allows("acme")]
    text = render_m3u(allowed, "http://gw/iptv/TOK/ch/{number}/index.m3u8", "http://gw/iptv/TOK/epg.xml")
    lines = text.splitlines()
    assert lines[0] == '#EXTM3U x-tvg-url="http://gw/iptv/TOK/epg.xml" url-tvg="http://gw/iptv/TOK/epg.xml"'
    assert lines[1] == (
        '#EXTINF:-1 tvg-id="cctv1.cn" tvg-name="CCTV-1" tvg-logo="http://logo/1.png" '
        'tvg-chno="1" group-title="News",CCTV-1'
    )
    assert lines[2] == "http://gw/iptv/TOK/ch/1/index.m3u8"
    assert "tvg-name=\"CCTV-13 'News'\"" in lines[3]
    assert "Globex" not in text and len(lines) == 5


def test_guide_filters_to_lineup_and_finds_now_next() -> None:
    guide = parse_xmltv(GUIDE)
    xml = guide.filtered_xml(["cctv1.cn", "cctv13.cn"])
    assert b"secret.cn" not in xml and b"Not for acme" not in xml
    reparsed = parse_xmltv(xml)
    assert set(reparsed.channels) == {"cctv1.cn", "cctv13.cn"}
    assert [p.title for p in reparsed.programmes["cctv1.cn"]] == [
        "Before",
        "Xinwen Lianbo",
        "Weather",
        "Drama & more",
    ]
    at = parse_xmltv_time("20261126191500 +0800")
    now, nxt = guide.now_next("cctv1.cn", at)
    assert now is not None and nxt is not None
    assert (now.title, now.description, nxt.title) == ("Xinwen Lianbo", "Evening news", "Weather")
    weather = guide.programmes["cctv1.cn"][2]
    assert weather.stop == parse_xmltv_time("20261126200000 +0800")  # open end filled in
    assert parse_xmltv_time("20261126110000") == parse_xmltv_time("20261126190000 +0800")


def test_guide_errors() -> None:
    with pytest.raises(GuideError):
        parse_xmltv(b"<html></html>")
    with pytest.raises(GuideError):
        parse_xmltv(b"<tv><channel")
