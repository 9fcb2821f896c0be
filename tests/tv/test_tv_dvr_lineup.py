"""DVR configuration, catch-up attributes in the M3U and availability marks in the guide."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.configschema import ConfigError
from media.tv.epg import parse_xmltv
from media.tv.m3u import Archive, render_m3u
from tests.support.gateway import seabridge

REPO = Path(__file__).resolve().parents[2]


def tv(**extra: object) -> dict[str, object]:
    channel = {"number": 1, "name": "CCTV-1", "sources": ["udp://239.1.1.1:5000"], "tenants": ["acme"], "record": True}
    return {"tv": {"channels": [channel], **extra}}


def test_dvr_defaults_and_per_channel_overrides() -> None:
    config = parse_config(tv(dvr={"window_hours": 8, "max_gb": 5}))
    ch = config.tv.channels[0]
    assert ch.record and config.tv.pulled_always(ch)
    assert config.tv.dvr_seconds(ch) == 8 * 3600 and config.tv.dvr_max_bytes(ch) == 5_000_000_000
    assert config.tv.dvr.timeshift_hours is None  # the tenant's offset from the site
    assert config.tv.dvr.min_free_bytes == 1_024_000_000
    override = parse_config(
        {"tv": {"channels": [{**tv()["tv"]["channels"][0], "dvr_hours": 2.5, "dvr_max_gb": 0.5}]}}  # type: ignore[index]
    )
    ch = override.tv.channels[0]
    assert override.tv.dvr_seconds(ch) == 9000 and override.tv.dvr_max_bytes(ch) == 500_000_000


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"dvr": {"timeshift_hours": [9], "window_hours": 8}}, "tv.dvr.timeshift_hours"),
        ({"dvr": {"timeshift_hours": [7, 7]}}, "tv.dvr.timeshift_hours"),
        ({"dvr": {"window_hours": 0}}, "tv.dvr.window_hours"),
        ({"dvr": {"min_free_mb": -1}}, "tv.dvr.min_free_mb"),
        ({"dvr": {"keep": 1}}, "tv.dvr.keep"),
        ({"site_timezone": "Africa/Atlantis"}, "tv.site_timezone"),
        ({"dvr": {"window_hours": 0.001}, "max_segment_s": 4.0}, "tv.channels"),
    ],
)
def test_bad_dvr_settings_name_the_key(extra: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(tv(**extra))
    assert info.value.key == key


def test_example_lineup_records_with_a_site_zone() -> None:
    config = load_config(REPO / "config" / "channels.example.toml")
    assert config.tv.site_timezone == "Africa/Kinshasa"
    assert any(ch.record for ch in config.tv.channels)


def test_m3u_catchup_attributes_and_time_shifted_entries() -> None:
    config = parse_config(tv())
    ch = config.tv.channels[0]
    root = "http://gw:8088/iptv/TOKEN/"
    archive = Archive(8 * 3600, root + "ch/1/dvr/{utc}-{utcend}.m3u8", (7 * 3600, 1800))
    text = render_m3u(
        [ch],
        root + "ch/{number}/index.m3u8",
        root + "epg.xml",
        {1: archive},
        root + "ch/{number}/dvr/shift-{seconds}.m3u8",
    )
    lines = text.splitlines()
    assert lines[1] == (
        '#EXTINF:-1 tvg-name="CCTV-1" tvg-chno="1" catchup="default" catchup-days="1" '
        'catchup-source="http://gw:8088/iptv/TOKEN/ch/1/dvr/{utc}-{utcend}.m3u8",CCTV-1'
    )
    assert lines[2] == root + "ch/1/index.m3u8"
    assert lines[3] == '#EXTINF:-1 tvg-name="CCTV-1 (+7h)" tvg-shift="7",CCTV-1 (+7h)'
    assert lines[4] == root + "ch/1/dvr/shift-25200.m3u8"
    assert lines[5] == '#EXTINF:-1 tvg-name="CCTV-1 (+30m)" tvg-shift="0.5",CCTV-1 (+30m)'
    assert Archive(3 * 86400 + 1, "").days == 4


GUIDE = b"""<?xml version="1.0" encoding="UTF-8"?>
<tv><channel id="c1"><display-name>C1</display-name></channel>
<programme start="20261126100000 +0000" stop="20261126110000 +0000" channel="c1" catchup-id="hq-archive-7">
<title>News</title></programme>
<programme start="20261126110000 +0000" stop="20261126120000 +0000" channel="c1"><title>Drama</title></programme>
</tv>"""


def test_guide_marks_the_programmes_that_play_from_the_start() -> None:
    guide = parse_xmltv(GUIDE)
    plain = guide.filtered_xml(["c1"]).decode()
    assert "catchup-id" not in plain  # the head-end's own archive ids are not ours

    def mark(p: object) -> str | None:
        title = getattr(p, "title", "")
        return f"{int(p.start)}-{int(p.stop)}" if title == "News" else None  # type: ignore[attr-defined]

    marked = parse_xmltv(guide.filtered_xml(["c1"], mark))
    body = guide.filtered_xml(["c1"], mark).decode()
    assert 'catchup-id="1795687200-1795690800"' in body
    assert body.count("catchup-id") == 1
    assert [p.title for p in marked.programmes["c1"]] == ["News", "Drama"]


def test_tv_channels_shows_the_recording_and_each_tenants_shift(tmp_path: Path) -> None:
    cfg = tmp_path / "site.toml"
    cfg.write_text(
        f"""data_dir = "{tmp_path}"
[[tenants]]
domain = "acme"
timezone = "Asia/Shanghai"
[[tenants]]
domain = "globex"
timezone = "Asia/Dubai"
[tv]
enabled = true
site_timezone = "Africa/Lubumbashi"
[[tv.channels]]
number = 1
name = "CCTV-1"
sources = ["udp://239.1.1.1:5000"]
tenants = ["*"]
record = true
[[tv.channels]]
number = 2
name = "CCTV-2"
sources = ["udp://239.1.1.2:5000"]
tenants = ["acme"]
"""
    )
    out = seabridge("tv", "channels", config=cfg)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    # Lubumbashi is UTC+2: Beijing is 6 hours ahead, Dubai 2.
    assert "recorded" in rows["1"] and "8h +2h +6h" in rows["1"]
    assert "on demand" in rows["2"] and " - " in rows["2"]
    acme = seabridge("tv", "channels", "--tenant", "acme", config=cfg).stdout
    assert "8h +6h" in acme and "+2h" not in acme
