"""Deterministic mutations of real SIP messages, for fuzzing the gateway.

Each mutation is a small function ``(data, rng) -> bytes`` that damages a message the
way broken phones, truncating links and attackers do; ``Mutator.next()`` applies one to
three of them to a random seed message.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MAX_DATAGRAM = 65000

_INTERESTING = [
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b" ",
    b"\t",
    b'"',
    b"\\",
    b"<",
    b">",
    b";",
    b",",
    b":",
    b"%",
    b"%0",
    b"@",
    b"?",
    b"=",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\r\n ",
    b"SIP/2.0",
    b"z9hG4bK",
]
_NUMBERS = [b"-1", b"0", b"00000000000000000000001", b"4294967296", b"99999999999999999999999999", b"1e9", b"0x10", b""]
_HEADERS = [
    b"Via",
    b"v",
    b"From",
    b"f",
    b"To",
    b"t",
    b"Call-ID",
    b"i",
    b"CSeq",
    b"Contact",
    b"m",
    b"Content-Length",
    b"l",
    b"Content-Type",
    b"c",
    b"Max-Forwards",
    b"Expires",
    b"Require",
    b"Route",
    b"Record-Route",
    b"Authorization",
    b"Proxy-Authorization",
    b"Session-ID",
]

Mutation = Callable[[bytes, random.Random], bytes]


def seed_messages() -> list[bytes]:
    """Real captures (baresip, sipp) and the RFC 4475 torture set."""
    paths = sorted((FIXTURES / "sip").glob("*.bin")) + sorted((FIXTURES / "rfc4475").glob("*.dat"))
    return [p.read_bytes() for p in paths]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body if sep else b""


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_bytes(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def insert_interesting(data: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(data) + 1)
    return data[:i] + rng.choice(_INTERESTING) * rng.randint(1, 3) + data[i:]


def delete_span(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 32) :]


def repeat_span(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    span = data[i : i + rng.randint(1, 64)]
    return data[:i] + span * rng.randint(2, 200) + data[i:]


def duplicate_header(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    lines[i + 1 : i + 1] = [lines[i]] * rng.choice([1, 1, 2, 10, 300])
    return _join(lines, body)


def drop_line(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    if len(lines) < 2:
        return data
    del lines[rng.randrange(len(lines))]
    return _join(lines, body)


def swap_lines(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    if len(lines) < 2:
        return data
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return _join(lines, body)


def huge_value(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    if len(lines) < 2:
        return data
    i = rng.randrange(1, len(lines))
    name = lines[i].split(b":", 1)[0]
    filler = rng.choice([b"a", b"9", b"%41", b";x", b",<sip:a@b>", b" ", b'"'])
    lines[i] = name + b": " + filler * rng.choice([100, 1000, 9000, 30000])
    return _join(lines, body)


def huge_number(data: bytes, rng: random.Random) -> bytes:
    return re.sub(rb"\d+", lambda m: rng.choice(_NUMBERS) if rng.random() < 0.3 else m[0], data)


def bad_content_length(data: bytes, rng: random.Random) -> bytes:
    value = rng.choice([*_NUMBERS, b"five", str(rng.randrange(100000)).encode(), b"10, 20"])
    mutated, n = re.subn(rb"(?im)^(content-length|l)[ \t]*:[^\r\n]*", b"Content-Length: " + value, data, count=1)
    if n == 0 or rng.random() < 0.2:
        lines, body = _lines(mutated)
        lines.insert(rng.randrange(1, len(lines) + 1), b"Content-Length: " + rng.choice(_NUMBERS))
        return _join(lines, body)
    return mutated


def add_header(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    name = rng.choice(_HEADERS)
    value = bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 80)))
    lines.insert(rng.randrange(1, len(lines) + 1), name + b":" + value)
    return _join(lines, body)


def many_headers(data: bytes, rng: random.Random) -> bytes:
    lines, body = _lines(data)
    lines[1:1] = [b"X-Fuzz-%d: %d" % (n, n) for n in range(rng.choice([127, 129, 1000, 3000]))]
    return _join(lines, body)


def fold(data: bytes, rng: random.Random) -> bytes:
    spaces = [m.start() for m in re.finditer(rb"[ ;,:]", data.partition(b"\r\n\r\n")[0])]
    if not spaces:
        return data
    i = rng.choice(spaces)
    return data[:i] + b"\r\n" + rng.choice([b" ", b"\t", b"   "]) + data[i:]


def start_line(data: bytes, rng: random.Random) -> bytes:
    first, sep, rest = data.partition(b"\r\n")
    choices = [
        b"INVITE sip:a@b SIP/2.0",
        b"SIP/2.0 200 OK",
        b"SIP/2.0 99 Weird",
        b"SIP/2.0 700 Beyond",
        b"SIP/3.0 200 OK",
        b"ACK sip:a@b SIP/2.0",
        b"CANCEL sip:a@b SIP/2.0",
        b"BYE sip:a@b SIP/2.0",
        b"REGISTER sip:b SIP/2.0",
        b"OPTIONS * SIP/2.0",
        b"GET / HTTP/1.1",
        first.replace(b" ", b"  "),
        first + b" ",
        b"",
    ]
    return rng.choice(choices) + sep + rest


def splice(data: bytes, rng: random.Random, others: Sequence[bytes] = ()) -> bytes:
    if not others:
        return data
    other = rng.choice(others)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def random_bytes(data: bytes, rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 64, 512, 1400])))


MUTATIONS: list[Mutation] = [
    flip_bits,
    set_bytes,
    truncate,
    insert_interesting,
    delete_span,
    repeat_span,
    duplicate_header,
    drop_line,
    swap_lines,
    huge_value,
    huge_number,
    bad_content_length,
    add_header,
    many_headers,
    fold,
    start_line,
    random_bytes,
]


class Mutator:
    def __init__(self, seeds: Sequence[bytes], rng: random.Random) -> None:
        self.seeds = list(seeds)
        self.rng = rng

    def next(self) -> bytes:
        rng = self.rng
        data = rng.choice(self.seeds)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            if rng.random() < 0.05:
                data = splice(data, rng, self.seeds)
            else:
                data = rng.choice(MUTATIONS)(data, rng)
        return data[:MAX_DATAGRAM]
