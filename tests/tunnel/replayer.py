"""An attacker on the wire: captures tunnel datagrams leaving an interface, then replays them
and sends tampered copies (a fresh sequence number, a flipped ciphertext byte).

    python -m tests.tunnel.replayer IFACE PORT --count N     (prints a JSON summary)
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def capture(ifname: str, port: int, count: int) -> list[tuple[str, bytes]]:
    # Only ETH_P_ALL taps see outgoing frames.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.settimeout(20)
    out: list[tuple[str, bytes]] = []
    while len(out) < count:
        frame, addr = sock.recvfrom(65535)
        if addr[2] != PACKET_OUTGOING:
            continue
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or ip[9] != 17:  # IPv4, UDP
            continue
        ihl = (ip[0] & 0x0F) * 4
        dst = socket.inet_ntoa(ip[16:20])
        _, dport, length, _ = struct.unpack("!HHHH", ip[ihl : ihl + 8])
        if dport == port:
            out.append((dst, ip[ihl + 8 : ihl + length]))
    sock.close()
    return out


def tamper(datagram: bytes) -> bytes:
    frame = bytearray(datagram)
    seq = int.from_bytes(frame[6:12], "big") + (1 << 40)
    frame[6:12] = (seq & ((1 << 48) - 1)).to_bytes(6, "big")
    frame[-1] ^= 0x01
    return bytes(frame)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("ifname")
    parser.add_argument("port", type=int)
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args(argv)
    captured = capture(args.ifname, args.port, args.count)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for dst, datagram in captured:
        sender.sendto(datagram, (dst, args.port))
        sender.sendto(tamper(datagram), (dst, args.port))
    sender.close()
    print(json.dumps({"replayed": len(captured), "tampered": len(captured)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
