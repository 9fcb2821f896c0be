"""A naive B2BUA in flat Python: the floor for the signalling bench, not a product.

It does what the bench's call needs and nothing else: REGISTER with digest (MD5, no qop),
a 407 challenge on INVITE, a new B leg (own Call-ID, tags, Via and Contact) to the callee's
binding, provisional and final responses relayed to the caller, ACK and BYE carried across,
all in one process on one socket, with bytes split by hand and state in two dicts. It keeps
nothing on disk, anchors no media, rates nothing, sets no timers (no retransmissions of its
own: the bench runs on loopback, and sipp retransmits its side), and reads only the headers
sipp sends. What it measures is how cheap a Python event loop can make the SIP part of a
call set-up, to set beside Seabridge's cost for the same call with everything else it does.

    python bench/naive_b2bua.py --port 5060 --password secret
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import time

REALM = b"acme"


def md5(data: bytes) -> bytes:
    return hashlib.md5(data).hexdigest().encode()


def parse(data: bytes) -> tuple[bytes, dict[bytes, bytes], list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    vias: list[bytes] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"via":
            vias.append(value.strip())
        else:
            headers[name] = value.strip()
    return lines[0], headers, vias, body


def digest_params(value: bytes) -> dict[bytes, bytes]:
    out = {}
    for part in value[value.find(b" ") + 1 :].split(b","):
        key, _, val = part.strip().partition(b"=")
        out[key] = val.strip(b'"')
    return out


def uri_of(name_addr: bytes) -> bytes:
    start = name_addr.find(b"<")
    return name_addr[start + 1 : name_addr.find(b">", start)] if start >= 0 else name_addr.split(b";")[0]


def address_of(uri: bytes) -> tuple[str, int]:
    hostport = uri.split(b"@")[-1].split(b";")[0]
    if hostport.startswith(b"sip:"):
        hostport = hostport[4:]
    host, _, port = hostport.partition(b":")
    return host.decode(), int(port or 5060)


def with_tag(value: bytes, tag: bytes) -> bytes:
    cut = value.find(b";tag=")
    return (value if cut < 0 else value[:cut]) + b";tag=" + tag


def tag_of(value: bytes) -> bytes:
    cut = value.find(b";tag=")
    return value[cut + 5 :].split(b";")[0] if cut >= 0 else b""


def response(
    status: bytes, vias: list[bytes], h: dict[bytes, bytes], to: bytes, extra: bytes = b"", body: bytes = b""
) -> bytes:
    via = b"".join(b"Via: " + v + b"\r\n" for v in vias)
    return (
        b"SIP/2.0 " + status + b"\r\n" + via + b"From: " + h[b"from"] + b"\r\nTo: " + to
        + b"\r\nCall-ID: " + h[b"call-id"] + b"\r\nCSeq: " + h[b"cseq"] + b"\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


class Call:
    __slots__ = ("a_addr", "a_vias", "a_h", "a_tag", "b_call_id", "b_from", "b_to", "b_uri", "b_addr",
                 "answered", "ok", "acked", "bye", "invite", "bye_out")  # fmt: skip

    def __init__(self, a_addr: tuple[str, int], a_vias: list[bytes], a_h: dict[bytes, bytes], me: bytes) -> None:
        self.a_addr, self.a_vias, self.a_h = a_addr, a_vias, a_h
        self.a_tag = os.urandom(6).hex().encode()
        self.b_call_id = os.urandom(12).hex().encode() + b"@" + me
        self.b_from = with_tag(a_h[b"from"], os.urandom(6).hex().encode())
        self.b_to = a_h[b"to"]
        self.b_uri = b""
        self.b_addr = ("", 0)
        self.answered = False
        self.acked = False
        self.ok = b""  # our 200 to the caller, sent again for its retransmitted INVITE
        self.invite = b""  # our INVITE to the callee, sent again when the caller retransmits
        self.bye_out = b""
        self.bye: tuple[list[bytes], dict[bytes, bytes], tuple[str, int]] | None = None


class NaiveB2bua(asyncio.DatagramProtocol):
    def __init__(self, password: bytes, host: bytes, port: int) -> None:
        self.password = password
        self.me = b"%s:%d" % (host, port)
        self.secret = os.urandom(16)
        self.bindings: dict[bytes, tuple[bytes, tuple[str, int]]] = {}
        self.by_a: dict[bytes, Call] = {}
        self.by_b: dict[bytes, Call] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    def nonce(self) -> bytes:
        stamp = b"%x" % int(time.time())
        return stamp + hmac.new(self.secret, stamp, "md5").hexdigest().encode()

    def authorized(self, method: bytes, value: bytes | None) -> bytes | None:
        """The user a digest response proves, or None."""
        if not value:
            return None
        p = digest_params(value)
        nonce = p.get(b"nonce", b"")
        stamp = nonce[:-32]
        if not hmac.compare_digest(nonce[-32:], hmac.new(self.secret, stamp, "md5").hexdigest().encode()):
            return None
        if int(stamp or b"0", 16) < time.time() - 300:
            return None
        user = p.get(b"username", b"")
        ha1 = md5(user + b":" + p.get(b"realm", b"") + b":" + self.password)
        expected = md5(ha1 + b":" + nonce + b":" + md5(method + b":" + p.get(b"uri", b"")))
        return user if hmac.compare_digest(expected, p.get(b"response", b"")) else None

    def challenge(self, h: dict[bytes, bytes], vias: list[bytes], addr: tuple[str, int], proxy: bool) -> None:
        status, header = (b"407 Proxy Authentication Required", b"Proxy-Authenticate") if proxy else (
            b"401 Unauthorized", b"WWW-Authenticate")  # fmt: skip
        extra = header + b': Digest realm="' + REALM + b'", nonce="' + self.nonce() + b'"\r\n'
        self.send(response(status, vias, h, with_tag(h[b"to"], os.urandom(6).hex().encode()), extra), addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            start, h, vias, body = parse(data)
            if start.startswith(b"SIP/2.0 "):
                self.on_response(start, h, body)
            else:
                self.on_request(start, h, vias, body, addr)
        except (KeyError, ValueError, IndexError):
            pass  # naive: what it cannot read, it drops

    def on_request(
        self, start: bytes, h: dict[bytes, bytes], vias: list[bytes], body: bytes, addr: tuple[str, int]
    ) -> None:
        method = start.split(b" ", 1)[0]
        call_id = h[b"call-id"]
        if method == b"REGISTER":
            user = self.authorized(method, h.get(b"authorization"))
            if user is None:
                return self.challenge(h, vias, addr, proxy=False)
            contact = uri_of(h[b"contact"])
            if h.get(b"expires") == b"0":
                self.bindings.pop(user, None)
            else:
                self.bindings[user] = (contact, address_of(contact))
            extra = b"Contact: <" + contact + b">;expires=" + h.get(b"expires", b"3600") + b"\r\n"
            return self.send(response(b"200 OK", vias, h, with_tag(h[b"to"], b"r"), extra), addr)
        if method == b"INVITE":
            call = self.by_a.get(call_id)
            if call is not None:  # a retransmission: ours go with the caller's (we set no timers)
                if call.ok:
                    self.send(call.ok, call.a_addr)
                else:
                    self.send(call.invite, call.b_addr)
                return
            if self.authorized(method, h.get(b"proxy-authorization")) is None:
                return self.challenge(h, vias, addr, proxy=True)
            a_to = h[b"to"]
            self.send(response(b"100 Trying", vias, h, a_to), addr)
            binding = self.bindings.get(uri_of(a_to)[4:].split(b"@")[0])
            if binding is None:
                return self.send(response(b"404 Not Found", vias, h, with_tag(a_to, b"x")), addr)
            call = Call(addr, vias, h, self.me)
            call.b_uri, call.b_addr = binding
            self.by_a[call_id] = call
            self.by_b[call.b_call_id] = call
            call.invite = self.request(call, b"INVITE", b"1", b"Content-Type: application/sdp\r\n", body)
            self.send(call.invite, call.b_addr)
            return None
        call = self.by_a.get(call_id)
        if method == b"ACK":
            if call is not None and call.answered and tag_of(h[b"to"]) == call.a_tag and not call.acked:
                call.acked = True
                self.send(self.request(call, b"ACK", b"1"), call.b_addr)
            return None
        if method == b"BYE":
            if call is None:
                return self.send(response(b"481 Call Does Not Exist", vias, h, h[b"to"]), addr)
            if call.bye is None:
                call.bye = (vias, h, addr)
                call.bye_out = self.request(call, b"BYE", b"2")
            self.send(call.bye_out, call.b_addr)
            return None
        self.send(response(b"405 Method Not Allowed", vias, h, with_tag(h[b"to"], b"x")), addr)
        return None

    def request(self, call: Call, method: bytes, cseq: bytes, extra: bytes = b"", body: bytes = b"") -> bytes:
        return (
            method + b" " + call.b_uri + b" SIP/2.0\r\nVia: SIP/2.0/UDP " + self.me + b";branch=z9hG4bK"
            + os.urandom(8).hex().encode() + b";rport\r\nMax-Forwards: 70\r\nFrom: " + call.b_from + b"\r\nTo: "
            + call.b_to + b"\r\nCall-ID: " + call.b_call_id + b"\r\nCSeq: " + cseq + b" " + method
            + b"\r\nContact: <sip:b2bua@" + self.me + b">\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )  # fmt: skip

    def on_response(self, start: bytes, h: dict[bytes, bytes], body: bytes) -> None:
        call = self.by_b.get(h[b"call-id"])
        if call is None:
            return
        status = int(start[8:11])
        method = h[b"cseq"].split()[-1]
        a_to = with_tag(call.a_h[b"to"], call.a_tag)
        if method == b"INVITE":
            if status == 100 or call.answered:
                if call.acked and status == 200:  # the callee missed our ACK
                    self.send(self.request(call, b"ACK", b"1"), call.b_addr)
                return
            if status < 200:
                self.send(response(start[8:], call.a_vias, call.a_h, a_to), call.a_addr)
                return
            if status < 300:
                call.answered = True
                call.b_to = h[b"to"]
                call.b_uri = uri_of(h[b"contact"])
                call.b_addr = address_of(call.b_uri)
                extra = b"Contact: <sip:b2bua@" + self.me + b">\r\nContent-Type: application/sdp\r\n"
                call.ok = response(start[8:], call.a_vias, call.a_h, a_to, extra, body)
                self.send(call.ok, call.a_addr)
                return
            self.send(self.request(call, b"ACK", b"1"), call.b_addr)
            self.send(response(start[8:], call.a_vias, call.a_h, a_to), call.a_addr)
        elif method == b"BYE" and call.bye is not None:
            vias, bye_h, addr = call.bye
            self.send(response(b"200 OK", vias, bye_h, bye_h[b"to"]), addr)
        else:
            return
        self.by_a.pop(call.a_h[b"call-id"], None)
        self.by_b.pop(call.b_call_id, None)


async def serve(host: str, port: int, password: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(
        lambda: NaiveB2bua(password.encode(), host.encode(), port), local_addr=(host, port)
    )
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(args.host, args.port, args.password))


if __name__ == "__main__":
    main()
