"""G.711 mu-law tones and a Goertzel detector, for checking audio content end to end."""

from __future__ import annotations

import math
import struct

RATE = 8000
FRAME = 160  # 20 ms


def _ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


_DECODE = [_ulaw_decode(b) for b in range(256)]


def tone_frame(freq: float, index: int, amplitude: int = 8000) -> bytes:
    start = index * FRAME
    return bytes(_ulaw(int(amplitude * math.sin(2 * math.pi * freq * (start + i) / RATE))) for i in range(FRAME))


def rtp_packet(seq: int, payload: bytes, ssrc: int = 0x5EAB) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * FRAME) & 0xFFFFFFFF, ssrc) + payload


def goertzel(samples: list[int], freq: float) -> float:
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def dominant(payloads: list[bytes], candidates: list[float]) -> tuple[float, float]:
    """The candidate frequency with most energy in the decoded audio, and its share of the total."""
    samples = [_DECODE[b] for p in payloads for b in p]
    energy = {f: goertzel(samples, f) for f in candidates}
    best = max(energy, key=lambda f: energy[f])
    total = sum(energy.values()) or 1.0
    return best, energy[best] / total
