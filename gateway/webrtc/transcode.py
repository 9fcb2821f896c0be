"""Opus (decoded by aiortc) <-> G.711 with PyAV, for browser <-> phone calls.

aiortc decodes the browser's Opus into 48 kHz frames and encodes whatever
frames we give its sender; this module turns those frames into 20 ms G.711
payloads and G.711 payloads back into frames. One ``G711Transcoder`` per
call holds the resampler and codec states of both directions.
"""

from __future__ import annotations

import fractions
from typing import Literal, cast

import av
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame

SAMPLE_RATE = 8000
SAMPLES_PER_PACKET = 160  # 20 ms
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
_CODECS = {"PCMU": "pcm_mulaw", "PCMA": "pcm_alaw"}


class G711Transcoder:
    def __init__(self, codec: Literal["PCMU", "PCMA"]) -> None:
        name = _CODECS[codec]
        self._encoder = cast(AudioCodecContext, av.CodecContext.create(name, "w"))
        self._encoder.format = "s16"
        self._encoder.layout = "mono"
        self._encoder.sample_rate = SAMPLE_RATE
        self._encoder.time_base = TIME_BASE
        self._decoder = cast(AudioCodecContext, av.CodecContext.create(name, "r"))
        self._decoder.format = "s16"
        self._decoder.layout = "mono"
        self._decoder.sample_rate = SAMPLE_RATE
        self._resampler = av.AudioResampler(
            format="s16", layout="mono", rate=SAMPLE_RATE, frame_size=SAMPLES_PER_PACKET
        )
        self._out_pts = 0

    def to_g711(self, frame: AudioFrame) -> list[bytes]:
        """20 ms G.711 payloads for a decoded browser frame (any rate and layout)."""
        payloads: list[bytes] = []
        for chunk in self._resampler.resample(frame):
            for packet in self._encoder.encode(chunk):
                payloads.append(bytes(packet))
        return payloads

    def from_g711(self, payload: bytes) -> list[AudioFrame]:
        """Frames for the browser's Opus encoder, stamped on a continuous 8 kHz timeline."""
        packet = av.Packet(payload)
        packet.pts = self._out_pts
        packet.time_base = TIME_BASE
        frames: list[AudioFrame] = []
        for frame in self._decoder.decode(packet):
            assert isinstance(frame, AudioFrame)
            frame.pts = self._out_pts
            frame.time_base = TIME_BASE
            self._out_pts += frame.samples
            frames.append(frame)
        return frames
