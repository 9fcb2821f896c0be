"""HLS segmenting decisions on a continuous MPEG-TS stream, without I/O.

Fed the muxer's output bytes and ``now``, it returns events in stream order: data to
append (to the open segment and to HTTP-TS viewers), segment boundaries and random
access points. Cuts fall on video keyframes once a segment is at least ``target``
seconds long; a feed without keyframes is cut anyway at ``maximum`` seconds.

Every segment starts with a PAT and a PMT so it decodes on its own. When the muxer
already sent them just before the keyframe (FFmpeg does), the cut goes before them;
otherwise copies are inserted. This layer owns the continuity counters of the PAT and
PMT PIDs so inserted copies never show up as continuity errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media.tv.ts import (
    AUDIO_STREAM_TYPES,
    PACKET_SIZE,
    PAT_PID,
    SDT_PID,
    TS_CLOCK,
    SectionAssembler,
    TsFormatError,
    TsFramer,
    TsPacket,
    Unwrapper,
    is_keyframe_payload,
    parse_pat,
    parse_pes_header,
    parse_pmt,
    with_cc,
)


@dataclass(frozen=True)
class DataProduced:
    data: bytes


@dataclass(frozen=True)
class SegmentOpened:
    seq: int
    opened_at: float  # the `now` of the feed that opened it
    discontinuity: bool  # the stream was restarted: players must reset their decoders
    keyframe: bool  # False when cut without a keyframe (feed with missing keyframes)


@dataclass(frozen=True)
class SegmentClosed:
    seq: int
    duration: float  # seconds of media


@dataclass(frozen=True)
class RandomAccessReached:
    """Data from here on decodes on its own once prefixed with ``psi`` (PAT + PMT)."""

    psi: bytes


SegmenterEvent = DataProduced | SegmentOpened | SegmentClosed | RandomAccessReached


@dataclass
class Segmenter:
    target: float
    maximum: float
    first_seq: int = 0
    # The first segment follows another stream (a restarted channel): mark it.
    discontinuity_first: bool = False
    # Strict players (Safari, Chromium's own HLS, many set-top boxes) start only once a live
    # playlist lists three segments: cut the first few short, on any keyframe after
    # startup_target, so a channel that was just started is watchable sooner.
    startup_segments: int = 0
    startup_target: float = 1.0
    _framer: TsFramer = field(default_factory=TsFramer)
    _pat: SectionAssembler = field(default_factory=SectionAssembler)
    _pmt: SectionAssembler = field(default_factory=SectionAssembler)
    _pmt_pid: int | None = None
    _timing_pid: int | None = None
    _timing_type: int = 0
    _timing_is_video: bool = False
    _psi_packets: dict[int, list[bytes]] = field(default_factory=dict)  # pid -> latest table
    _psi_cc: dict[int, int] = field(default_factory=dict)
    _pending: list[bytes] = field(default_factory=list)  # PSI run since the last other packet
    _seq: int | None = None  # the open segment
    _next_seq: int = 0
    _opened: int = 0
    _seg_start: int = 0
    _last_ts: int | None = None
    _first_ts: int | None = None
    _frame: int = 0
    _unwrap: Unwrapper = field(default_factory=Unwrapper)
    _discontinuity: bool = False
    _out: bytearray = field(default_factory=bytearray)
    _events: list[SegmenterEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._next_seq = self.first_seq
        self._discontinuity = self.discontinuity_first

    @property
    def open_seq(self) -> int | None:
        return self._seq

    def feed(self, data: bytes, now: float) -> list[SegmenterEvent]:
        chunk = self._framer.feed(data)
        # Most packets need no look: copy runs of them at once, stop only at PSI and at
        # the start of a timing-stream PES.
        run = 0
        for off in range(0, len(chunk), PACKET_SIZE):
            b1 = chunk[off + 1]
            pid = ((b1 & 0x1F) << 8) | chunk[off + 2]
            if pid == PAT_PID or pid == self._pmt_pid or pid == SDT_PID or (pid == self._timing_pid and b1 & 0x40):
                if run < off:
                    self._flush_pending()
                    self._out += chunk[run:off]
                self._packet(chunk[off : off + PACKET_SIZE], now)
                run = off + PACKET_SIZE
        if run < len(chunk):
            self._flush_pending()
            self._out += chunk[run:]
        return self._take()

    def restart(self) -> list[SegmenterEvent]:
        """The muxer restarted (new stream layout): close the open segment; the next
        keyframe opens a fresh one marked as a discontinuity."""
        events = self.close()
        self._framer.reset()
        self._pat = SectionAssembler()
        self._pmt = SectionAssembler()
        self._pmt_pid = self._timing_pid = None
        self._psi_packets.clear()
        self._unwrap = Unwrapper()
        self._last_ts = self._first_ts = None
        self._discontinuity = True
        return events

    def close(self) -> list[SegmenterEvent]:
        """End of stream: emit what is held and close the open segment."""
        self._flush_pending()
        if self._seq is not None:
            self._close_segment(self._duration_to(None))
            self._next_seq = self._seq + 1
            self._seq = None
        return self._take()

    # -- per packet ---------------------------------------------------------------------------

    def _packet(self, packet: bytes, now: float) -> None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid == PAT_PID or pid == self._pmt_pid:
            self._psi(pid, packet)
            return
        if pid == SDT_PID:
            self._pending.append(packet)
            return
        if pid == self._timing_pid and packet[1] & 0x40:
            self._pes_start(packet, now)
        self._flush_pending()
        self._out += packet

    def _psi(self, pid: int, packet: bytes) -> None:
        try:
            parsed = TsPacket.parse(packet)
        except TsFormatError:
            return
        assembler = self._pat if pid == PAT_PID else self._pmt
        try:
            sections = assembler.feed(parsed, packet)
        except (TsFormatError, IndexError):
            sections = []
        if parsed.pusi:
            self._psi_packets[pid] = []
        self._psi_packets.setdefault(pid, []).append(packet)
        for section in sections:
            self._table(pid, section)
        self._pending.append(self._stamp(pid, packet))

    def _table(self, pid: int, section: bytes) -> None:
        try:
            if pid == PAT_PID:
                programs = parse_pat(section)
                if programs:
                    self._pmt_pid = programs[min(programs)]
                return
            pmt = parse_pmt(section)
        except TsFormatError:
            return
        video = pmt.video
        timing = video or next((s for s in pmt.streams if s.stream_type in AUDIO_STREAM_TYPES), None)
        if timing is not None and timing.pid != self._timing_pid:
            self._timing_pid = timing.pid
            self._timing_type = timing.stream_type
            self._timing_is_video = video is not None

    def _stamp(self, pid: int, packet: bytes) -> bytes:
        cc = self._psi_cc.get(pid, packet[3] & 0x0F)
        self._psi_cc[pid] = (cc + 1) & 0x0F
        return packet if cc == packet[3] & 0x0F else with_cc(packet, cc)

    def _pes_start(self, packet: bytes, now: float) -> None:
        try:
            parsed = TsPacket.parse(packet)
            payload = packet[parsed.payload_offset :]
            header = parse_pes_header(payload)
        except TsFormatError:
            return
        raw = header.decode_ts
        if raw is None:
            return
        ts = self._unwrap(raw)
        if self._last_ts is not None and ts > self._last_ts:
            self._frame = ts - self._last_ts
        self._last_ts = ts
        keyframe = (
            not self._timing_is_video
            or parsed.random_access
            or is_keyframe_payload(self._timing_type, payload[header.payload_offset :])
        )
        if self._first_ts is None:
            self._first_ts = ts
        if self._seq is None:
            # Open the first segment on a keyframe, or anyway once a feed without them
            # has run for a whole segment's maximum.
            if keyframe or ts - self._first_ts >= self.maximum * TS_CLOCK:
                self._cut(ts, now, keyframe)
            return
        length = (ts - self._seg_start) / TS_CLOCK
        target = self.startup_target if self._opened <= self.startup_segments else self.target
        if (keyframe and length >= target) or length >= self.maximum:
            self._cut(ts, now, keyframe)
        elif keyframe:
            self._random_access()

    # -- cutting ------------------------------------------------------------------------------

    def _cut(self, ts: int, now: float, keyframe: bool) -> None:
        if self._seq is not None:
            self._close_segment(self._duration_to(ts))
            self._next_seq = self._seq + 1
        seq = self._next_seq
        self._seq = seq
        self._opened += 1
        self._seg_start = ts
        self._events.append(SegmentOpened(seq, now, self._discontinuity, keyframe))
        self._discontinuity = False
        self._ensure_psi()
        if keyframe:
            self._events.append(RandomAccessReached(b""))

    def _random_access(self) -> None:
        pending_pids = {((p[1] & 0x1F) << 8) | p[2] for p in self._pending}
        has_psi = PAT_PID in pending_pids and self._pmt_pid in pending_pids
        self._emit()
        self._events.append(RandomAccessReached(b"" if has_psi else self._psi_copy()))

    def _ensure_psi(self) -> None:
        """Make the pending run (which opens the segment) hold a PAT and a PMT."""
        pending_pids = {((p[1] & 0x1F) << 8) | p[2] for p in self._pending}
        missing = [pid for pid in (PAT_PID, self._pmt_pid) if pid is not None and pid not in pending_pids]
        inserted = [self._stamp(pid, p) for pid in missing for p in self._psi_packets.get(pid, [])]
        self._pending[:0] = inserted

    def _psi_copy(self) -> bytes:
        return b"".join(
            p for pid in (PAT_PID, self._pmt_pid) if pid is not None for p in self._psi_packets.get(pid, [])
        )

    def _duration_to(self, ts: int | None) -> float:
        end = ts if ts is not None else (self._last_ts or self._seg_start) + self._frame
        return max(0, end - self._seg_start) / TS_CLOCK

    def _close_segment(self, duration: float) -> None:
        self._emit()
        assert self._seq is not None
        self._events.append(SegmentClosed(self._seq, duration))

    # -- output -------------------------------------------------------------------------------

    def _flush_pending(self) -> None:
        if self._pending:
            for p in self._pending:
                self._out += p
            self._pending.clear()

    def _emit(self) -> None:
        if self._out:
            self._events.append(DataProduced(bytes(self._out)))
            self._out.clear()

    def _take(self) -> list[SegmenterEvent]:
        self._emit()
        events, self._events = self._events, []
        return events
