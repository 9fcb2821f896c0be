"""RFC 4475: every torture message, through the parser, with the outcome the RFC expects."""

from __future__ import annotations

import hashlib

import pytest

from gateway.sip.message import Request, Response
from gateway.sip.parser import SipParseError, parse_message
from tests.support.rfc4475 import CASES, FIXTURES, Case

# SHA-256 of the 13 valid messages as members of the RFC's Appendix A archive (published
# with an independent decode); the fixtures must be those bytes exactly.
ARCHIVE_SHA256 = {
    "wsinv": "d6f6cdee99cd0a1f8e3d9a0fdd67c877700e19ab86d8186dada06f61260e3e61",
    "intmeth": "b957a8292c1c0a9851fe94705b90f94320738f43aacde64998e401f742ef688d",
    "esc01": "be3a316d4ce5f69cad474646191e390dd4b50fc8371e44b5197fe1237781973e",
    "escnull": "263fe2ecd12a5ccbb6c67b3174e9211d11da9b600e7d69666a86d2ee42873e90",
    "esc02": "9a9c59449f00327b02071feafc8e5c2a261c98c818044167894cc17809a12199",
    "lwsdisp": "d1b36b6316c12824f6f04bf6b1fd1f021cade9b74871693b9c3474cd9fa7f4e6",
    "longreq": "185739292bc676760e5b1cca77c87705aa570240171c506ad76f8c35af0ecdaa",
    "dblreq": "a6be48426565c2a705389c4ce2ea17e57b891cb13f80490a2cb9392c797b46ef",
    "semiuri": "87bbaed6b4b354dbd3c5c7a20e66686303c63e43a0aa19b89de1ac75231611a2",
    "transports": "33b4553a3b9418121b099ff07882535151edd6a1e81898c63a916aad2cbf90bc",
    "mpart01": "92147c8e24997bac59629e1b163767697d0d6d499af87f89e325d69968bec3ba",
    "unreason": "4f939d6ebf4817eea70f011d3209e83732872ffc20ffd304b244084dc392f4d7",
    "noreason": "07e11e470a69fffa3674de805e5165d1351a9439a91045ee70c9570ea24ab4fe",
}


def test_every_message_of_the_rfc_has_a_case() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.dat")) == sorted(c.name for c in CASES)
    assert len(CASES) == 49


@pytest.mark.parametrize("name", sorted(ARCHIVE_SHA256))
def test_valid_messages_are_the_archive_bytes(name: str) -> None:
    assert hashlib.sha256((FIXTURES / f"{name}.dat").read_bytes()).hexdigest() == ARCHIVE_SHA256[name]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_parser_outcome(case: Case) -> None:
    if case.parser is None:
        message = parse_message(case.data)
        # Whatever parsed serialises to bytes that parse back to the same message (our
        # serialisation moves Content-Length last, so compare the re-serialised forms).
        again = parse_message(bytes(message))
        assert bytes(again) == bytes(message) and again.body == message.body
        return
    with pytest.raises(SipParseError) as info:
        parse_message(case.data)
    error = info.value
    if error.is_request:
        assert error.status == case.parser, str(error)
        # Every refused request here carries a Via good enough to route the answer.
        assert error.reply_via is not None
    else:
        assert case.gateway is None  # a response that does not parse is dropped
        assert error.reply_via is None


def _request(name: str) -> Request:
    message = parse_message((FIXTURES / f"{name}.dat").read_bytes())
    assert isinstance(message, Request)
    return message


def test_wsinv_unfolds_and_unescapes() -> None:
    msg = _request("wsinv")
    assert str(msg.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.to.tag == "1918181833n" and msg.from_.tag == "98asjd8"
    assert msg.from_.display == '"J Rosenberg \\\\\\""'
    assert msg.cseq.number == 9 and msg.cseq.method == "INVITE"
    assert msg.headers.get("Max-Forwards") == "0068"
    assert [v.host for v in msg.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    assert [v.branch for v in msg.vias] == ["390skdjuw", "z9hG4bK9ikj8", "z9hG4bK30239"]
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.param("newparam") == "newvalue" and contact.param("secondparam") == ""
    assert contact.param("q") == "0.33"
    assert len(msg.body) == 150


def test_intmeth_keeps_every_token_character() -> None:
    msg = _request("intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert msg.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escapes_are_kept_as_written() -> None:
    esc01 = _request("esc01")
    assert esc01.uri.user == "sips%3Auser%40example.com" and esc01.uri.host == "example.net"
    assert esc01.contacts[0].uri.param("n%61me") == "v%61lue%25%34%31"
    esc02 = _request("esc02")
    assert esc02.method == "RE%47IST%45R"
    assert [c.uri.user for c in esc02.contacts] == ["alias1", "alias3"]
    assert esc02.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    escnull = _request("escnull")
    assert [c.uri.user for c in escnull.contacts] == ["%00", "%00%00"]


def test_semicolons_in_user_and_contact_parameters() -> None:
    assert _request("semiuri").uri.user == "user;par=u%40example.net"
    cparam01 = _request("cparam01").contacts[0]
    assert cparam01.param("unknownparam") == "" and cparam01.uri.params == ()
    cparam02 = _request("cparam02").contacts[0]
    assert cparam02.param("unknownparam") is None and cparam02.uri.param("unknownparam") == ""
    regescrt = _request("regescrt").contacts[0]
    assert regescrt.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_extra_octets_and_binary_bodies() -> None:
    dblreq = _request("dblreq")
    assert dblreq.method == "REGISTER" and dblreq.body == b""
    mpart = _request("mpart01")
    assert len(mpart.body) == 553 and b"\x00" in mpart.body
    assert mpart.body.endswith(b"--7a9cbec02ceef655--\r\n")
    inv2543 = _request("inv2543")
    assert inv2543.from_.tag is None and inv2543.top_via.branch is None
    assert inv2543.body.startswith(b"v=0") and "Max-Forwards" not in inv2543.headers


def test_long_request() -> None:
    msg = _request("longreq")
    vias = msg.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert msg.to.uri.port == 6000 and msg.from_.tag == "12" + "982" * 50 + "424"


def test_responses() -> None:
    unreason = parse_message((FIXTURES / "unreason.dat").read_bytes())
    assert isinstance(unreason, Response) and unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = parse_message((FIXTURES / "noreason.dat").read_bytes())
    assert isinstance(noreason, Response) and noreason.status == 100 and noreason.reason == ""
    bcast = parse_message((FIXTURES / "bcast.dat").read_bytes())
    assert isinstance(bcast, Response) and [v.host for v in bcast.vias][1] == "255.255.255.255"


def test_refused_requests_route_their_answer() -> None:
    with pytest.raises(SipParseError) as info:
        parse_message((FIXTURES / "badvers.dat").read_bytes())
    assert info.value.reply_via is not None and info.value.reply_via.host == "c.example.com"
    with pytest.raises(SipParseError) as info:
        parse_message((FIXTURES / "quotbal.dat").read_bytes())
    assert info.value.reply_via is not None and info.value.reply_via.port == 5050
    with pytest.raises(SipParseError) as info:
        parse_message((FIXTURES / "badinv01.dat").read_bytes())
    assert info.value.reply_via is not None and info.value.reply_via.host == "192.0.2.15"
