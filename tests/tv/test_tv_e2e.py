"""The TV service end to end, against real peers: ffmpeg test channels (multicast in a
network namespace, UDP unicast, HLS), ffprobe and VLC as set-top boxes, aiohttp clients."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import make_ts
from prometheus_client import generate_latest
from tv_gateway import FAST, GROUP, Gateway, StreamReader, channel, get_segments, refused, save
from tv_peers import (
    AUDIO_FRAME,
    FRAME,
    HlsOrigin,
    MulticastNamespace,
    SplicedSender,
    ffprobe,
    timeline_problems,
    udp_sender,
    vlc_play,
    wait_until,
)

from media.tv.tokens import issue
from media.tv.ts import PACKET_SIZE
from tests.support.ports import free_port

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]


# -- tests --------------------------------------------------------------------------------------


async def test_multicast_channel_as_hls_and_http_ts(
    gateway: Callable[..., Awaitable[Gateway]], multicast: tuple[MulticastNamespace, int], tmp_path: Path
) -> None:
    ns, port = multicast
    # No failover is tested here: a CPU hiccup of the shared 2-core box must not fail the
    # source over mid-test (FAST's 1.5 s did once), since the restart's gap is what the
    # timeline checks below would then report.
    gw = await gateway([channel(1, f"udp://{GROUP}:{port}?iface={ns.host_if}")], stall_s=5.0)
    token = gw.token()
    started = time.monotonic()
    names, durations, body = await get_segments(gw, token, 1, 4)
    print(f"\nmulticast channel: 4 segments listed after {time.monotonic() - started:.1f} s")

    probe = ffprobe(save(tmp_path, "hls.ts", body))
    assert probe.codecs == {"video": "h264", "audio": "aac"}
    assert (probe.width, probe.height) == (320, 240)
    assert probe.continuity_errors == []
    assert timeline_problems(probe) == []
    video = probe.packets["video"]
    span = (int(video[-1]["dts"]) - int(video[0]["dts"]) + FRAME) / 90000
    assert math.isclose(span, sum(durations), abs_tol=FRAME / 90000), (span, durations)
    assert all(0.9 < d <= 2.05 for d in durations)
    # Every segment stands alone: it starts with a keyframe.
    for name in names:
        async with gw.client.get(gw.url(token, f"ch/1/{name}")) as r:
            single = ffprobe(save(tmp_path, name, await r.read()))
        assert single.packets["video"][0]["flags"].startswith("K"), name

    # The same channel as HTTP-TS, from the same ingest.
    viewer = StreamReader(gw, gw.url(token, "ch/1.ts"))
    await wait_until(lambda: len(viewer.data) > 300_000, 30, "HTTP-TS data")
    await viewer.close()
    stream = ffprobe(save(tmp_path, "stream.ts", bytes(viewer.data)))
    assert stream.codecs == {"video": "h264", "audio": "aac"}
    assert stream.continuity_errors == [] and timeline_problems(stream) == []
    assert stream.packets["video"][0]["flags"].startswith("K")  # starts on a picture, not mid-GOP
    status = gw.service.status()["channels"][0]
    assert status["source"].startswith(f"udp://{GROUP}") and status["video"] == "h264"
    assert status["bytes_in"] > 0 and status["bytes_out"] >= len(body) + len(viewer.data)


async def test_vlc_plays_both_outputs_without_discontinuity(
    gateway: Callable[..., Awaitable[Gateway]], multicast: tuple[MulticastNamespace, int]
) -> None:
    ns, port = multicast
    # As above: no failover here, so a CPU hiccup must not cause one (its gap is a discontinuity).
    gw = await gateway([channel(1, f"udp://{GROUP}:{port}?iface={ns.host_if}")], stall_s=5.0)
    token = gw.token()
    for path in ("ch/1.ts", "ch/1/index.m3u8"):
        log = await asyncio.to_thread(vlc_play, gw.url(token, path), 5)
        assert 'using video decoder module "avcodec"' in log, log[-3000:]
        assert "codec (h264) started" in log
        discontinuities = [line for line in log.splitlines() if "discontinu" in line.lower()]
        assert discontinuities == [], discontinuities
        assert "Broken stream" not in log  # e.g. audio timed later than the PCR allows


async def test_five_viewers_one_source_connection_none_after_idle(
    gateway: Callable[..., Awaitable[Gateway]], hls_origin: HlsOrigin, tmp_path: Path
) -> None:
    gw = await gateway([channel(2, hls_origin.url)])
    token = gw.token()
    before = hls_origin.server.total if hls_origin.server else 0
    viewers = [StreamReader(gw, gw.url(token, "ch/2.ts")) for _ in range(5)]
    await wait_until(lambda: all(len(v.data) > 200_000 for v in viewers), 40, "five viewers fed")
    _, _, body = await get_segments(gw, token, 2, 3)  # an HLS viewer too
    assert hls_origin.server is not None
    assert hls_origin.server.total - before == 1, "the origin saw more than one connection"
    assert hls_origin.server.open == 1
    async with gw.client.get(f"http://127.0.0.1:{gw.port}/api/tv/status") as r:
        status = (await r.json())["channels"][0]
    assert status["http_ts_viewers"] == 5 and status["viewers"] == 6
    metrics = generate_latest(gw.registry).decode()
    assert 'seabridge_tv_viewers{channel="2",name="Test 2"} 6.0' in metrics
    assert 'seabridge_tv_http_ts_viewers{channel="2",name="Test 2"} 5.0' in metrics
    assert 'seabridge_tv_bytes_in_total{channel="2",name="Test 2"}' in metrics
    for i, v in enumerate(viewers):
        probe = ffprobe(save(tmp_path, f"viewer{i}.ts", bytes(v.data)))
        assert probe.codecs == {"video": "h264", "audio": "aac"} and probe.continuity_errors == []
    assert ffprobe(save(tmp_path, "hls.ts", body)).codecs == {"video": "h264", "audio": "aac"}
    for v in viewers:
        await v.close()
    await wait_until(lambda: gw.service.channels[2].state == "stopped", 20, "the idle channel to stop")
    await wait_until(lambda: hls_origin.server is not None and hls_origin.server.open == 0, 10, "origin idle")
    assert hls_origin.server.total - before == 1


async def test_failover_mid_playback_and_back_without_restarting_the_player(
    gateway: Callable[..., Awaitable[Gateway]], hls_origin: HlsOrigin, tmp_path: Path
) -> None:
    port = free_port()
    primary = udp_sender(port).start()
    try:
        gw = await gateway([channel(3, f"udp://127.0.0.1:{port}", hls_origin.url)])
        token = gw.token()
        ch = gw.service.channels[3]
        viewer = StreamReader(gw, gw.url(token, "ch/3.ts"))
        await wait_until(lambda: len(viewer.data) > 150_000, 30, "primary playing")
        assert ch.active_source == 0
        primary.stop()
        cut = time.monotonic()
        await wait_until(lambda: ch.active_source == 1, 20, "failover to the HLS backup")
        print(f"\nfailover after {time.monotonic() - cut:.2f} s (stall_s={FAST['stall_s']})")
        mark = len(viewer.data)
        await wait_until(lambda: len(viewer.data) > mark + 150_000, 30, "backup playing")
        primary = udp_sender(port).start()
        await wait_until(lambda: ch.active_source == 0, 30, "return to the primary")
        mark = len(viewer.data)
        await wait_until(lambda: len(viewer.data) > mark + 150_000, 30, "primary playing again")
        assert not viewer.ended.is_set(), "the player's stream was cut"
        await viewer.close()
        assert ch.stats.switches == 2
        probe = ffprobe(save(tmp_path, "failover.ts", bytes(viewer.data)))
        assert probe.continuity_errors == []
        # Pictures stay continuous. Remuxing cannot invent the audio a dead source never
        # sent: at each switch the sound may pause briefly (lip sync is kept).
        problems = timeline_problems(probe, audio_gap=FRAME + AUDIO_FRAME)
        assert not [p for p in problems if p.startswith("video") or "back" in p], problems
        assert len(problems) <= 2 and all(float(p.split()[-2]) < 500 for p in problems), problems
        assert (
            'seabridge_tv_source_switches_total{channel="3",name="Test 3"} 2.0' in generate_latest(gw.registry).decode()
        )
    finally:
        primary.stop()


async def test_timestamp_jumps_and_wrap_in_the_source_stay_monotonic(
    gateway: Callable[..., Awaitable[Gateway]], tmp_path: Path
) -> None:
    # Three feeds spliced back to back, each with its own clock: the first crosses the 33-bit
    # PTS wrap (26.5 h), the second jumps 20000 s ahead, the third goes back to the start.
    files = [
        make_ts(tmp_path / "wrap.ts", seconds=3.5, size="320x240", extra=("-output_ts_offset", "95441")),
        make_ts(tmp_path / "ahead.ts", seconds=2, size="320x240", extra=("-output_ts_offset", "20000")),
        make_ts(tmp_path / "back.ts", seconds=2, size="320x240"),
    ]
    port = free_port()
    gw = await gateway([channel(4, f"udp://127.0.0.1:{port}")], stall_s=5.0)
    token = gw.token()
    viewer = StreamReader(gw, gw.url(token, "ch/4.ts"))
    await wait_until(lambda: gw.service.channels[4].running, 10, "channel start")
    sender = SplicedSender(files, port).start()
    try:
        await asyncio.to_thread(sender.done.wait, 30)
        mark = len(viewer.data)
        await wait_until(lambda: len(viewer.data) > mark, 5, "the tail of the last feed")
        names, durations, body = await get_segments(gw, token, 4, 4)
    finally:
        sender.stop()
        await viewer.close()
    for name, data in (("stream", bytes(viewer.data)), ("segments", body)):
        probe = ffprobe(save(tmp_path, f"{name}-out.ts", data))
        assert probe.codecs == {"video": "h264", "audio": "aac"}, name
        assert probe.continuity_errors == [], name
        assert timeline_problems(probe, audio_gap=FRAME + AUDIO_FRAME) == [], name
    # The output clock moved by what was played, not by the feed's jumps.
    video = ffprobe(tmp_path / "stream-out.ts").packets["video"]
    played = (int(video[-1]["dts"]) - int(video[0]["dts"])) / 90000
    assert 5.0 < played < 8.0, played
    assert gw.service.channels[4].stats.switches == 0


async def test_encoder_restart_keeps_the_stream_going(
    gateway: Callable[..., Awaitable[Gateway]], tmp_path: Path
) -> None:
    port = free_port()
    gw = await gateway([channel(8, f"udp://127.0.0.1:{port}")], stall_s=5.0)
    token = gw.token()
    with udp_sender(port):
        viewer = StreamReader(gw, gw.url(token, "ch/8.ts"))
        await wait_until(lambda: len(viewer.data) > 150_000, 30, "first encoder run")
    mark = len(viewer.data)
    with udp_sender(port):  # the head-end's encoder restarts: its clock starts over
        await wait_until(lambda: len(viewer.data) > mark + 150_000, 30, "second encoder run")
    assert not viewer.ended.is_set(), "the player's stream was cut"
    await viewer.close()
    probe = ffprobe(save(tmp_path, "restart.ts", bytes(viewer.data)))
    assert probe.continuity_errors == []
    # A killed encoder takes its last fraction of a second of sound with it: the audio may
    # pause once; pictures stay continuous and nothing goes backwards.
    problems = timeline_problems(probe, audio_gap=FRAME + AUDIO_FRAME)
    assert not [p for p in problems if p.startswith("video") or "back" in p], problems
    assert len(problems) <= 1 and all(float(p.split()[-2]) < 500 for p in problems), problems


async def test_tokens_and_tenants(
    gateway: Callable[..., Awaitable[Gateway]], hls_origin: HlsOrigin, tmp_path: Path
) -> None:
    guide = tmp_path / "guide.xml"
    guide.write_text(
        '<?xml version="1.0"?><tv><channel id="a.cn"><display-name>A</display-name></channel>'
        '<channel id="g.cn"><display-name>G</display-name></channel>'
        '<programme start="20000101000000 +0000" stop="20991231000000 +0000" channel="a.cn">'
        "<title>Live A</title></programme>"
        '<programme start="20000101000000 +0000" stop="20991231000000 +0000" channel="g.cn">'
        "<title>Globex only</title></programme></tv>"
    )
    gw = await gateway(
        [
            channel(5, hls_origin.url, epg_id="a.cn", group="News", logo="http://logo/a.png"),
            channel(6, hls_origin.url, tenants=("globex",), epg_id="g.cn"),
        ],
        epg_source=str(guide),
    )
    token = gw.token("acme")

    async def status(url: str) -> int:
        async with gw.client.get(url) as r:
            await r.read()
            return r.status

    # The tenant's lists show only its channels.
    async with gw.client.get(gw.url(token, "playlist.m3u")) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("audio/x-mpegurl")
        m3u = await r.text()
    assert 'tvg-id="a.cn" tvg-name="Test 5" tvg-logo="http://logo/a.png" tvg-chno="5" group-title="News"' in m3u
    assert gw.url(token, "ch/5/index.m3u8") in m3u and "Test 6" not in m3u
    async with gw.client.get(gw.url(token, "playlist-ts.m3u")) as r:
        assert gw.url(token, "ch/5.ts") in await r.text()
    async with gw.client.get(gw.url(token, "epg.xml")) as r:
        epg = await r.text()
    assert "Live A" in epg and "Globex only" not in epg and "g.cn" not in epg
    async with gw.client.get(gw.url(token, "channels.json")) as r:
        listing = await r.json()
    assert [c["number"] for c in listing["channels"]] == [5]
    assert listing["channels"][0]["now"]["title"] == "Live A"

    # Refused: another tenant's channel, a wrong, a forged, an expired token.
    assert await status(gw.url(token, "ch/6/index.m3u8")) == 403
    assert await status(gw.url(token, "ch/6.ts")) == 403
    assert await status(gw.url(token, "ch/99/index.m3u8")) == 404
    assert await status(gw.url("not-a-token", "playlist.m3u")) == 403
    assert await status(gw.url(token[:-3] + "AAA", "playlist.m3u")) == 403
    forged = issue(b"x" * 32, "acme", int(time.time()) + 3600)
    assert await status(gw.url(forged, "ch/5/index.m3u8")) == 403
    expired = issue(gw.service.tokens.secret(), "acme", int(time.time()) - 1)
    assert await status(gw.url(expired, "epg.xml")) == 403

    # Revoked from the command line (another process): playback stops within a segment.
    _, _, _ = await get_segments(gw, token, 5, 2)
    viewer = StreamReader(gw, gw.url(token, "ch/5.ts"))
    await wait_until(lambda: len(viewer.data) > 50_000, 30, "stream playing")
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{tmp_path}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    revoked = time.monotonic()
    cli = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "gateway.cli", "tv", "token", "revoke", token, "-c", str(config)],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    await asyncio.wait_for(viewer.ended.wait(), FAST["max_segment_s"] + 2)
    print(f"\nHTTP-TS stream cut {time.monotonic() - revoked:.2f} s after the revoke command")
    await wait_until(lambda: refused(gw.service, token), FAST["max_segment_s"], "revocation")
    assert await status(gw.url(token, "ch/5/index.m3u8")) == 403
    assert await status(gw.url(token, "playlist.m3u")) == 403
    other = gw.token("acme")
    assert await status(gw.url(other, "playlist.m3u")) == 200


async def test_transcode_profile_resizes_and_reports_cpu(
    gateway: Callable[..., Awaitable[Gateway]], hls_origin: HlsOrigin, tmp_path: Path
) -> None:
    profile = {
        "width": 160,
        "height": 120,
        "video_kbps": 150,
        "audio_kbps": 48,
        "preset": "ultrafast",
        "gop_s": 1.0,
    }
    gw = await gateway([channel(7, hls_origin.url, profile="thin")], profiles={"thin": profile})
    token = gw.token()
    _, durations, body = await get_segments(gw, token, 7, 3)
    probe = ffprobe(save(tmp_path, "thin.ts", body))
    assert probe.codecs == {"video": "h264", "audio": "aac"}
    assert (probe.width, probe.height) == (160, 120)
    assert probe.continuity_errors == [] and timeline_problems(probe, audio_gap=AUDIO_FRAME + FRAME) == []
    seconds = sum(durations)
    kbits = len(body) * 8 / 1000 / seconds
    await wait_until(lambda: gw.service.channels[7].stats.cpu_percent > 0, 10, "a CPU sample")
    status = gw.service.status()["channels"][0]
    print(f"\ntranscode 320x240 -> 160x120: {kbits:.0f} kbit/s, ingest CPU {status['cpu_percent']:.1f}% of a core")
    assert status["transcode"] == "thin" and status["resolution"] == "320x240"
    assert kbits < 400  # the 400 kbit/s source now fits a thinner link


async def test_feed_without_keyframes_still_plays_out(
    gateway: Callable[..., Awaitable[Gateway]], tmp_path: Path
) -> None:
    """Joining a feed whose next keyframe is minutes away: start anyway, cut at the maximum."""
    whole = make_ts(tmp_path / "longgop.ts", seconds=12, gop=100000, size="320x240").read_bytes()
    cut = len(whole) // 8 // PACKET_SIZE * PACKET_SIZE  # join after the only keyframe
    (tmp_path / "nokey-in.ts").write_bytes(whole[cut:])
    port = free_port()
    gw = await gateway([channel(10, f"udp://127.0.0.1:{port}")], keyframe_wait_s=1.0)
    token = gw.token()
    sender = SplicedSender([tmp_path / "nokey-in.ts"], port).start()
    try:
        names, durations, body = await get_segments(gw, token, 10, 3)
    finally:
        sender.stop()
    assert all(1.9 <= d <= 2.05 for d in durations), durations  # cut at max_segment_s
    probe = ffprobe(save(tmp_path, "nokey.ts", body))
    assert probe.codecs["video"] == "h264" and probe.continuity_errors == []
    assert timeline_problems(probe, audio_gap=FRAME + AUDIO_FRAME) == []
    assert not any(p["flags"].startswith("K") for p in probe.packets["video"])
