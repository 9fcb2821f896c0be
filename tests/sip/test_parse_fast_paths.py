"""The parser's shortcuts read exactly what its general code reads.

parse_uri, parse_name_addr, parse_params, split_commas and the header-name table each
take a shortcut for the common case and fall back to the general code for anything
else. Each shortcut is checked here against that general code on text built from the
characters the grammar cares about, and the views a parsed message carries against a
fresh parse of its header text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import ParseError
from gateway.sip.headers import (
    _PARAM,
    _PLAIN_NAME_ADDR,
    HEADER_FORMS,
    LIST_HEADERS,
    _parse_name_addr_general,
    _parse_param,
    _split_commas_scan,
    _split_semicolons,
    canonical_name,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_via,
    split_commas,
)
from gateway.sip.message import Request
from gateway.sip.parser import SipParseError, parse_message
from gateway.sip.uri import _PLAIN_SIP_URI, _parse_uri_general, parse_uri

FIXTURES = Path(__file__).parent.parent / "fixtures"

# Each piece mostly of characters legal in its place, and now and then one that changes how
# text splits or that a shortcut refuses.
_NOISE = [*';=:@?%[]/ \t"<>\\,', "\n", "\x0b", "\xa0", "%4", "%41", "65536"]


def _piece(valid: str, max_size: int = 6) -> st.SearchStrategy[str]:
    good = st.sampled_from(list(valid))
    return st.lists(st.one_of(good, good, good, good, st.sampled_from(_NOISE)), max_size=max_size).map("".join)


_TEXT = _piece("abcXYZ019.-_!~*'()&+$,", 30)
_URI_TEXT = st.builds(
    lambda scheme, user, host, port, params, headers: (
        f"{scheme}:{'' if user is None else user + '@'}{host}{'' if port is None else ':' + port}"
        + "".join(";" + p for p in params)
        + ("" if headers is None else "?" + headers)
    ),
    st.sampled_from(["sip", "sips", "SIP", "tel"]),
    st.none() | _piece("abcXYZ019-_.!~*'()&=+$,"),
    st.sampled_from(["h", "acme.example", "10.0.0.1", "[::1]", "[::1", "a_b", ""]) | _piece("abz019.-_"),
    st.none() | st.sampled_from(["5060", "0", "65535", "65536", "x", ""]),
    st.lists(_piece("abz019.-_=!~*'"), max_size=3),
    st.none() | _piece("abz=&"),
)


def _outcome(fn: object, text: str) -> object:
    assert callable(fn)
    try:
        return fn(text)
    except ParseError as exc:
        return ("ParseError", str(exc))


@settings(max_examples=1000, deadline=None)
@given(_URI_TEXT)
def test_plain_uri_shortcut_reads_as_the_general_code(text: str) -> None:
    assert _outcome(parse_uri, text) == _outcome(_parse_uri_general, text)


# Every combination of these, through both paths: each list holds usual values and ones
# a shortcut must refuse.
_USERS = [None, "", "a", "bob.smith-1", "%41b", "%4", "a%", "a;b", "a:pw", "a:p%zz", "a?b", "a/b", "a b", "a@b", "é"]
_HOSTS = ["h", "acme.example", "10.0.0.1", "[::1]", "[::1", "[zz]", "a_b", "", "h h", "h@x", "H.EXAMPLE"]
_PORTS = [None, "5060", "0", "65535", "65536", "99999", "x", "", "5060:1"]
_PARAMS = ["", ";lr", ";transport=udp;lr", ";", ";;", ";a=b=c", ";a@b", ";a b", ";maddr=[::1]", ";é"]
_HEADERS = ["", "?x=y", "?", "?a@b"]


def _uris() -> list[str]:
    out = []
    for scheme in ("sip", "sips", "SIP", "tel"):
        for user in _USERS:
            for host in _HOSTS:
                for port in _PORTS:
                    for params in _PARAMS:
                        for headers in _HEADERS:
                            userinfo = "" if user is None else user + "@"
                            hostport = host if port is None else f"{host}:{port}"
                            out.append(f"{scheme}:{userinfo}{hostport}{params}{headers}")
    return out


def test_every_combination_reads_the_same_through_shortcut_and_general_code() -> None:
    shortcut = 0
    for text in _uris():
        shortcut += _PLAIN_SIP_URI(text) is not None
        assert _outcome(parse_uri, text) == _outcome(_parse_uri_general, text), text
    assert shortcut > 1000
    for display in ["", '"A b" ', '"A\\"b"', '"x', "Bob ", "Bob  Smith\t", "Bob,S ", '"" ', "Bob\n"]:
        for uri in ["sip:a@h", "sip:a@h;lr", "sip:%4@h", "sip:h:65536", "tel:+1", " sip:h", "sip:h "]:
            for tail in [";tag=x", "", " ;tag=x ", ";tag", ";;", "\n", ';a="b;c"', "x", ">"]:
                text = f"{display}<{uri}>{tail}"
                assert _outcome(parse_name_addr, text) == _outcome(_parse_name_addr_general, text), text


def test_plain_uri_shortcut_is_taken_for_usual_uris() -> None:
    for text in ["sip:bob@acme.example", "sips:10.0.0.1:5061;transport=tls;lr", "sip:h;maddr=x=y"]:
        assert _PLAIN_SIP_URI(text) is not None
        assert parse_uri(text) == _parse_uri_general(text)
    # Refused by the shortcut, then read (or refused) by the general code.
    assert _PLAIN_SIP_URI("sip:h:65536") is not None
    with pytest.raises(ParseError, match="bad port"):
        parse_uri("sip:h:65536")


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(["", '"A b" ', '"A\\"b"', '"x', "Bob ", "Bob  Smith\t", "Bob,S ", " ", '"" ', "Bob\n"]),
    _URI_TEXT,
    st.sampled_from([";tag=x", "", " ;tag=x ", ";tag", ";;", " ", "\n", ';a="b;c"', "x", ">"]),
)
def test_plain_name_addr_shortcut_reads_as_the_general_code(display: str, uri: str, tail: str) -> None:
    text = f"{display}<{uri}>{tail}"
    assert _outcome(parse_name_addr, text) == _outcome(_parse_name_addr_general, text)


def test_plain_name_addr_shortcut_is_taken_for_usual_values() -> None:
    for text in ['"Alice" <sip:alice@acme>;tag=1', "Bob Smith <sip:b@c>", "<sip:x@y;lr>;expires=60"]:
        assert _PLAIN_NAME_ADDR(text) is not None
        assert parse_name_addr(text) == _parse_name_addr_general(text)


@settings(max_examples=1000, deadline=None)
@given(_TEXT)
def test_one_match_parameter_reads_as_the_general_code(part: str) -> None:
    m = _PARAM(part)
    if m is not None:
        assert (m[1], m[2]) == _parse_param(part)


@settings(max_examples=1000, deadline=None)
@given(_TEXT)
def test_splits_without_quotes_are_plain_splits(text: str) -> None:
    if '"' not in text:
        assert _split_semicolons(text) == text.split(";")
        if "," not in text or "<" not in text:
            assert _split_commas_scan(text) == text.split(",")
    params = ";" + text.strip()
    general = _outcome(lambda t: tuple(_parse_param(part) for part in _split_semicolons(t)[1:]), params)
    assert _outcome(parse_params, params) == general


def test_splits_honour_quotes_escapes_and_brackets() -> None:
    assert split_commas('"a, \\"b" <sip:x@y>, <sip:a,b@c>, ,c') == ['"a, \\"b" <sip:x@y>', "<sip:a,b@c>", "c"]
    assert split_commas("a>, b") == ["a>", "b"]
    assert _split_semicolons(';a="x;\\";y";b') == ["", 'a="x;\\";y"', "b"]
    with pytest.raises(ParseError, match="unterminated quoted string"):
        split_commas('"a\\"')
    with pytest.raises(ParseError, match="unterminated quoted parameter value"):
        parse_params(';a="x\\"')
    assert parse_params(' ;a = "x;y" ;b;c=[::1]') == (("a", '"x;y"'), ("b", None), ("c", "[::1]"))


def test_header_form_table_agrees_with_canonical_name() -> None:
    for name, (full, is_list) in HEADER_FORMS.items():
        assert is_token(name)
        assert full == canonical_name(name)
        assert is_list == (full.lower() in LIST_HEADERS)
    assert HEADER_FORMS["v"] == ("Via", True) and HEADER_FORMS["Call-ID"] == ("Call-ID", False)
    assert canonical_name("CALL-id") == "Call-ID" and canonical_name("X-Custom") == "X-Custom"


def _messages() -> list[bytes]:
    return [p.read_bytes() for p in sorted([*(FIXTURES / "sip").glob("*.bin"), *(FIXTURES / "rfc4475").glob("*.dat")])]


def test_parsed_views_equal_a_fresh_parse_of_the_header_text() -> None:
    parsed = 0
    for data in _messages():
        try:
            msg = parse_message(data)
        except SipParseError:
            continue
        parsed += 1
        headers = msg.headers
        assert msg.vias == [parse_via(v) for v in headers.get_all("Via")]
        assert msg.top_via == parse_via(headers.get("Via") or "")
        assert msg.from_ == parse_name_addr(headers.get("From") or "")
        assert msg.to == parse_name_addr(headers.get("To") or "")
        assert msg.cseq == parse_cseq(headers.get("CSeq") or "")
        assert msg.contacts == [parse_name_addr(v) for v in headers.get_all("Contact")]
        # A message built from the same values parses its views on demand, to the same.
        if isinstance(msg, Request):
            rebuilt = Request(headers=headers, body=msg.body, method=msg.method, uri=msg.uri)
            assert (rebuilt.vias, rebuilt.from_, rebuilt.to, rebuilt.cseq, rebuilt.contacts) == (
                msg.vias,
                msg.from_,
                msg.to,
                msg.cseq,
                msg.contacts,
            )
    assert parsed >= 15
