"""Coverage-guided fuzzing of the SIP grammar core with atheris (libFuzzer).

Run by tests/sip/test_parser_coverage_fuzz.py as a subprocess (libFuzzer ends its
process when done): ``python -m tests.sip.atheris_parser -runs=N CORPUS_DIR``.
The property: bytes either parse, or raise SipParseError; what parses serialises to
bytes that parse again to the same serialisation, and the header accessors never raise.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["gateway.sip"]):
    from gateway.sip.message import Request
    from gateway.sip.parser import SipParseError, parse_message
    from gateway.sip.uas import refusal


def one_input(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    # The accessors the service calls on every accepted message.
    accessed = (message.call_id, message.cseq, message.top_via, message.vias, message.from_, message.to)
    assert accessed and isinstance(message.contacts, list)
    if isinstance(message, Request):
        refusal(message, allow="INVITE, ACK, CANCEL, BYE, OPTIONS")
    wire = bytes(message)
    again = parse_message(wire)
    if bytes(again) != wire:
        raise AssertionError(f"serialisation is not stable: {wire!r} -> {bytes(again)!r}")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
