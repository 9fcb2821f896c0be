"""TV benchmark: remuxed channels per core, HTTP-TS and HLS viewers per core, zapping time.

Each figure is printed beside the same job done by the ffmpeg command line in the same run,
with the ratio. Not run by pytest::

    PYTHONPATH=. .venv/bin/python bench/tv_bench.py [--seconds 30] [--viewers 40]

The test channel is generated here with ffmpeg: 1280x720 25 fps H.264 at about 2.5 Mbit/s
with a keyframe every 2 s, plus AAC stereo: a typical national channel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.tv.pipe import BytePipe  # noqa: E402
from media.tv.worker import IngestEnded, IngestSettings, IngestWorker, SegmentWritten, WorkerEvent  # noqa: E402


class BaselineDidNoWork(RuntimeError):
    pass


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_of(*procs: psutil.Process) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def make_media(path: Path, seconds: int) -> Path:
    print(f"generating a {seconds} s 720p test channel ...", flush=True)
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-ac", "2",
            "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-b:v", "2500k",
            "-maxrate", "2500k", "-bufsize", "5000k", "-g", "50", "-keyint_min", "50", "-sc_threshold", "0",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "mpegts", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def media_seconds(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip())


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def spawn(args: list[str], **kw: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True, **kw)


# -- 1. remuxed channels per core -----------------------------------------------------------------


def remux_ours(media: Path, out: Path, profile: Any = None) -> tuple[float, int]:
    """CPU seconds our ingest (demux, rebase, remux or transcode, segment, write) needs."""
    done = threading.Event()
    segments = 0

    def emit(events: list[WorkerEvent]) -> None:
        nonlocal segments
        for e in events:
            if isinstance(e, SegmentWritten):
                segments += 1
                e.path.unlink()  # like the live window: do not fill the disk
            elif isinstance(e, IngestEnded):
                done.set()

    settings = IngestSettings(
        segment_s=2.0, max_segment_s=4.0, keyframe_wait_s=5.0, max_timestamp_step_s=1.0, profile=profile
    )
    worker = IngestWorker(name="bench", segment_dir=out, session="0badcafe", settings=settings, emit=emit)
    data = media.read_bytes()
    pipe = BytePipe(limit=len(data) + 1)
    me = psutil.Process()
    before = cpu_of(me)
    worker.start()
    worker.attach(pipe, 1)
    for i in range(0, len(data), 64 * 1024):  # what the UDP reader hands over per wake-up
        pipe.write(data[i : i + 64 * 1024])
    pipe.close()
    done.wait(600)
    worker.stop()
    worker.join(60)
    return cpu_of(me) - before, segments


def remux_ffmpeg(media: Path, out: Path, codec: list[str] | None = None) -> tuple[float, int]:
    proc = spawn([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(media), *(codec or ["-c", "copy"]),
        "-f", "hls", "-hls_time", "2", "-hls_list_size", "6", "-hls_flags", "delete_segments",
        "-hls_segment_filename", str(out / "s%d.ts"), str(out / "index.m3u8"),
    ])  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)  # exact CPU time of the finished child
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    playlist = (out / "index.m3u8").read_text() if (out / "index.m3u8").exists() else ""
    last = max((int(line[1:-3]) for line in playlist.splitlines() if line.startswith("s")), default=-1)
    return cpu, last + 1


def bench_remux(media: Path, seconds: float) -> None:
    print("\n== remuxed channels per core (as fast as possible; channels/core = media s / CPU s) ==")
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ours, our_segments = remux_ours(media, Path(a))
        theirs, their_segments = remux_ffmpeg(media, Path(b))
    if theirs <= 0 or their_segments == 0:
        raise BaselineDidNoWork(f"ffmpeg remux made {their_segments} segments with {theirs:.3f} CPU s")
    if our_segments == 0:
        raise RuntimeError("our remux made no segments")
    for name, cpu, count in (
        ("seabridge (PyAV)", ours, our_segments),
        ("ffmpeg -c copy -f hls", theirs, their_segments),
    ):
        print(f"{name:<22} : {seconds / cpu:8.0f} channels/core  ({cpu:.2f} CPU s, {count} segments)")
    print(f"ratio seabridge/ffmpeg : {theirs / ours:8.2f}x the channels")


def bench_transcode(media: Path, seconds: float) -> None:
    from media.tv.config import TranscodeProfile

    print("\n== transcode profile 720p -> 1024x576 at 900 kbit/s (libx264 veryfast, one thread) ==")
    profile = TranscodeProfile(width=1024, height=576, video_kbps=900, preset="veryfast", gop_s=2.0)
    codec = [
        "-vf", "scale=1024:576", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "900k", "-maxrate", "900k",
        "-bufsize", "1800k", "-g", "50", "-threads", "1", "-x264-params", "scenecut=0:lookahead-threads=1",
        "-c:a", "copy",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        ours, our_segments = remux_ours(media, Path(a), profile)
        theirs, their_segments = remux_ffmpeg(media, Path(b), codec)
    if theirs <= 0 or their_segments == 0:
        raise BaselineDidNoWork(f"ffmpeg transcode made {their_segments} segments with {theirs:.3f} CPU s")
    for name, cpu in (("seabridge (PyAV)", ours), ("ffmpeg -c:v libx264", theirs)):
        share = 100 * cpu / seconds
        print(f"{name:<22} : {share:6.1f}% of a core per channel ({seconds / cpu:.1f} channels/core)")
    print(f"ratio seabridge/ffmpeg : {theirs / ours:8.2f}x the channels")


# -- viewer clients (run in their own process so their CPU is not counted) ---------------------------


async def client_main(mode: str, urls: list[str], count: int, seconds: float) -> None:
    import aiohttp

    received = [0] * count
    deadline = time.monotonic() + seconds

    async def ts_viewer(i: int, url: str) -> None:
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                try:
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=None, sock_read=20)) as r:
                        async for chunk in r.content.iter_any():
                            received[i] += len(chunk)
                            if time.monotonic() >= deadline:
                                return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)

    async def hls_viewer(i: int, url: str) -> None:
        seen: set[str] = set()
        base = url.rsplit("/", 1)[0]
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                try:
                    async with s.get(url) as r:
                        text = await r.text()
                    for name in [line for line in text.splitlines() if line.endswith(".ts")][-3:]:
                        if name not in seen:
                            seen.add(name)
                            async with s.get(f"{base}/{name}") as r:
                                received[i] += len(await r.read())
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(1.0)

    viewer = ts_viewer if mode == "ts" else hls_viewer
    await asyncio.gather(*(viewer(i, urls[i % len(urls)]) for i in range(count)))
    print(" ".join(str(n) for n in received), flush=True)


def run_clients(mode: str, urls: list[str], count: int, seconds: float) -> list[int]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", mode, "--count", str(count), "--seconds", str(seconds), *urls],
        capture_output=True, text=True, timeout=seconds + 120, check=True,
    )  # fmt: skip
    return [int(x) for x in out.stdout.split()]


# -- 2. viewers per core ----------------------------------------------------------------------------


class OurGateway:
    """The TV service on loopback in this process, its loop in a thread."""

    def __init__(self, sources: list[str], data_dir: Path, *, idle_s: float = 3.0) -> None:
        from aiohttp import web

        from gateway.config import parse_config
        from media.tv.service import TvService
        from media.tv.web import add_tv_routes

        channels = [
            {"number": i + 1, "name": f"B{i + 1}", "sources": [s], "tenants": ["*"]} for i, s in enumerate(sources)
        ]
        config = parse_config(
            {
                "data_dir": str(data_dir),
                "tv": {"enabled": True, "idle_timeout_s": idle_s, "channels": channels},
            }
        )
        self.loop = asyncio.new_event_loop()
        self.service = TvService(config.tv, config.data_path)
        self.port = free_port()
        ready = threading.Event()

        async def main() -> None:
            app = web.Application()
            add_tv_routes(app, self.service)
            await self.service.start()
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(main,), daemon=True)
        self.thread.start()
        ready.wait(30)
        self.token = self.service.issue("bench", 1)[0]

    def _run(self, main: Any) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/iptv/{self.token}/{path}"

    def close(self) -> None:
        async def shutdown() -> None:
            await self.service.stop()
            await self.runner.cleanup()

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def udp_loop_sender(media: Path, port: int) -> subprocess.Popen[Any]:
    return spawn([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(media),
        "-c", "copy", "-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316",
    ])  # fmt: skip


def per_viewer(cpu_with: float, cpu_without: float, viewers: int, window: float) -> float:
    """Viewers one core can serve, from the CPU added by ``viewers`` over ``window`` seconds."""
    added = max(1e-6, cpu_with - cpu_without)
    return viewers * window / added


def bench_viewers(media: Path, viewers: int, window: float) -> None:
    print(f"\n== viewers per core ({viewers} viewers for {window:.0f} s; CPU beyond the ingest alone) ==")
    me = psutil.Process()
    port = free_port(socket.SOCK_DGRAM)
    sender = udp_loop_sender(media, port)
    data_dir = Path(tempfile.mkdtemp(prefix="tv-bench-"))
    gw = OurGateway([f"udp://127.0.0.1:{port}"], data_dir, idle_s=600)
    try:
        gw.call(gw.service.channels[1].start())
        time.sleep(8)  # let the window fill
        c0 = cpu_of(me)
        time.sleep(window)
        idle = cpu_of(me) - c0
        results: dict[str, float] = {}
        for mode, path in (("ts", "ch/1.ts"), ("hls", "ch/1/index.m3u8")):
            c0 = cpu_of(me)
            got = run_clients(mode, [gw.url(path)], viewers, window)
            busy = cpu_of(me) - c0
            if min(got) == 0:
                raise RuntimeError(f"a {mode} viewer received nothing: {got}")
            results[mode] = per_viewer(busy, idle, viewers, window)
            mbits = sum(got) / viewers / window * 8 / 1e6
            alone, loaded = 100 * idle / window, 100 * busy / window
            print(
                f"seabridge {mode:>3}: {results[mode]:8.0f} viewers/core  (ingest alone {alone:.1f}%"
                f" of a core, with viewers {loaded:.1f}%; {mbits:.2f} Mbit/s received each)"
            )
    finally:
        gw.close()
        stop(sender)
        shutil.rmtree(data_dir, ignore_errors=True)

    # ffmpeg alone has no fan-out: each HTTP-TS viewer needs its own ffmpeg remuxing the feed.
    n = min(viewers, 6)
    ports = [free_port() for _ in range(n)]
    procs = [
        spawn(["ffmpeg", "-hide_banner", "-loglevel", "fatal", "-re", "-stream_loop", "-1", "-i", str(media),
               "-c", "copy", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{p}/ch.ts"])
        for p in ports
    ]  # fmt: skip
    try:
        time.sleep(1.0)
        ps = [psutil.Process(p.pid) for p in procs]
        c0 = cpu_of(*ps)
        got = run_clients("ts", [f"http://127.0.0.1:{p}/ch.ts" for p in ports], n, window)
        busy = cpu_of(*ps) - c0
    finally:
        for p in procs:
            stop(p)
    if min(got) == 0 or busy <= 0:
        raise BaselineDidNoWork(f"ffmpeg HTTP-TS viewers got {got} bytes with {busy:.3f} CPU s")
    ff_ts = n * window / busy
    print(f"ffmpeg  ts: {ff_ts:8.0f} viewers/core  (one 'ffmpeg -c copy -f mpegts -listen 1' per viewer)")

    # HLS with ffmpeg: ffmpeg segments, a plain static file server (aiohttp, no tokens) serves.
    hls_dir = Path(tempfile.mkdtemp(prefix="tv-bench-hls-"))
    web_port = free_port()
    ff = spawn(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(media),
                "-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "6",
                "-hls_flags", "delete_segments", str(hls_dir / "index.m3u8")])  # fmt: skip
    server = spawn([sys.executable, __file__, "--static", str(hls_dir), "--port", str(web_port)])
    try:
        time.sleep(8)
        ps = [psutil.Process(ff.pid), psutil.Process(server.pid)]
        c0 = cpu_of(*ps)
        time.sleep(window)
        idle_ff = cpu_of(*ps) - c0
        c0 = cpu_of(*ps)
        got = run_clients("hls", [f"http://127.0.0.1:{web_port}/index.m3u8"], viewers, window)
        busy = cpu_of(*ps) - c0
    finally:
        stop(ff)
        stop(server)
        shutil.rmtree(hls_dir, ignore_errors=True)
    if min(got) == 0 or busy <= 0:
        raise BaselineDidNoWork(f"ffmpeg HLS viewers got {got} bytes with {busy:.3f} CPU s")
    ff_hls = per_viewer(busy, idle_ff, viewers, window)
    print(f"ffmpeg hls: {ff_hls:8.0f} viewers/core  (ffmpeg -f hls + aiohttp static files, no tokens)")
    print(f"ratio seabridge/ffmpeg: HTTP-TS {results['ts'] / ff_ts:.1f}x, HLS {results['hls'] / ff_hls:.2f}x")


# -- 3. zapping time ---------------------------------------------------------------------------------


class FirstPicture:
    """A set-top box's decoder: MPEG-TS bytes in, True once the first picture decodes.

    No stream probing (which would add seconds of its own): find the video PID from the
    PAT/PMT, hand its PES payloads to an H.264 decoder, stop at the first frame."""

    def __init__(self) -> None:
        import av

        from media.tv.ts import SectionAssembler, TsFramer

        self.codec = av.CodecContext.create("h264", "r")
        self.framer = TsFramer()
        self.pat, self.pmt = SectionAssembler(), SectionAssembler()
        self.pmt_pid: int | None = None
        self.video_pid: int | None = None

    def feed(self, data: bytes) -> bool:
        from media.tv.ts import PACKET_SIZE, TsPacket, parse_pat, parse_pes_header, parse_pmt

        chunk = self.framer.feed(data)
        for off in range(0, len(chunk), PACKET_SIZE):
            p = TsPacket.parse(chunk, off)
            if p.pid == 0:
                for section in self.pat.feed(p, chunk, off):
                    programs = parse_pat(section)
                    self.pmt_pid = programs[min(programs)] if programs else None
            elif p.pid == self.pmt_pid:
                for section in self.pmt.feed(p, chunk, off):
                    video = parse_pmt(section).video
                    self.video_pid = video.pid if video else None
            elif p.pid == self.video_pid and p.has_payload:
                payload = chunk[off + p.payload_offset : off + PACKET_SIZE]
                if p.pusi:
                    payload = payload[parse_pes_header(payload).payload_offset :]
                for packet in self.codec.parse(payload):
                    with contextlib.suppress(Exception):  # pictures before the first keyframe
                        if self.codec.decode(packet):
                            return True
        return False


def zap_client(url: str) -> float:
    """Seconds from the request to the first decoded picture."""
    import urllib.request

    start = time.monotonic()
    decoder = FirstPicture()
    if url.startswith("udp://"):
        host, port = url[6:].rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            while not decoder.feed(sock.recv(65536)):
                pass
        return time.monotonic() - start
    if url.endswith(".m3u8"):
        # A fast-starting player: the newest listed segment (it opens on a keyframe).
        text = urllib.request.urlopen(url, timeout=60).read().decode()
        url = url.rsplit("/", 1)[0] + "/" + [line for line in text.splitlines() if line.endswith(".ts")][-1]
    with urllib.request.urlopen(url, timeout=60) as response:
        while not decoder.feed(response.read1(65536)):
            pass
    return time.monotonic() - start


def first_frame_s(url: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--zap-client", url],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return float(out.stdout.strip())


def bench_zapping(media: Path, rounds: int) -> None:
    print(f"\n== zapping: request to first decoded picture (median of {rounds}; keyframes every 2 s) ==")
    print("   cold: the channel was idle (not pulling its source); warm: someone already watches it")
    port, direct_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    senders = [udp_loop_sender(media, port), udp_loop_sender(media, direct_port)]
    data_dir = Path(tempfile.mkdtemp(prefix="tv-bench-"))
    gw = OurGateway([f"udp://127.0.0.1:{port}"], data_dir, idle_s=1.0)
    ch = gw.service.channels[1]
    kinds = (("ts", "ch/1.ts"), ("hls", "ch/1/index.m3u8"), ("hls quick", "ch/1/quick.m3u8"))
    results: dict[str, list[float]] = {f"{k} {t}": [] for k, _ in kinds for t in ("cold", "warm")}
    results["direct"] = []
    try:
        time.sleep(2)
        for _ in range(rounds):
            for kind, path in kinds:
                deadline = time.monotonic() + 60
                while ch.state != "stopped":  # cold: the channel is not pulling its source
                    assert time.monotonic() < deadline, "channel did not go idle"
                    time.sleep(0.1)
                results[f"{kind} cold"].append(first_frame_s(gw.url(path)))
                # warm: someone already watches, so the source is being pulled
                watcher = spawn(["ffmpeg", "-hide_banner", "-loglevel", "fatal", "-i", gw.url("ch/1.ts"),
                                 "-c", "copy", "-f", "null", "-"])  # fmt: skip
                try:
                    time.sleep(7)
                    results[f"{kind} warm"].append(first_frame_s(gw.url(path)))
                finally:
                    stop(watcher)
            # The source's own figure varies with where in the GOP one joins: sample it more.
            results["direct"] += [first_frame_s(f"udp://127.0.0.1:{direct_port}") for _ in range(3)]
    finally:
        gw.close()
        for s in senders:
            stop(s)
        shutil.rmtree(data_dir, ignore_errors=True)
    if not all(results["direct"]):
        raise BaselineDidNoWork("ffmpeg never decoded a picture from the source")
    base = statistics.median(results["direct"])
    print(f"ffmpeg straight from the source (udp) : {base:6.2f} s")
    for key in [k for k in results if k != "direct"]:
        value = statistics.median(results[key])
        print(f"seabridge {key:<15} {'':11}: {value:6.2f} s  ({value / base:.2f}x)")


# -- main ---------------------------------------------------------------------------------------------


async def static_server(directory: str, port: int) -> None:
    from aiohttp import web

    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the test channel / viewer windows")
    parser.add_argument("--viewers", type=int, default=40)
    parser.add_argument("--zap-rounds", type=int, default=3)
    parser.add_argument("--only", choices=["remux", "transcode", "viewers", "zap"])
    parser.add_argument("--client", choices=["ts", "hls"], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--static", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--zap-client", help=argparse.SUPPRESS)
    parser.add_argument("urls", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client_main(args.client, args.urls, args.count, args.seconds))
        return
    if args.zap_client:
        print(f"{zap_client(args.zap_client):.3f}")
        return
    if args.static:
        asyncio.run(static_server(args.static, args.port))
        return
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        media = make_media(Path(tmp) / "channel.ts", int(args.seconds))
        seconds = media_seconds(media)
        if args.only in (None, "remux"):
            bench_remux(media, seconds)
        if args.only in (None, "transcode"):
            bench_transcode(media, seconds)
        if args.only in (None, "viewers"):
            bench_viewers(media, args.viewers, min(args.seconds, 20.0))
        if args.only in (None, "zap"):
            bench_zapping(media, args.zap_rounds)


if __name__ == "__main__":
    main()
