"""Domestic TV through `seabridge run`: a UDP channel served to the LAN, tokens from the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from tests.support.gateway import GatewayProcess, seabridge
from tests.support.ports import free_port


async def test_a_udp_channel_is_served_to_set_top_boxes_behind_tokens(tmp_path: Path) -> None:
    source_port, tv_port = free_port(), free_port()
    gw = GatewayProcess(
        tmp_path / "gw",
        extra_config=f"""
[tv]
enabled = true
http_bind = "127.0.0.1"
http_port = {tv_port}
always_on = [1]
site_timezone = "Africa/Kinshasa"

[[tv.channels]]
number = 1
name = "CCTV-1"
group = "News"
epg_id = "cctv1.cn"
tenants = ["acme"]
sources = ["udp://127.0.0.1:{source_port}"]
record = true
""",
    )
    gw.write_config()
    feed = await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine=frequency=1000",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-f", "mpegts", f"udp://127.0.0.1:{source_port}?pkt_size=1316",
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await gw.start()
    try:
        created = seabridge("tv", "token", "create", "--tenant", "acme", "--days", "1", config=gw.config_path)
        assert created.returncode == 0, created.stderr
        token = created.stdout.split()[0]
        base = f"http://127.0.0.1:{tv_port}/iptv/{token}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/playlist.m3u") as r:
                playlist = await r.text()
            assert r.status == 200 and 'tvg-id="cctv1.cn"' in playlist and "CCTV-1" in playlist
            # Recorded: catch-up, and Beijing (acme's zone, the default) is 7 hours ahead of Kinshasa.
            assert 'catchup="default"' in playlist
            assert 'tvg-name="CCTV-1 (+7h)" tvg-shift="7"' in playlist
            assert f"{base}/ch/1/dvr/shift-25200.m3u8" in playlist
            async with http.get(f"http://127.0.0.1:{tv_port}/iptv/not-a-token/playlist.m3u") as r:
                assert r.status == 403
            stream = bytearray()
            async with http.get(f"{base}/ch/1.ts") as r:
                assert r.status == 200 and r.headers["Content-Type"] == "video/mp2t"
                async with asyncio.timeout(30):
                    async for chunk in r.content.iter_chunked(65536):
                        stream += chunk
                        if len(stream) > 400_000:
                            break
            tenant = seabridge("token", "create", "--tenant", "acme", config=gw.config_path).stdout.strip()
            admin = seabridge("token", "create", "--admin", config=gw.config_path).stdout.strip()
            status_url = f"http://127.0.0.1:{gw.http_port}/api/tv/status"
            async with http.get(status_url, headers={"Authorization": f"Bearer {tenant}"}) as r:
                assert r.status == 403  # source addresses and audiences are for the operator only
            async with http.get(status_url, headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 200
                status = await r.json()
        (channel,) = status["channels"]
        assert channel["number"] == 1 and channel["bytes_in"] > 0, channel
        assert channel["dvr"]["recording"] is True and channel["dvr"]["state"] == "recording", channel["dvr"]
    finally:
        feed.terminate()
        await feed.wait()
        await gw.stop()
    sample = tmp_path / "sample.ts"
    sample.write_bytes(bytes(stream))
    probe = await asyncio.create_subprocess_exec(
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json", str(sample),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(probe.communicate(), 30)
    codecs = {s["codec_name"] for s in json.loads(out)["streams"]}
    assert {"h264", "aac"} <= codecs, out
