"""Real peers for the TV tests: ffmpeg test channels, an HLS origin, a multicast namespace,
ffprobe and VLC as set-top boxes. Every process started here is stopped by its owner."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

FRAME = 3600  # 25 fps in 90 kHz ticks
AUDIO_FRAME = 1920  # AAC, 1024 samples at 48 kHz


def ffmpeg_channel_args(
    output: list[str], *, size: str = "320x240", offset: float = 0.0, tone: int = 1000, gop: int = 25
) -> list[str]:
    """An endless live test channel: testsrc2 + sine, H.264 + AAC, real time."""
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
        "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", str(gop), "-keyint_min", str(gop),
        "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "400k",
        "-c:a", "aac", "-b:a", "64k",
        "-output_ts_offset", str(offset),
        *output,
    ]  # fmt: skip


# The picture's wall clock: 32 bars across the top 24 rows, white for 1, black for 0, the time in
# tenths of a second (mod 2^32) Gray-coded so a frame drawn across a tick still reads one of the
# two times. ffmpeg evaluates time(0) as it draws each frame (inputs paced by -re).
_CLOCK_BITS = 32
_CLOCK_ROWS = 24
_CLOCK_EXPR = "st(0,floor(mod(time(0)*10,4294967296)));255*mod(floor(ld(0)/pow(2,X))+floor(ld(0)/pow(2,X+1)),2)"


def ffmpeg_clock_args(output: list[str], *, size: str = "320x240") -> list[str]:
    """An endless live test channel whose pictures carry the wall-clock time they were made at."""
    width = size.split("x")[0]
    graph = (
        f"[1:v]format=gray,geq=lum='{_CLOCK_EXPR}',scale={width}:{_CLOCK_ROWS}:flags=neighbor,format=yuv420p[bar];"
        "[0:v][bar]overlay=0:0[v]"
    )
    return [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
        "-re", "-f", "lavfi", "-i", f"nullsrc=size={_CLOCK_BITS}x1:rate=25",
        "-re", "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
        "-filter_complex", graph, "-map", "[v]", "-map", "2:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "25", "-keyint_min", "25",
        "-sc_threshold", "0", "-pix_fmt", "yuv420p", "-b:v", "400k",
        "-c:a", "aac", "-b:a", "64k",
        *output,
    ]  # fmt: skip


def read_clock(luma: bytes, line_size: int, width: int, near: float) -> float:
    """The time one picture shows (UTC seconds), from its luma plane."""
    bar = width // _CLOCK_BITS
    row = (_CLOCK_ROWS // 2) * line_size
    return clock_from_bars([luma[row + i * bar + bar // 2] for i in range(_CLOCK_BITS)], near)


def clock_from_bars(levels: list[float], near: float) -> float:
    """The time the 32 bars' brightness (0-255, left to right) spell; ``near`` resolves the
    2^32-tenths wrap (any time within 13 years)."""
    value, bit = 0, 0
    for i in range(_CLOCK_BITS - 1, -1, -1):
        bit ^= 1 if levels[i] > 128 else 0
        value |= bit << i
    tenths = round(near * 10)
    base = tenths - tenths % (1 << _CLOCK_BITS)
    candidates = [base - (1 << _CLOCK_BITS) + value, base + value, base + (1 << _CLOCK_BITS) + value]
    return min(candidates, key=lambda t: abs(t - tenths)) / 10


def clock_times(data: bytes, near: float | None = None) -> list[float]:
    """The wall-clock time each picture of an MPEG-TS stream shows, in display order."""
    import io

    import av

    near = time.time() if near is None else near
    out = []
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for frame in container.decode(video=0):
            gray = frame.reformat(format="gray")
            plane = gray.planes[0]
            out.append(read_clock(bytes(plane), plane.line_size, gray.width, near))
    return out


@dataclass
class Proc:
    """A child process that is always stopped (SIGTERM, then SIGKILL)."""

    args: list[str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def stop(self) -> None:
        p = self.popen
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(5)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)

    def __enter__(self) -> Proc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def udp_sender(port: int, **kw: Any) -> Proc:
    return Proc(ffmpeg_channel_args(["-f", "mpegts", f"udp://127.0.0.1:{port}?pkt_size=1316"], **kw))


# -- HLS origin ----------------------------------------------------------------------------------


class _CountingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()
        self.total = 0
        self.open = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.total += 1
            self.open += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.open -= 1
        super().shutdown_request(request)


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real origin

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass


@dataclass
class HlsOrigin:
    """ffmpeg packaging a live channel as HLS, served over HTTP/1.1 by a counting server."""

    directory: Path
    encoder: Proc | None = None
    server: _CountingServer | None = None
    thread: threading.Thread | None = None

    def start(self) -> HlsOrigin:
        out = [
            "-f", "hls", "-hls_time", "1", "-hls_list_size", "6",
            "-hls_flags", "delete_segments+independent_segments",
            "-hls_segment_filename", str(self.directory / "seg%d.ts"), str(self.directory / "index.m3u8"),
        ]  # fmt: skip
        self.encoder = Proc(ffmpeg_channel_args(out, tone=440)).start()
        handler = partial(_Handler, directory=str(self.directory))
        self.server = _CountingServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/index.m3u8"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.encoder is not None:
            self.encoder.stop()


# -- multicast in a network namespace --------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@dataclass
class MulticastNamespace:
    """A namespace joined to the host by a veth pair (loopback has no multicast flag)."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: int = field(default_factory=lambda: secrets.randbelow(200) + 20)

    @property
    def ns(self) -> str:
        return f"tvmc{self.tag}"

    @property
    def host_if(self) -> str:
        return f"tvh{self.tag}"

    @property
    def host_addr(self) -> str:
        return f"10.{self.subnet}.77.1"

    @property
    def ns_addr(self) -> str:
        return f"10.{self.subnet}.77.2"

    def create(self) -> MulticastNamespace:
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", f"tvn{self.tag}")
            _ip("link", "set", f"tvn{self.tag}", "netns", self.ns)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.ns_addr}/30", "dev", f"tvn{self.tag}")
            _ip("-n", self.ns, "link", "set", f"tvn{self.tag}", "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
            _ip("-n", self.ns, "route", "add", "224.0.0.0/4", "dev", f"tvn{self.tag}")
        except subprocess.CalledProcessError:
            self.delete()
            raise
        return self

    def sender(self, group: str, port: int, *, clock: bool = False, **kw: Any) -> Proc:
        url = f"udp://{group}:{port}?pkt_size=1316&ttl=4&localaddr={self.ns_addr}"
        args = (
            ffmpeg_clock_args(["-f", "mpegts", url], **kw)
            if clock
            else ffmpeg_channel_args(["-f", "mpegts", url], **kw)
        )
        return Proc(["ip", "netns", "exec", self.ns, *args])

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10)


# -- set-top boxes: ffprobe and VLC ---------------------------------------------------------------


@dataclass
class Probe:
    codecs: dict[str, str]  # codec_type -> codec_name
    width: int
    height: int
    packets: dict[str, list[dict[str, Any]]]  # codec_type -> packets in file order
    continuity_errors: list[str]
    duration: float


def ffprobe(path: Path) -> Probe:
    result = subprocess.run(
        [
            "ffprobe", "-v", "verbose", "-of", "json",
            "-show_entries", "stream=codec_type,codec_name,width,height:format=duration"
            ":packet=codec_type,pts,dts,duration,flags",
            str(path),
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    codecs = {s["codec_type"]: s["codec_name"] for s in data["streams"]}
    video = next((s for s in data["streams"] if s["codec_type"] == "video"), {})
    packets: dict[str, list[dict[str, Any]]] = {}
    for p in data.get("packets", []):
        packets.setdefault(p["codec_type"], []).append(p)
    errors = [line for line in result.stderr.splitlines() if "Continuity check failed" in line]
    return Probe(
        codecs, int(video.get("width", 0)), int(video.get("height", 0)), packets, errors,
        float(data.get("format", {}).get("duration", 0.0)),
    )  # fmt: skip


def timeline_problems(probe: Probe, *, video_gap: int = FRAME, audio_gap: int = FRAME) -> list[str]:
    """DTS going backwards or leaving a hole bigger than allowed, per stream."""
    problems = []
    for kind, limit in (("video", video_gap), ("audio", audio_gap)):
        times = [int(p["dts"]) for p in probe.packets.get(kind, []) if p.get("dts") is not None]
        for a, b in zip(times, times[1:], strict=False):
            if b <= a:
                problems.append(f"{kind}: dts {a} -> {b} goes back")
            elif b - a > limit:
                problems.append(f"{kind}: dts {a} -> {b} leaves a gap of {(b - a) / 90:.1f} ms")
    return problems


def vlc_play(url: str, seconds: int = 6) -> str:
    """Play ``url`` with cvlc as an unprivileged user for ``seconds``; returns VLC's log."""
    home = tempfile.mkdtemp(prefix="tv-vlc-")
    shutil.chown(home, "nobody")
    try:
        result = subprocess.run(
            [
                "runuser", "-u", "nobody", "--", "env", f"HOME={home}",
                "timeout", "-k", "5", str(seconds + 20),
                "cvlc", "-vv", "--intf", "dummy", "--vout", "dummy", "--aout", "dummy",
                "--no-video-title-show", "--play-and-exit", "--run-time", str(seconds), url,
            ],
            capture_output=True, text=True, timeout=seconds + 40,
        )  # fmt: skip
        return result.stdout + result.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition the system under test brings about (checked every 50 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


class SplicedSender:
    """Plays MPEG-TS files back to back over UDP in real time (paced by their PCR), the way a
    head-end splices feeds: each file keeps its own clock, so the stream's timestamps jump."""

    def __init__(self, files: list[Path], port: int) -> None:
        self.files = files
        self.port = port
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SplicedSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from media.tv.ts import PACKET_SIZE, TsPacket

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for path in self.files:
                data = path.read_bytes()
                start = time.monotonic()
                pcr0: int | None = None
                for off in range(0, len(data), 7 * PACKET_SIZE):
                    if self._stop.is_set():
                        return
                    chunk = data[off : off + 7 * PACKET_SIZE]
                    for p in range(0, len(chunk), PACKET_SIZE):
                        pcr = TsPacket.parse(chunk, p).pcr
                        if pcr is not None:
                            pcr0 = pcr if pcr0 is None else pcr0
                            delay = start + (pcr - pcr0) / 27e6 - time.monotonic()
                            if delay > 0:
                                self._stop.wait(delay)
                    sock.sendto(chunk, ("127.0.0.1", self.port))
        finally:
            sock.close()
            self.done.set()


# -- a small disk that fills up ------------------------------------------------------------------


@dataclass
class Tmpfs:
    """A private tmpfs of ``size_kb`` (a disk a test can fill, or make read-only)."""

    path: Path
    size_kb: int
    mounted: bool = False

    def mount(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kb}k,mode=0755", "tmpfs", str(self.path)],
            check=True, capture_output=True, timeout=10,
        )  # fmt: skip
        self.mounted = True
        return self

    def read_only(self, on: bool) -> None:
        mode = "ro" if on else "rw"
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True, capture_output=True, timeout=10)

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, name: str = "filler", leave: int = 0) -> Path:
        """Take all the free space but ``leave`` bytes (a full disk when ``leave`` is 0)."""
        filler = self.path / name
        chunk = b"\0" * 65536
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            while (room := self.free() - leave) > 0:
                os.write(fd, chunk[: min(len(chunk), room)])
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)
        return filler

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=10)
            self.mounted = False
