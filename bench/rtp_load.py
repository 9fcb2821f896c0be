"""G.711 load generator for bench/relay_bench.py (a separate process, so the relay's CPU
is measured alone).

Protocol on stdin/stdout, one JSON object per line:
  -> {"bind": true}                       <- {"a_port": P, "b_port": Q}
  -> {"run": {...}}                       <- {"result": {...}}

One socket plays every call's A phone, another every call's B phone. For each call,
every 20 ms, A sends a 172-byte PCMU RTP packet to its relay port and B to its own.
The payload carries (run, call, direction, send time): the receiver checks the packet
came from the call's relay port, counts loss and reordering per call and direction,
and histograms the one-way latency of packets sent in the measurement window.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time
from array import array

PTIME_NS = 20_000_000
SLOTS = 20  # calls are spread over 20 slots of 1 ms so the load is smooth
PAYLOAD = 160
HIST_BIN_US = 10
HIST_BINS = 200_000  # up to 2 s; later ones land in the last bin
_HEADER = struct.Struct("!BBHII")  # RTP: V/P/X/CC, M/PT, seq, ts, ssrc
_MARK = struct.Struct("!IIBQ")  # run, call, direction, send time (ns), at payload start


def _socket(rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def run(a_sock: socket.socket, b_sock: socket.socket, spec: dict) -> dict:
    run_id: int = spec["run_id"]
    calls: list[list[int]] = spec["calls"]  # [a_send_port, b_send_port, a_from_port, b_from_port]
    start_ns: int = spec["start_ns"]
    window_start = start_ns + int(spec["warmup_s"] * 1e9)
    window_end = window_start + int(spec["duration_s"] * 1e9)
    grace_ns = int(spec.get("grace_s", 1.0) * 1e9)
    n = len(calls)

    # Preallocated packets: one template per call and direction; only seq/ts/time change.
    templates = []
    for i in range(n):
        for direction in (0, 1):
            pkt = bytearray(12 + PAYLOAD)
            _HEADER.pack_into(pkt, 0, 0x80, 0, 0, 0, 0x10000 * direction + i)
            pkt[12 + _MARK.size :] = b"\xff" * (PAYLOAD - _MARK.size)
            templates.append(pkt)
    slots: list[list[int]] = [[] for _ in range(SLOTS)]
    for i in range(n):
        slots[i % SLOTS].append(i)
    seq = [0] * (2 * n)
    sent_window = 0
    recv_window = 0
    recv_total = 0
    sent_total = 0
    last_seq = [-1] * (2 * n)
    reordered = 0
    misdelivered = 0
    stale = 0
    hist = array("I", bytes(4 * HIST_BINS))
    # Expected relay source port per (call, direction of travel): A hears B's packets from a_from.
    expect_from = [0] * (2 * n)
    for i, (_a_to, _b_to, a_from, b_from) in enumerate(calls):
        expect_from[2 * i + 0] = b_from  # direction 0 (A->B) arrives at B from the B-side port
        expect_from[2 * i + 1] = a_from
    buf = bytearray(2048)
    mark_unpack = _MARK.unpack_from
    header_unpack = _HEADER.unpack_from
    ep = select.epoll()
    ep.register(a_sock.fileno(), select.EPOLLIN)
    ep.register(b_sock.fileno(), select.EPOLLIN)
    socks = {a_sock.fileno(): a_sock, b_sock.fileno(): b_sock}
    now_ns = time.monotonic_ns
    a_send, b_send = a_sock.sendto, b_sock.sendto
    tick = 0
    next_tick = start_ns
    stop_sending = window_end
    end = window_end + grace_ns
    while True:
        now = now_ns()
        if now >= end:
            break
        if now >= next_tick and next_tick < stop_sending:
            for i in slots[tick % SLOTS]:
                a_to, b_to = calls[i][0], calls[i][1]
                for direction in (0, 1):
                    k = 2 * i + direction
                    pkt = templates[k]
                    s = seq[k]
                    seq[k] = s + 1
                    t = now_ns()
                    struct.pack_into("!HI", pkt, 2, s & 0xFFFF, (s * 160) & 0xFFFFFFFF)
                    _MARK.pack_into(pkt, 12, run_id, i, direction, t)
                    try:
                        if direction == 0:
                            a_send(pkt, ("127.0.0.1", a_to))
                        else:
                            b_send(pkt, ("127.0.0.1", b_to))
                    except OSError:
                        continue
                    sent_total += 1
                    if window_start <= t < window_end:
                        sent_window += 1
            tick += 1
            next_tick = start_ns + tick * (PTIME_NS // SLOTS)
            now = now_ns()
        # Even when behind schedule, look at what arrived between two slots (poll(0)):
        # a generator that only sends would make the relay look slow.
        wait_ns = (next_tick if next_tick < stop_sending else end) - now
        for fd, _ in ep.poll(max(wait_ns, 0) / 1e9):
            sock = socks[fd]
            recv = sock.recvfrom_into
            is_a = sock is a_sock
            while True:
                try:
                    size, source = recv(buf)
                except BlockingIOError:
                    break
                arrived = now_ns()
                if size < 12 + _MARK.size:
                    misdelivered += 1
                    continue
                _b0, _b1, pkt_seq, _ts, _ssrc = header_unpack(buf)
                r, i, direction, sent_at = mark_unpack(buf, 12)
                if r != run_id:
                    stale += 1
                    continue
                k = 2 * i + direction
                if i >= n or is_a != (direction == 1) or source[1] != expect_from[k]:
                    misdelivered += 1
                    continue
                recv_total += 1
                # 16-bit sequence numbers wrap after ~22 minutes at 50 pps: runs are shorter.
                if pkt_seq <= last_seq[k]:
                    reordered += 1
                last_seq[k] = pkt_seq
                if window_start <= sent_at < window_end:
                    recv_window += 1
                    b = (arrived - sent_at) // (1000 * HIST_BIN_US)
                    hist[b if b < HIST_BINS else HIST_BINS - 1] += 1
    ep.close()
    return {
        "sent_total": sent_total,
        "recv_total": recv_total,
        "sent_window": sent_window,
        "recv_window": recv_window,
        "reordered": reordered,
        "misdelivered": misdelivered,
        "stale": stale,
        "hist": {str(i): c for i, c in enumerate(hist) if c},
        "hist_bin_us": HIST_BIN_US,
    }


def main() -> int:
    a_sock = b_sock = None
    for line in sys.stdin:
        msg = json.loads(line)
        if "bind" in msg:
            a_sock, b_sock = _socket(32 << 20), _socket(32 << 20)
            reply = {"a_port": a_sock.getsockname()[1], "b_port": b_sock.getsockname()[1]}
        elif "run" in msg and a_sock is not None and b_sock is not None:
            reply = {"result": run(a_sock, b_sock, msg["run"])}
        else:
            reply = {"error": f"unexpected {msg!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
