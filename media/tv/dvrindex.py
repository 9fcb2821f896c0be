"""The durable index of one channel's recording: a JSON line per recorded segment.

``<dvr dir>/<channel>/index.jsonl`` gets a line as each segment is stored (after the file
is in place); segments dropped from the window are not logged, the file just goes. On
load, lines whose file is missing are skipped, and files no line names (a crash between
the two writes, a ``.part`` copy) are deleted. The file is rewritten (to a temporary name,
then renamed over) once it holds many more lines than segments. Blocking I/O: call it from
a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from media.tv.dvrwindow import Recorded

log = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"


def _line(segment: Recorded) -> str:
    return (
        json.dumps(
            {
                "i": segment.index,
                "run": segment.run,
                "seq": segment.seq,
                "wall": round(segment.wall_start, 3),
                "dur": round(segment.duration, 4),
                "size": segment.size,
                "disc": segment.discontinuity,
                "discs": segment.discontinuities,
            },
            separators=(",", ":"),
        )
        + "\n"
    )


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _parse(line: str) -> Recorded | None:
    try:
        d: dict[str, Any] = json.loads(line)
        return Recorded(
            index=int(d["i"]),
            run=str(d["run"]),
            seq=int(d["seq"]),
            wall_start=float(d["wall"]),
            duration=float(d["dur"]),
            size=int(d["size"]),
            discontinuity=bool(d["disc"]),
            discontinuities=int(d["discs"]),
        )
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line after a crash, or a stranger's edit


class DvrIndex:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / INDEX_NAME
        self.lines = 0

    def load(self) -> list[Recorded]:
        """The recorded segments still on disk, in recording order; strays are removed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        segments: list[Recorded] = []
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    self.lines += 1
                    segment = _parse(line)
                    if segment is not None:
                        segments.append(segment)
        except FileNotFoundError:
            pass
        on_disk = {p.name for p in self.directory.iterdir() if p.name != INDEX_NAME}
        kept = [s for s in segments if s.name in on_disk]
        named = {s.name for s in kept}
        for stray in on_disk - named:
            with contextlib.suppress(OSError):
                (self.directory / stray).unlink()
        if len(kept) < len(segments):
            log.info("tv dvr %s: %d indexed segment(s) missing on disk", self.directory, len(segments) - len(kept))
        return kept

    def append(self, segment: Recorded) -> None:
        # Opened per line (one every few seconds): no handle pins the disk, so it can be
        # remounted or unmounted under a running gateway.
        torn = _ends_mid_line(self.path)
        with open(self.path, "a", encoding="utf-8") as f:
            # A line cut short by a crash or a full disk: do not glue the next one to it.
            f.write(("\n" if torn else "") + _line(segment))
        self.lines += 1

    def rewrite(self, segments: Iterable[Recorded]) -> None:
        """Replace the file with one line per segment kept."""
        tmp = self.path.with_name(INDEX_NAME + ".tmp")
        count = 0
        with open(tmp, "w", encoding="utf-8") as f:
            for segment in segments:
                f.write(_line(segment))
                count += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.lines = count
