"""SIP parser benchmark: messages parsed per second, against a naive split-only parse.

    PYTHONPATH=. .venv/bin/python bench/sip_parse_bench.py [--seconds 0.5]

For each message of a call set-up and a registration (INVITE with Proxy-Authorization and
SDP, 100, 180 and 200 with Record-Route and Contact, ACK, BYE, REGISTER with Authorization
and its 200) it times, in this process:
  - naive: split the head into lines and each line at ":" into a dict (no validation);
    the floor any real parser stands on, measured in the same run as the baseline;
  - parse: ``parse_message``, the full strict parse;
  - parse+read: ``parse_message`` then the accessors the SIP stack reads on every message
    (top Via, From, To, CSeq, Call-ID, Contacts).
Each row prints microseconds per message and messages/s; the ratio column is how many
times slower than the naive split the strict parse is.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.sip.message import Request, Response  # noqa: E402
from gateway.sip.parser import DEFAULT_LIMITS, parse_message  # noqa: E402

SDP = (
    b"v=0\r\no=alice 53655765 2353687637 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
)


def _msg(start: str, headers: list[str], body: bytes = b"") -> bytes:
    head = "\r\n".join([start, *headers, f"Content-Length: {len(body)}"])
    return head.encode() + b"\r\n\r\n" + body


_VIA = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport"
_VIA_PROXY = "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK83749.1;received=198.51.100.1"
_FROM = 'From: "Alice Example" <sip:alice@acme.example>;tag=1928301774'
_TO = "To: <sip:bob@acme.example>"
_TO_TAGGED = "To: <sip:bob@acme.example>;tag=a6c85cf"
_CALL_ID = "Call-ID: a84b4c76e66710@pc33.acme.example"
_RR = "Record-Route: <sip:198.51.100.1;lr>, <sip:203.0.113.7;lr;transport=udp>"

MESSAGES: dict[str, bytes] = {
    "INVITE+auth+SDP": _msg(
        "INVITE sip:bob@acme.example SIP/2.0",
        [
            _VIA,
            "Max-Forwards: 70",
            _FROM,
            _TO,
            _CALL_ID,
            "CSeq: 2 INVITE",
            "Contact: <sip:alice@192.0.2.10:5060;transport=udp>",
            'Proxy-Authorization: Digest username="alice", realm="acme.example", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:bob@acme.example", '
            'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, nc=00000001, '
            'cnonce="0a4f113b"',
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY",
            "Supported: replaces, timer",
            "User-Agent: Phone/1.2.3",
            "Content-Type: application/sdp",
        ],
        SDP,
    ),
    "100 Trying": _msg(
        "SIP/2.0 100 Trying",
        [_VIA, _FROM, _TO, _CALL_ID, "CSeq: 2 INVITE", "Server: Seabridge"],
    ),
    "180 Ringing+RR": _msg(
        "SIP/2.0 180 Ringing",
        [
            _VIA_PROXY,
            _VIA,
            _RR,
            _FROM,
            _TO_TAGGED,
            _CALL_ID,
            "CSeq: 2 INVITE",
            "Contact: <sip:bob@203.0.113.20:5060>",
        ],
    ),
    "200 OK+RR+SDP": _msg(
        "SIP/2.0 200 OK",
        [
            _VIA_PROXY,
            _VIA,
            _RR,
            _FROM,
            _TO_TAGGED,
            _CALL_ID,
            "CSeq: 2 INVITE",
            "Contact: <sip:bob@203.0.113.20:5060>",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS",
            "Supported: timer",
            "Content-Type: application/sdp",
        ],
        SDP,
    ),
    "ACK": _msg(
        "ACK sip:bob@203.0.113.20:5060 SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---ffeeddcc;rport",
            "Route: <sip:198.51.100.1;lr>, <sip:203.0.113.7;lr;transport=udp>",
            "Max-Forwards: 70",
            _FROM,
            _TO_TAGGED,
            _CALL_ID,
            "CSeq: 2 ACK",
        ],
    ),
    "BYE": _msg(
        "BYE sip:bob@203.0.113.20:5060 SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---99887766;rport",
            "Route: <sip:198.51.100.1;lr>, <sip:203.0.113.7;lr;transport=udp>",
            "Max-Forwards: 70",
            _FROM,
            _TO_TAGGED,
            _CALL_ID,
            "CSeq: 3 BYE",
        ],
    ),
    "REGISTER+auth": _msg(
        "REGISTER sip:acme.example SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport",
            "Max-Forwards: 70",
            "From: <sip:alice@acme.example>;tag=456248",
            "To: <sip:alice@acme.example>",
            "Call-ID: 843817637684230@998sdasdh09",
            "CSeq: 1826 REGISTER",
            "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600;"
            '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
            'Authorization: Digest username="alice", realm="acme.example", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:acme.example", '
            'response="6629fae49393a05397450978507c4ef1", algorithm=MD5',
            "Expires: 3600",
            "User-Agent: Phone/1.2.3",
        ],
    ),
    "200 OK REGISTER": _msg(
        "SIP/2.0 200 OK",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds7;rport=5060;received=192.0.2.10",
            "From: <sip:alice@acme.example>;tag=456248",
            "To: <sip:alice@acme.example>;tag=2493k59kd",
            "Call-ID: 843817637684230@998sdasdh09",
            "CSeq: 1826 REGISTER",
            "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600",
            "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        ],
    ),
}


def naive_parse(data: bytes) -> dict[str, str]:
    head, _, _body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


def parse_and_read(data: bytes) -> object:
    msg = parse_message(data, DEFAULT_LIMITS)
    return (msg.top_via, msg.from_, msg.to, msg.cseq, msg.call_id, msg.contacts)


def rate(fn: Callable[[bytes], object], data: bytes, seconds: float, rounds: int = 7) -> tuple[float, int]:
    """Microseconds per call, best of ``rounds`` rounds sharing ``seconds`` (the least
    disturbed by other processes), and the number of calls made."""
    n = 1
    while True:  # calibrate: how many calls last 10 ms
        t0 = time.perf_counter()
        for _ in range(n):
            fn(data)
        if time.perf_counter() - t0 > 0.01:
            break
        n *= 2
    per_round = max(1, int(n * (seconds / rounds) / 0.01))
    best = float("inf")
    total = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            fn(data)
        best = min(best, time.perf_counter() - t0)
        total += per_round
    return best / per_round * 1e6, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="time spent per message and parser")
    args = ap.parse_args()

    for name, data in MESSAGES.items():  # every sample must be one the parser accepts
        msg = parse_message(data)
        assert isinstance(msg, (Request, Response)), name
        if len(naive_parse(data)) < 5:
            print(f"FAIL: naive baseline read no headers from {name}", file=sys.stderr)
            return 1

    columns = ("naive us", 9), ("parse us", 9), ("ratio", 6), ("parse+read us", 14), ("msgs/s", 9)
    print(f"{'message':18} {'bytes':>5} " + " ".join(f"{title:>{width}}" for title, width in columns))
    sums = [0.0, 0.0, 0.0]
    for name, data in MESSAGES.items():
        naive_us, naive_calls = rate(naive_parse, data, args.seconds)
        if naive_calls == 0 or naive_us <= 0:
            print(f"FAIL: naive baseline did no work on {name}", file=sys.stderr)
            return 1
        parse_us, _ = rate(lambda d: parse_message(d, DEFAULT_LIMITS), data, args.seconds)
        read_us, _ = rate(parse_and_read, data, args.seconds)
        sums[0] += naive_us
        sums[1] += parse_us
        sums[2] += read_us
        print(
            f"{name:18} {len(data):5d} {naive_us:9.2f} {parse_us:9.2f} {parse_us / naive_us:6.1f}"
            f" {read_us:14.2f} {1e6 / read_us:9.0f}"
        )
    n = len(MESSAGES)
    print(
        f"{'mean':18} {'':5} {sums[0] / n:9.2f} {sums[1] / n:9.2f} {sums[1] / sums[0]:6.1f}"
        f" {sums[2] / n:14.2f} {n * 1e6 / sums[2]:9.0f}"
    )
    print(f"naive split: {n * 1e6 / sums[0]:.0f} msgs/s; strict parse+read: {n * 1e6 / sums[2]:.0f} msgs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
