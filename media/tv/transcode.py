"""Optional re-encoding for thin links (PyAV, runs inside the ingest thread).

Video: decode, scale, encode H.264 (libx264) with a regular GOP so segments cut evenly.
Audio: copied, or re-encoded to AAC at ``audio_kbps``. Everything runs single-threaded in
the ingest thread so its CPU time is that thread's time, which the status reports.
The encoders outlive source switches (a new source only brings a new decoder), so players
see one continuous stream.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
from av.audio.resampler import AudioResampler

from media.tv.config import TranscodeProfile

TB90K = Fraction(1, 90000)


class VideoTranscoder:
    def __init__(self, profile: TranscodeProfile, mux: Any, rate: Fraction | None) -> None:
        fps = rate if rate and 1 <= rate <= 120 else Fraction(25)
        self.profile = profile
        self.stream = mux.add_stream("libx264", rate=fps)
        ctx = self.stream.codec_context
        ctx.width = profile.width
        ctx.height = profile.height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = profile.video_kbps * 1000
        ctx.time_base = TB90K
        ctx.gop_size = max(1, round(profile.gop_s * fps))
        kbps = profile.video_kbps
        ctx.options = {
            "preset": profile.preset,
            "threads": "1",
            "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={2 * kbps}:scenecut=0:threads=1:lookahead-threads=1",
        }
        self._decoder: Any = None
        self._last_pts: int | None = None

    def new_input(self, in_stream: Any) -> None:
        self._decoder = in_stream.codec_context
        self._decoder.thread_count = 1

    def transcode(self, packet: Any) -> list[Any]:
        out: list[Any] = []
        if self._decoder is None:
            return out
        try:
            frames = self._decoder.decode(packet)
        except av.FFmpegError:
            return out  # a damaged picture: skip it, the next keyframe heals the stream
        for frame in frames:
            out += self._encode(frame)
        return out

    def _encode(self, frame: Any) -> list[Any]:
        pts = frame.pts
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            return []
        self._last_pts = pts
        scaled = frame.reformat(width=self.profile.width, height=self.profile.height, format="yuv420p")
        scaled.pts = pts
        scaled.time_base = TB90K
        return list(self.stream.encode(scaled))

    def flush(self) -> list[Any]:
        try:
            return list(self.stream.encode(None))
        except av.FFmpegError:
            return []


class AudioTranscoder:
    def __init__(self, kbps: int, mux: Any) -> None:
        self.stream = mux.add_stream("aac", rate=48000)
        ctx = self.stream.codec_context
        ctx.bit_rate = kbps * 1000
        ctx.layout = "stereo"
        ctx.format = "fltp"
        self._resampler = AudioResampler(format="fltp", layout="stereo", rate=48000)
        self._decoder: Any = None
        self._next_pts: int | None = None

    def new_input(self, in_stream: Any) -> None:
        self._decoder = in_stream.codec_context
        self._decoder.thread_count = 1
        self._resampler = AudioResampler(format="fltp", layout="stereo", rate=48000)
        self._next_pts = None

    def transcode(self, packet: Any) -> list[Any]:
        out: list[Any] = []
        if self._decoder is None:
            return out
        try:
            frames = self._decoder.decode(packet)
        except av.FFmpegError:
            return out
        for frame in frames:
            start = None if frame.pts is None else int(frame.pts * frame.time_base * 48000)
            for resampled in self._resampler.resample(frame):
                # Samples are counted from the (rebased) input time, so A/V sync survives.
                if self._next_pts is None or (start is not None and start > self._next_pts + 4800):
                    self._next_pts = start or 0
                resampled.pts = self._next_pts
                resampled.time_base = Fraction(1, 48000)
                self._next_pts += resampled.samples
                start = None
                out += list(self.stream.encode(resampled))
        return out

    def flush(self) -> list[Any]:
        try:
            return list(self.stream.encode(None))
        except av.FFmpegError:
            return []
