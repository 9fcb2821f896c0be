"""Media keys: derivation from the control channel's TLS exporter, rotation with an overlap window.

Each generation of keys mixes two secrets through HKDF-SHA256:

- the RFC 5705 exporter of the TLS 1.3 control session (context = the generation
  number), which binds the keys to that authenticated session, and
- a fresh X25519 exchange carried in the rekey messages, so that a rotation gives
  forward secrecy even within one long-lived TLS session.

The rotation, driven by the link's initiator (the side with the lexically smaller
node name, so both sides agree without a connection role):

    initiator                                     responder
    RekeyOffer(gen, key id I wants, pub_i)  ->    installs receive key (its key id R)
                                            <-    RekeyAnswer(gen, R, pub_r)
    installs receive key, sends with new key
    RekeyDone(gen)                          ->    sends with new key

Each side installs a receive key before the other may use it, so no frame is sent
under a key its receiver lacks. Old receive keys stay valid for ``overlap`` seconds
after a newer one is installed: frames in flight (600 ms on satellite, queued TV
retransmissions) still decrypt.

Key ids are chosen by the receiver from a node-wide ``KeyIdAllocator`` so that one
UDP socket can demultiplex every peer by key id.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.tunnel.aead import IV_SIZE, KEY_SIZE, PacketKey
from gateway.tunnel.control import RekeyAnswer, RekeyDone, RekeyOffer
from gateway.tunnel.errors import ControlProtocolError
from gateway.tunnel.replay import ReplayWindow

EXPORTER_LABEL = b"EXPORTER-seabridge-tunnel-v1"
EXPORTER_LENGTH = 32
# GCM stays far inside its bounds well before this; it also keeps 48-bit sequences small.
MAX_PACKETS_PER_KEY = 1 << 32

Exporter = Callable[[bytes], bytes]
"""``exporter(context) -> 32 bytes`` of RFC 5705 keying material from the live TLS session."""


class KeyIdAllocator:
    """Hands out receive key ids that are unique on this node (0 is never used)."""

    def __init__(self) -> None:
        self._used: set[int] = set()

    def allocate(self) -> int:
        while True:
            key_id = secrets.randbits(32)
            if key_id and key_id not in self._used:
                self._used.add(key_id)
                return key_id

    def release(self, key_id: int) -> None:
        self._used.discard(key_id)


@dataclass(frozen=True)
class KeyMaterial:
    initiator_to_responder: tuple[bytes, bytes]
    responder_to_initiator: tuple[bytes, bytes]


def derive(exporter_secret: bytes, shared_secret: bytes) -> KeyMaterial:
    size = KEY_SIZE + IV_SIZE
    okm = HKDF(hashes.SHA256(), 2 * size, salt=exporter_secret, info=b"seabridge tunnel media keys v1").derive(
        shared_secret
    )
    i2r, r2i = okm[:size], okm[size:]
    return KeyMaterial((i2r[:KEY_SIZE], i2r[KEY_SIZE:]), (r2i[:KEY_SIZE], r2i[KEY_SIZE:]))


class SendKey:
    __slots__ = ("key_id", "generation", "key", "next_seq", "installed_at")

    def __init__(self, key_id: int, generation: int, key: PacketKey, installed_at: float) -> None:
        self.key_id = key_id
        self.generation = generation
        self.key = key
        self.next_seq = 0
        self.installed_at = installed_at


class ReceiveKey:
    __slots__ = ("key_id", "generation", "key", "window", "expires_at")

    def __init__(self, key_id: int, generation: int, key: PacketKey, window_size: int) -> None:
        self.key_id = key_id
        self.generation = generation
        self.key = key
        self.window = ReplayWindow(window_size)
        self.expires_at: float | None = None


@dataclass
class _Pending:
    generation: int
    private: X25519PrivateKey
    receive_key_id: int
    send: SendKey | None = None  # responder: the key it switches to on RekeyDone


class KeyManager:
    """One link's send key and receive keys, and its side of the rekey exchange."""

    def __init__(
        self,
        *,
        initiator: bool,
        allocator: KeyIdAllocator,
        overlap: float = 30.0,
        interval: float = 3600.0,
        window_size: int = 8192,
    ) -> None:
        self.initiator = initiator
        self._allocator = allocator
        self.overlap = overlap
        self.interval = interval
        self._window_size = window_size
        self._exporter: Exporter | None = None
        self.send_key: SendKey | None = None
        self.receive_keys: dict[int, ReceiveKey] = {}
        self._pending: _Pending | None = None
        self._generation = int.from_bytes(os.urandom(2), "big")
        self.rotations = 0

    # -- the control session

    def attach(self, exporter: Exporter) -> None:
        """A (new) TLS control session is up; keys of the next generations derive from it."""
        self._exporter = exporter
        self._pending = None

    def detach(self) -> None:
        """The control session is gone: current keys stay in use until the next one rekeys."""
        self._exporter = None
        self._pending = None

    @property
    def rekey_in_progress(self) -> bool:
        return self._pending is not None

    # -- the exchange

    def start_rekey(self) -> RekeyOffer:
        if not self.initiator:
            raise ControlProtocolError("only the link initiator starts a rekey")
        self._generation = (self._generation + 1) & 0xFFFFFFFF
        private = X25519PrivateKey.generate()
        self._pending = _Pending(self._generation, private, self._allocator.allocate())
        return RekeyOffer(self._generation, self._pending.receive_key_id, _public(private))

    def on_offer(self, offer: RekeyOffer, now: float) -> RekeyAnswer:
        if self.initiator:
            raise ControlProtocolError("the link initiator received a RekeyOffer")
        if self._pending is not None:
            self._allocator.release(self._pending.receive_key_id)
        private = X25519PrivateKey.generate()
        material = self._material(offer.generation, private, offer.public)
        key_id = self._allocator.allocate()
        self._install_receive(key_id, offer.generation, material.initiator_to_responder, now)
        send = SendKey(offer.key_id, offer.generation, PacketKey(*material.responder_to_initiator), now)
        self._pending = _Pending(offer.generation, private, key_id, send)
        self._generation = offer.generation
        return RekeyAnswer(offer.generation, key_id, _public(private))

    def on_answer(self, answer: RekeyAnswer, now: float) -> RekeyDone:
        pending = self._pending
        if not self.initiator or pending is None or pending.generation != answer.generation:
            raise ControlProtocolError(f"unexpected RekeyAnswer for generation {answer.generation}")
        material = self._material(answer.generation, pending.private, answer.public)
        self._install_receive(pending.receive_key_id, answer.generation, material.responder_to_initiator, now)
        self.send_key = SendKey(answer.key_id, answer.generation, PacketKey(*material.initiator_to_responder), now)
        self._pending = None
        self.rotations += 1
        return RekeyDone(answer.generation)

    def on_done(self, done: RekeyDone) -> None:
        pending = self._pending
        if self.initiator or pending is None or pending.send is None or pending.generation != done.generation:
            raise ControlProtocolError(f"unexpected RekeyDone for generation {done.generation}")
        self.send_key = pending.send
        self._pending = None
        self.rotations += 1

    def _material(self, generation: int, private: X25519PrivateKey, peer_public: bytes) -> KeyMaterial:
        if self._exporter is None:
            raise ControlProtocolError("no control session to derive keys from")
        try:
            shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise ControlProtocolError("bad X25519 public key") from None
        return derive(self._exporter(generation.to_bytes(4, "big")), shared)

    def _install_receive(self, key_id: int, generation: int, material: tuple[bytes, bytes], now: float) -> None:
        for old in self.receive_keys.values():
            if old.expires_at is None:
                old.expires_at = now + self.overlap
        self.receive_keys[key_id] = ReceiveKey(key_id, generation, PacketKey(*material), self._window_size)

    # -- timers

    def rekey_due(self, now: float) -> bool:
        """Should the initiator start a rotation now (age or packet count)?"""
        if not self.initiator or self._exporter is None or self._pending is not None:
            return False
        key = self.send_key
        return key is None or now >= key.installed_at + self.interval or key.next_seq >= MAX_PACKETS_PER_KEY

    def expire(self, now: float) -> list[int]:
        """Drop receive keys past their overlap; returns the key ids released."""
        gone = [k for k, v in self.receive_keys.items() if v.expires_at is not None and v.expires_at <= now]
        for key_id in gone:
            del self.receive_keys[key_id]
            self._allocator.release(key_id)
        return gone

    def next_deadline(self) -> float | None:
        deadlines = [v.expires_at for v in self.receive_keys.values() if v.expires_at is not None]
        if self.initiator and self._exporter is not None and self._pending is None and self.send_key is not None:
            deadlines.append(self.send_key.installed_at + self.interval)
        return min(deadlines) if deadlines else None

    def release_all(self) -> None:
        for key_id in self.receive_keys:
            self._allocator.release(key_id)
        self.receive_keys.clear()
        if self._pending is not None:
            self._allocator.release(self._pending.receive_key_id)
            self._pending = None


def _public(private: X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
