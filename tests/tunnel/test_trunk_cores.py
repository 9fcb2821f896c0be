"""The tunnel trunk cores: SDP that names flows instead of addresses, and the calls crossing a trunk."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.sip.message import Headers, Request, Response, make_response
from gateway.sip.parser import parse_message
from gateway.sip.sdp import media_endpoints, parse_sdp
from gateway.sip.uri import parse_uri
from gateway.tunnel_calls import CallFinished, RelayLegDescribed, StreamsOffered, TunnelCalls
from gateway.tunnel_media import is_rtcp
from gateway.tunnel_sdp import flow_streams, from_tunnel, to_tunnel

SESSION = "ab" * 16

OFFER = (
    b"v=0\r\n"
    b"o=alice 123 2 IN IP4 10.20.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 10.20.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 20000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=rtcp:20001 IN IP4 10.20.0.1\r\n"
    b"a=sendrecv\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"m=video 20002 RTP/AVP 97\r\n"
    b"c=IN IP4 10.20.0.9\r\n"
    b"a=rtpmap:97 VP8/90000\r\n"
)


def test_sdp_in_the_tunnel_names_flows_and_hides_every_address() -> None:
    wire = to_tunnel(parse_sdp(OFFER))
    text = bytes(wire).decode()
    assert "10.20.0" not in text  # neither c=, o= nor a=rtcp carry our addresses
    assert "a=tunnel-flow:0" in text and "a=tunnel-flow:2" in text and "a=tunnel-flow:1" not in text
    assert [m.port for m in wire.media] == [9, 0, 9]
    assert "a=sendrecv" in text and "a=rtpmap:101 telephone-event/8000" in text  # the rest is untouched
    assert flow_streams(parse_sdp(bytes(wire))) == (0, 2)

    local = from_tunnel(parse_sdp(bytes(wire)), {0: ("127.0.0.1", 40000), 2: ("127.0.0.1", 40002)})
    assert media_endpoints(local) == [("127.0.0.1", 40000), None, ("127.0.0.1", 40002)]
    assert "tunnel-flow" not in bytes(local).decode()
    assert local.origin.endswith("IN IP4 127.0.0.1") and local.origin.split()[2] == "2"  # version kept


def test_a_stream_without_a_bridge_gets_nowhere_to_send() -> None:
    wire = parse_sdp(bytes(to_tunnel(parse_sdp(OFFER))))
    local = from_tunnel(wire, {0: ("127.0.0.1", 40000)})
    assert media_endpoints(local) == [("127.0.0.1", 40000), None, ("0.0.0.0", 9)]


def _invite(to_tag: str = "", session: str | None = SESSION, cseq: int = 1, body: bytes = OFFER) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport"),
        ("From", "<sip:kinshasa@hq>;tag=f1"),
        ("To", f"<sip:100@hq>{';tag=' + to_tag if to_tag else ''}"),
        ("Call-ID", "call-1"),
        ("CSeq", f"{cseq} INVITE"),
        ("Content-Type", "application/sdp"),
    ]
    if session is not None:
        headers.append(("Session-ID", f"{session};remote={'0' * 32}"))
    return Request(headers=Headers(tuple(headers)), body=body, method="INVITE", uri=parse_uri("sip:100@hq"))


def _bye(invite: Request) -> Request:
    headers = invite.headers.replaced("CSeq", "2 BYE").replaced("To", "<sip:100@hq>;tag=t1").without("Content-Type")
    return Request(headers=headers, method="BYE", uri=invite.uri)


def test_the_opener_offers_streams_and_describes_its_relay_leg() -> None:
    calls = TunnelCalls()
    invite = _invite()
    events = calls.observe(invite, parse_sdp(invite.body), "out", 1.0)
    assert events == [
        StreamsOffered("call-1", SESSION, (0, 2), opener=True, kinds=("audio", "video")),
        RelayLegDescribed("call-1", ((0, ("10.20.0.1", 20000)), (2, ("10.20.0.9", 20002)))),
    ]
    answer = parse_sdp(bytes(to_tunnel(parse_sdp(OFFER))))
    ok = make_response(invite, 200, to_tag="t1", body=bytes(answer), extra=[("Content-Type", "application/sdp")])
    assert calls.observe(ok, answer, "in", 2.0) == [
        StreamsOffered("call-1", SESSION, (0, 2), opener=True, kinds=("audio", "video"))
    ]
    assert calls.observe(_bye(invite), None, "in", 3.0) == [CallFinished("call-1", "BYE (in)")]
    assert "call-1" not in calls and calls.was_finished("call-1")
    # A retransmitted 200 after the BYE does not bring the call back.
    assert calls.observe(ok, answer, "in", 4.0) == []


def test_the_answering_side_waits_for_flows_and_a_challenge_does_not_end_the_call() -> None:
    calls = TunnelCalls()
    wire = parse_sdp(bytes(to_tunnel(parse_sdp(OFFER))))
    invite = _invite(session=None, body=bytes(wire))
    (offered,) = calls.observe(invite, wire, "in", 1.0)
    assert isinstance(offered, StreamsOffered) and not offered.opener
    assert len(offered.session_id) == 32  # no Session-ID: a stable stand-in
    assert calls.observe(make_response(invite, 407, to_tag="x"), None, "out", 1.1) == []
    assert "call-1" in calls
    assert calls.observe(make_response(_invite(cseq=2), 486, to_tag="y"), None, "out", 2.0) == [
        CallFinished("call-1", "INVITE failed (486)")
    ]


def test_a_failed_reinvite_keeps_an_answered_call() -> None:
    calls = TunnelCalls()
    invite = _invite()
    calls.observe(invite, parse_sdp(invite.body), "out", 1.0)
    calls.observe(make_response(invite, 200, to_tag="t1"), None, "in", 1.5)
    reinvite = _invite(to_tag="t1", cseq=3)
    calls.observe(reinvite, parse_sdp(reinvite.body), "out", 2.0)
    assert calls.observe(make_response(reinvite, 491), None, "in", 2.1) == []
    assert calls.last_seen("call-1") == 2.1


def test_messages_of_unknown_calls_start_nothing() -> None:
    calls = TunnelCalls()
    in_dialog = _invite(to_tag="t9")
    assert calls.observe(in_dialog, parse_sdp(in_dialog.body), "in", 1.0) == []
    response = parse_message(bytes(make_response(_invite(), 180, to_tag="t1")))
    assert isinstance(response, Response)
    assert calls.observe(response, None, "in", 1.0) == []
    assert len(calls) == 0


def test_rtcp_is_told_from_rtp_as_rfc_5761_does() -> None:
    assert is_rtcp(bytes([0x81, 200, 0, 6]))  # sender report
    assert is_rtcp(bytes([0x81, 203, 0, 1]))  # BYE
    assert not is_rtcp(bytes([0x80, 0, 0, 1]))  # PCMU
    assert not is_rtcp(bytes([0x80, 0xE5, 0, 1]))  # marker bit + telephone-event 101


@pytest.mark.parametrize(
    ("trunk", "tunnel", "key", "fragment"),
    [
        ({"tunnel_peer": "hq"}, {}, "trunks[0].tunnel_peer", "needs [tunnel] enabled"),
        ({"tunnel_peer": "hq", "host": "10.0.0.1"}, {"enabled": True}, "trunks[0].host", "has no host"),
        ({"tunnel_peer": "hq", "transport": "TLS"}, {"enabled": True}, "trunks[0].transport", "uses UDP"),
        ({"tunnel_peer": "Not A Node"}, {"enabled": True}, "trunks[0].tunnel_peer", "not a node name"),
        ({"tunnel_peer": "lagos"}, {"enabled": True, "peers": [{"name": "hub", "paths": [{"name": "p", "address": "10.0.0.2"}]}]},
         "trunks[0].tunnel_peer", "neither a tunnel peer nor reached"),
        ({}, {}, "trunks[0].host", "not an IP address"),
    ],
)  # fmt: skip
def test_tunnel_trunk_config_is_checked(
    trunk: dict[str, object], tunnel: dict[str, object], key: str, fragment: str
) -> None:
    data = {"trunks": [{"name": "hq", "tenant": "acme", **trunk}], "tunnel": tunnel}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_a_tunnel_trunk_through_a_hub_route_is_accepted() -> None:
    config = parse_config(
        {
            "trunks": [{"name": "hq", "tenant": "acme", "tunnel_peer": "hq"}],
            "tunnel": {
                "enabled": True,
                "peers": [{"name": "hub", "paths": [{"name": "p", "address": "10.0.0.2"}]}],
                "routes": [{"destination": "*", "via": "hub"}],
            },
        }
    )
    assert config.trunks[0].sip_domain == "hq"
