"""Shared fixtures for the TV tests: test channels made by ffmpeg (testsrc2 + sine, H.264 + AAC)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def make_ts(
    path: Path, *, seconds: float = 4, gop: int = 25, size: str = "160x120", extra: tuple[str, ...] = ()
) -> Path:
    """An MPEG-TS test channel: 25 fps video with a keyframe every ``gop`` frames, 1 kHz tone."""
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=1000:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-sc_threshold",
            "0",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            *extra,
            "-f",
            "mpegts",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def ts_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four seconds, one keyframe a second."""
    return make_ts(tmp_path_factory.mktemp("media") / "av4s.ts")


@pytest.fixture(scope="session")
def ts_sparse_keyframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve seconds with a single keyframe at the start (a feed that 'lost' its keyframes)."""
    return make_ts(tmp_path_factory.mktemp("media") / "sparse.ts", seconds=12, gop=1000)
