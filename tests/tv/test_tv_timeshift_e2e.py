"""Time-shift and catch-up end to end: a live channel whose pictures show the wall-clock time
(multicast in a network namespace), recorded by the gateway, watched N seconds late and from a
programme's start, through aiohttp, ffprobe and VLC."""

from __future__ import annotations

import asyncio
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from tv_gateway import FAST, Gateway, StreamReader, channel, save
from tv_peers import clock_times, ffprobe, timeline_problems, vlc_play, wait_until

from media.tv.recorder import Recorder

pytestmark = pytest.mark.peers

SHIFT = 8  # seconds behind live (hours at a real site)
CAP = 600_000  # bytes: channel 2's DVR cap, reached in about ten seconds
SEG = FAST["max_segment_s"]


def xmltv_time(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%S +0000", time.gmtime(epoch))


def guide(path: Path, t0: int) -> Path:
    """Programmes on the clock channel around the test's start ``t0``."""
    items = [
        ("Before the recording", t0 - 3600, t0 + 4),
        ("Evening news", t0 + 4, t0 + 10),
        ("Drama", t0 + 10, t0 + 4000),
        ("Tomorrow", t0 + 4000, t0 + 8000),
    ]
    programmes = "".join(
        f'<programme start="{xmltv_time(a)}" stop="{xmltv_time(b)}" channel="clock.cn"><title>{t}</title></programme>'
        for t, a, b in items
    )
    path.write_text(f'<tv><channel id="clock.cn"><display-name>Clock</display-name></channel>{programmes}</tv>')
    return path


def segment_names(playlist: str) -> list[str]:
    return [line for line in playlist.splitlines() if line and not line.startswith("#")]


async def fetch(gw: Gateway, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with gw.client.get(url) as r:
        return r.status, await r.read(), dict(r.headers)


async def fetch_segments(gw: Gateway, base: str, names: list[str]) -> bytes:
    body = b""
    for name in names:
        status, data, headers = await fetch(gw, base + name)
        assert status == 200 and headers["Content-Type"] == "video/mp2t", name
        body += data
    return body


async def watch_cap(directory: Path, cap: int, samples: list[int], stop: asyncio.Event) -> None:
    """Sample the bytes of recorded segments on disk while the test runs."""

    def size() -> int:
        total = 0
        for p in directory.glob("*.ts"):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    while not stop.is_set():
        samples.append(await asyncio.to_thread(size))
        await asyncio.sleep(0.1)  # a sampling period, not a wait for an event


async def test_timeshift_and_catchup_show_the_right_time(
    gateway: Callable[..., Awaitable[Gateway]], clock_channel: str, tmp_path: Path
) -> None:
    t0 = int(time.time())
    epg = guide(tmp_path / "guide.xml", t0)
    channels = [
        channel(1, clock_channel, record=True, epg_id="clock.cn"),
        channel(2, clock_channel, record=True, dvr_max_gb=CAP / 1e9),
        channel(3, clock_channel, epg_id="clock.cn"),  # live only
        channel(4, clock_channel, record=True, tenants=("globex",)),
    ]
    settings = {
        "dvr": {"window_hours": 0.05, "timeshift_hours": [SHIFT / 3600], "min_free_mb": 0},
        "epg_source": str(epg),
    }
    gw = await gateway(channels, **settings)
    token, other = gw.token("acme"), gw.token("globex")
    recorder: Recorder = gw.service.recorders[1]
    stop_watch = asyncio.Event()
    samples: list[int] = []
    watcher = asyncio.create_task(watch_cap(gw.service.dvr_dir / "2", CAP, samples, stop_watch))

    # Record past the news and long enough to look SHIFT seconds back.
    await wait_until(
        lambda: (
            (recorder.window.end or 0) > t0 + 11
            and (recorder.window.end or 0) - (recorder.window.start or 0) > SHIFT + 6
        ),
        60,
        "enough recording",
    )
    print(f"\nrecorded {recorder.status()['seconds']} s in {len(recorder.window.segments)} segments")

    # -- the channel list -------------------------------------------------------------------------
    status, body, _ = await fetch(gw, gw.url(token, "playlist.m3u"))
    m3u = body.decode()
    assert status == 200
    source = gw.url(token, "ch/1/dvr/{utc}-{utcend}.m3u8")
    assert f'tvg-chno="1" catchup="default" catchup-days="1" catchup-source="{source}",Test 1' in m3u
    assert (
        f'tvg-name="Test 1 (+{SHIFT}s)" tvg-shift="0.0022",Test 1 (+{SHIFT}s)\n{gw.url(token, f"ch/1/dvr/shift-{SHIFT}.m3u8")}'
        in m3u
    )
    assert "Test 3 (+" not in m3u and "Test 4" not in m3u
    _, body, _ = await fetch(gw, gw.url(token, "playlist-ts.m3u"))
    assert gw.url(token, f"ch/2/dvr/shift-{SHIFT}.ts") in body.decode()

    # -- time-shift: the same channel, SHIFT seconds late -------------------------------------------
    live_status, live, _ = await fetch(gw, gw.url(token, "ch/1/index.m3u8"))
    shift_status, shifted, headers = await fetch(gw, gw.url(token, f"ch/1/dvr/shift-{SHIFT}.m3u8"))
    asked = time.time()
    assert live_status == shift_status == 200 and headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
    shifted_text = shifted.decode()
    assert "#EXT-X-ENDLIST" not in shifted_text and "#EXT-X-PLAYLIST-TYPE" not in shifted_text
    live_last = await fetch_segments(gw, gw.url(token, "ch/1/"), segment_names(live.decode())[-1:])
    shift_names = segment_names(shifted_text)
    shift_body = await fetch_segments(gw, gw.url(token, "ch/1/dvr/"), shift_names)
    shift_last = await fetch_segments(gw, gw.url(token, "ch/1/dvr/"), shift_names[-1:])
    live_time, shift_time = clock_times(live_last)[-1], clock_times(shift_last)[-1]
    print(f"newest picture: live {live_time - asked:+.2f} s, shifted {shift_time - asked:+.2f} s from now")
    assert abs((live_time - shift_time) - SHIFT) <= SEG + 0.3, (live_time, shift_time)
    assert asked - SHIFT - 2 * SEG - 2.0 <= shift_time <= asked - SHIFT
    # Each shifted segment shows the time its EXT-X-PROGRAM-DATE-TIME says (the ingest's lag aside).
    stamps = re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", shifted_text)
    for name, stamp in zip(shift_names, stamps, strict=True):
        _, data, _ = await fetch(gw, gw.url(token, f"ch/1/dvr/{name}"))
        first = clock_times(data)[0]
        pdt = datetime.fromisoformat(stamp).timestamp()
        assert -0.3 <= pdt - first <= 1.5, (name, pdt - first)
    probe = ffprobe(save(tmp_path, "shifted.ts", shift_body))
    assert probe.codecs == {"video": "h264", "audio": "aac"} and probe.continuity_errors == []
    assert timeline_problems(probe) == []

    # The same as HTTP-TS: starts SHIFT seconds back, then keeps coming in real time.
    stream = bytearray()
    opened = time.time()
    async with gw.client.get(gw.url(token, f"ch/2/dvr/shift-{SHIFT}.ts")) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "video/mp2t"
        async with asyncio.timeout(30):
            async for chunk in r.content.iter_any():
                stream += chunk
                if time.time() - opened > 2 * SEG + 1 and len(stream) > 100_000:
                    break
    times = clock_times(bytes(stream))
    print(
        f"HTTP-TS +{SHIFT}s: first picture {times[0] - opened:+.2f} s, last {times[-1] - time.time():+.2f} s from now"
    )
    assert opened - SHIFT - SEG - 2.0 <= times[0] <= opened - SHIFT + 0.2
    assert times[-1] - times[0] >= SEG  # it went on past the first segment
    probe = ffprobe(save(tmp_path, "shifted-stream.ts", bytes(stream)))
    assert probe.continuity_errors == [] and timeline_problems(probe) == []

    # -- catch-up: the news from its start --------------------------------------------------------
    news = f"ch/1/dvr/{t0 + 4}-{t0 + 10}.m3u8"
    # Final (VOD) once the recording has run past the programme's end; until then it grows.
    async with asyncio.timeout(3 * SEG + 10):
        while True:
            status, body, _ = await fetch(gw, gw.url(token, news))
            vod = body.decode()
            assert status == 200, vod
            if "#EXT-X-PLAYLIST-TYPE:VOD" in vod:
                break
            assert "#EXT-X-PLAYLIST-TYPE:EVENT" in vod and "#EXT-X-ENDLIST" not in vod
            await asyncio.sleep(0.2)
    assert vod.endswith("#EXT-X-ENDLIST\n")
    # The programme's start inside the first segment is marked; if it fell in a gap of the
    # recording (segment wall clocks are measured, so gaps of a few ms happen), the playlist
    # begins right after the gap and needs no mark.
    first_pdt = datetime.fromisoformat(re.findall(r"#EXT-X-PROGRAM-DATE-TIME:(\S+)", vod)[0]).timestamp()
    offset = re.search(r"#EXT-X-START:TIME-OFFSET=([0-9.]+),PRECISE=YES", vod)
    if first_pdt < t0 + 4 - 0.001:
        assert offset is not None and abs(float(offset.group(1)) - (t0 + 4 - first_pdt)) <= 0.002, vod
    else:
        assert offset is None and first_pdt - (t0 + 4) < SEG, vod
    programme = await fetch_segments(gw, gw.url(token, "ch/1/dvr/"), segment_names(vod))
    pictures = clock_times(programme)
    print(
        f"catch-up starts {pictures[0] - (t0 + 4):+.2f} s from the programme's start, ends {pictures[-1] - (t0 + 10):+.2f} s"
    )
    assert t0 + 4 - SEG - 1.0 <= pictures[0] <= t0 + 4 + 0.3  # within one segment (and the ingest's lag)
    assert pictures[-1] >= t0 + 10 - 1.0
    probe = ffprobe(save(tmp_path, "news.ts", programme))
    assert probe.continuity_errors == [] and timeline_problems(probe) == []
    status, body, _ = await fetch(gw, gw.url(token, f"ch/1/dvr/{t0 + 10}-{t0 + 4000}.m3u8"))
    assert status == 200 and b"#EXT-X-PLAYLIST-TYPE:EVENT" in body and b"#EXT-X-ENDLIST" not in body
    status, _, _ = await fetch(gw, gw.url(token, f"ch/1/dvr/{t0 - 3600}-{t0 + 4}.m3u8"))
    assert status == 404  # began before the recording
    # "shift" convention: ?utc= on the live URL plays from then on.
    status, body, _ = await fetch(gw, gw.url(token, f"ch/1/index.m3u8?utc={t0 + 4}&lutc={int(time.time())}"))
    assert status == 200 and all(n.startswith("dvr/") for n in segment_names(body.decode()))

    # -- the guide and the page say what can be watched from the start --------------------------------
    _, body, _ = await fetch(gw, gw.url(token, "epg.xml"))
    marks = {p.findtext("title"): p.get("catchup-id") for p in ET.fromstring(body).iter("programme")}
    assert marks == {
        "Before the recording": None,
        "Evening news": f"{t0 + 4}-{t0 + 10}",
        "Drama": f"{t0 + 10}-{t0 + 4000}",
        "Tomorrow": None,
    }
    _, body, _ = await fetch(gw, gw.url(token, "channels.json"))
    listing = {c["number"]: c for c in json.loads(body)["channels"]}
    assert [p["title"] for p in listing[1]["dvr"]["catchup"]] == ["Evening news", "Drama"]
    assert listing[1]["dvr"]["catchup"][0]["hls"] == news
    assert listing[1]["dvr"]["shifts"] == [
        {"seconds": SHIFT, "label": f"+{SHIFT}s", "hls": f"ch/1/dvr/shift-{SHIFT}.m3u8"}
    ]
    assert listing[3]["dvr"] is None

    # -- tokens and tenants ---------------------------------------------------------------------------
    segment = shift_names[0]
    for path in (f"ch/1/dvr/shift-{SHIFT}.m3u8", f"ch/1/dvr/{segment}", news, f"ch/1/dvr/shift-{SHIFT}.ts"):
        assert (await fetch(gw, gw.url(other, path)))[0] == 403, path  # another tenant's recording
        assert (await fetch(gw, gw.url("not-a-token", path)))[0] == 403, path
    assert (await fetch(gw, gw.url(token, "ch/4/dvr/shift-8.m3u8")))[0] == 403
    assert (await fetch(gw, gw.url(other, "ch/4/dvr/shift-8.m3u8")))[0] in (200, 404)  # globex's own
    assert (await fetch(gw, gw.url(token, "ch/3/dvr/shift-8.m3u8")))[0] == 404  # not recorded
    assert (await fetch(gw, gw.url(token, "ch/1/dvr/shift-999999.m3u8")))[0] == 404  # past the window
    assert (await fetch(gw, gw.url(token, "ch/1/dvr/index.jsonl")))[0] == 404  # only recorded segments

    # -- set-top boxes: VLC plays the shifted channel (HLS and HTTP-TS) and the catch-up --------------
    urls = [
        gw.url(token, f"ch/1/dvr/shift-{SHIFT}.m3u8"),
        gw.url(token, f"ch/1/dvr/shift-{SHIFT}.ts"),
        gw.url(token, news),
    ]
    logs = await asyncio.gather(*(asyncio.to_thread(vlc_play, url, 4) for url in urls))
    for url, log in zip(urls, logs, strict=True):
        assert 'using video decoder module "avcodec"' in log, (url, log[-3000:])
        assert "Broken stream" not in log, url

    # -- the cap held all along ---------------------------------------------------------------------
    stop_watch.set()
    await watcher
    capped = gw.service.recorders[2]
    print(f"channel 2: {len(samples)} samples, at most {max(samples)} bytes on disk, cap {CAP}")
    assert max(samples) <= CAP and capped.stats.evicted > 0
    assert capped.window.bytes <= CAP
    metrics = generate_latest(gw.registry).decode()
    assert 'seabridge_tv_dvr_recording{channel="1",name="Test 1"} 1.0' in metrics
    assert re.search(r'seabridge_tv_dvr_segments_removed_total\{channel="2",name="Test 2"\} [1-9]', metrics)

    # -- a revoked token ends a shifted stream within a segment ---------------------------------------
    doomed = gw.token("acme")
    viewer = StreamReader(gw, gw.url(doomed, f"ch/1/dvr/shift-{SHIFT}.ts"))
    await wait_until(lambda: len(viewer.data) > 10_000, 20, "the shifted stream")
    gw.service.revoke(doomed)
    await asyncio.wait_for(viewer.ended.wait(), SEG + 1.5)
    await viewer.close()
    assert (await fetch(gw, gw.url(doomed, f"ch/1/dvr/shift-{SHIFT}.m3u8")))[0] == 403

    # -- a restart keeps the recording ----------------------------------------------------------------
    kept = [s.name for s in recorder.window.segments]
    await gw.service.stop()
    again = await gateway(channels, **settings)
    restored = again.service.recorders[1]
    assert [s.name for s in restored.window.segments][: len(kept)] == kept
    status, body, _ = await fetch(again, again.url(token, news))
    assert status == 200 and segment_names(body.decode()) == segment_names(vod)
