"""Known tones in, tones detected out: the content check for audio that crossed the gateway."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def write_tone(path: Path, freq: float, seconds: float, rate: int = 8000, amplitude: float = 0.5) -> Path:
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(
            b"".join(
                struct.pack("<h", int(amplitude * 32767 * math.sin(2 * math.pi * freq * i / rate)))
                for i in range(frames)
            )
        )
    return path


def read_wav(path: Path) -> tuple[list[float], int]:
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        channels = w.getnchannels()
        raw = w.readframes(w.getnframes())
    samples = struct.unpack(f"<{len(raw) // 2}h", raw)
    if channels > 1:
        samples = samples[::channels]
    return [s / 32768 for s in samples], rate


def goertzel_power(samples: list[float], rate: int, freq: float) -> float:
    """Normalised power of ``freq`` in ``samples`` (1.0 for a full-scale pure tone)."""
    n = len(samples)
    if n == 0:
        return 0.0
    k = round(n * freq / rate)
    w = 2 * math.pi * k / n
    coeff = 2 * math.cos(w)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 4 * power / (n * n)


def tone_fraction(path: Path, freq: float, start_s: float, end_s: float, window_s: float = 0.2) -> float:
    """The fraction of windows in [start_s, end_s) of the recording where ``freq`` dominates."""
    samples, rate = read_wav(path)
    size = int(window_s * rate)
    lo, hi = int(start_s * rate), min(len(samples), int(end_s * rate))
    windows = [samples[i : i + size] for i in range(lo, hi - size + 1, size)]
    if not windows:
        return 0.0
    hits = 0
    for win in windows:
        energy = sum(x * x for x in win) / len(win)
        if energy >= 1e-4 and goertzel_power(win, rate, freq) / 2 > 0.6 * energy:
            hits += 1
    return hits / len(windows)


def duration_s(path: Path) -> float:
    samples, rate = read_wav(path)
    return len(samples) / rate


def tone_present(path: Path, freq: float, *, window_s: float = 0.2, min_fraction: float = 0.3) -> bool:
    """True when ``freq`` dominates at least ``min_fraction`` of the recording's windows.

    "Dominates" means it holds most of the window's energy, so a recording of
    silence or of the other party's tone does not pass.
    """
    samples, rate = read_wav(path)
    size = int(window_s * rate)
    windows = [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]
    if not windows:
        return False
    hits = 0
    for win in windows:
        energy = sum(x * x for x in win) / len(win)
        if energy < 1e-4:
            continue
        if goertzel_power(win, rate, freq) / 2 > 0.6 * energy:
            hits += 1
    return hits >= min_fraction * len(windows)
