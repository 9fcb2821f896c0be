"""The programme guide (XMLTV) without I/O: parse, filter to a tenant's lineup, now/next.

Guides from head-ends cover hundreds of channels; a tenant must only see its own, so the
served file is rebuilt from the kept ``<channel>`` and ``<programme>`` elements.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from xml.sax.saxutils import quoteattr

from media.tv import TvError


class GuideError(TvError):
    """A guide that cannot be read."""


@dataclass(frozen=True)
class Programme:
    channel: str
    start: float  # UTC seconds since the epoch
    stop: float
    title: str
    description: str = ""


def parse_xmltv_time(text: str) -> float:
    """'20261126193000 +0800' (offset optional, UTC when absent) -> UTC epoch seconds."""
    parts = text.strip().split()
    if not parts or len(parts[0]) < 12 or not parts[0][:14].isdigit():
        raise ValueError(f"bad XMLTV time {text!r}")
    digits = parts[0][:14].ljust(14, "0")
    tz: timezone = UTC
    if len(parts) > 1:
        off = parts[1]
        if len(off) != 5 or off[0] not in "+-" or not off[1:].isdigit():
            raise ValueError(f"bad XMLTV offset {off!r}")
        minutes = int(off[1:3]) * 60 + int(off[3:5])
        tz = timezone(timedelta(minutes=minutes if off[0] == "+" else -minutes))
    stamp = datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=tz)
    return stamp.timestamp()


@dataclass
class Guide:
    channels: dict[str, bytes] = field(default_factory=dict)  # id -> serialised <channel>
    programmes: dict[str, list[Programme]] = field(default_factory=dict)  # sorted by start
    _programme_xml: dict[str, list[bytes]] = field(default_factory=dict)
    _root_attrs: dict[str, str] = field(default_factory=dict)

    def filtered_xml(self, epg_ids: Iterable[str], mark: Callable[[Programme], str | None] | None = None) -> bytes:
        """The guide of ``epg_ids`` only. ``mark`` names the programmes that can be played
        from the start (catch-up): they get a ``catchup-id`` attribute (an extension Kodi's
        IPTV Simple reads) holding that value."""
        keep = [i for i in dict.fromkeys(epg_ids) if i]
        out = io.BytesIO()
        out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n')
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in self._root_attrs.items())
        out.write(f"<tv{attrs}>\n".encode())
        for cid in keep:
            if cid in self.channels:
                out.write(self.channels[cid])
        for cid in keep:
            programmes = self.programmes.get(cid, [])
            for programme, xml in zip(programmes, self._programme_xml.get(cid, []), strict=True):
                catchup_id = mark(programme) if mark is not None else None
                if catchup_id is not None:
                    xml = xml.replace(b"<programme ", f"<programme catchup-id={quoteattr(catchup_id)} ".encode(), 1)
                out.write(xml)
        out.write(b"</tv>\n")
        return out.getvalue()

    def now_next(self, epg_id: str, now: float) -> tuple[Programme | None, Programme | None]:
        current = upcoming = None
        for p in self.programmes.get(epg_id, []):
            if p.start <= now < p.stop:
                current = p
            elif p.start >= now:
                upcoming = p
                break
        return current, upcoming


def parse_xmltv(data: bytes) -> Guide:
    guide = Guide()
    try:
        events = ET.iterparse(io.BytesIO(data), events=("start", "end"))
        depth = 0
        for event, elem in events:
            if event == "start":
                depth += 1
                if depth == 1:
                    if elem.tag != "tv":
                        raise GuideError("not an XMLTV guide (root is not <tv>)")
                    guide._root_attrs = dict(elem.attrib)
                continue
            depth -= 1
            if depth != 1:
                continue
            if elem.tag == "channel" and elem.get("id"):
                elem.tail = "\n"
                guide.channels[elem.get("id", "")] = ET.tostring(elem, encoding="utf-8", xml_declaration=False)
            elif elem.tag == "programme":
                _add_programme(guide, elem)
            elem.clear()
    except ET.ParseError as exc:
        raise GuideError(f"guide is not well-formed XML: {exc}") from None
    for cid, items in guide.programmes.items():
        order = sorted(range(len(items)), key=lambda i: items[i].start)
        guide.programmes[cid] = fill_stops([items[i] for i in order])
        guide._programme_xml[cid] = [guide._programme_xml[cid][i] for i in order]
    return guide


def _add_programme(guide: Guide, elem: ET.Element) -> None:
    channel = elem.get("channel", "")
    try:
        start = parse_xmltv_time(elem.get("start", ""))
        stop = parse_xmltv_time(elem.get("stop", "")) if elem.get("stop") else start
    except ValueError:
        return
    if not channel:
        return
    programme = Programme(
        channel=channel,
        start=start,
        stop=stop,
        title=(elem.findtext("title") or "").strip(),
        description=(elem.findtext("desc") or "").strip(),
    )
    elem.tail = "\n"
    # An upstream guide's catch-up ids name the head-end's archive, not ours.
    elem.attrib.pop("catchup-id", None)
    guide.programmes.setdefault(channel, []).append(programme)
    guide._programme_xml.setdefault(channel, []).append(ET.tostring(elem, encoding="utf-8", xml_declaration=False))


def fill_stops(programmes: list[Programme]) -> list[Programme]:
    """Programmes without a stop end where the next one starts (XMLTV makes stop optional)."""
    out = []
    for i, p in enumerate(programmes):
        if p.stop <= p.start and i + 1 < len(programmes):
            p = Programme(p.channel, p.start, programmes[i + 1].start, p.title, p.description)
        out.append(p)
    return out


def to_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
