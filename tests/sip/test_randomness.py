"""Identifiers come from a buffer of OS randomness: right sizes, never repeated, not shared by a fork."""

from __future__ import annotations

import os
import uuid

from gateway.b2bua import new_session_id, parse_session_id
from gateway.sip.dialog import new_branch, new_call_id, new_tag
from gateway.sip.randomness import RandomBuffer, token_hex


def test_tokens_have_the_asked_size_and_never_repeat_across_refills() -> None:
    buffer = RandomBuffer()
    tokens = [buffer.token_bytes(12) for _ in range(2000)]  # several 4 KiB refills
    assert {len(t) for t in tokens} == {12}
    assert len(set(tokens)) == len(tokens)
    assert len(buffer.token_bytes(10_000)) == 10_000  # larger than one refill
    assert len(token_hex(6)) == 12


def test_identifiers_keep_their_formats() -> None:
    assert len(new_tag()) == 12
    assert new_branch().startswith("z9hG4bK") and len(new_branch()) == 7 + 20
    assert new_call_id("gw.example").endswith("@gw.example")
    session = new_session_id()
    assert parse_session_id(session) == session
    assert uuid.UUID(hex=session).version == 4


def test_a_forked_child_does_not_draw_the_parents_bytes() -> None:
    token_hex(1)  # the shared buffer holds unread bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next token and leave at once
        os.write(write, token_hex(16).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert status == 0 and len(child) == 32
    assert token_hex(16) != child
