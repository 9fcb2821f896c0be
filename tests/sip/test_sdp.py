from __future__ import annotations

import pytest

from gateway.sip.sdp import SdpError, anchor, first_codec, media_endpoints, parse_sdp

BARESIP_OFFER = (
    b"v=0\r\no=- 1815849 1815849 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 10000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp:10001\r\na=sendrecv\r\na=label:1\r\n"
)


def test_parse_and_endpoints() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    assert media_endpoints(sdp) == [("127.0.0.1", 10000)]
    assert sdp.media[0].codec_names() == ["PCMU", "PCMA", "telephone-event"]
    assert first_codec(sdp) == "PCMU"
    assert sdp.media[0].direction == "sendrecv"


def test_anchor_rewrites_address_ports_and_drops_transport_attributes() -> None:
    anchored = anchor(parse_sdp(BARESIP_OFFER), "192.0.2.10", [20000], session_version=7)
    text = bytes(anchored).decode()
    assert "c=IN IP4 192.0.2.10" in text and "m=audio 20000 RTP/AVP 0 8 101" in text
    assert "a=rtcp:" not in text and "a=rtpmap:101 telephone-event/8000" in text
    assert "o=- 1815849 7 IN IP4 192.0.2.10" in text
    assert media_endpoints(parse_sdp(bytes(anchored))) == [("192.0.2.10", 20000)]


def test_rejected_stream_keeps_port_zero() -> None:
    two = BARESIP_OFFER + b"m=video 0 RTP/AVP 96\r\n"
    anchored = anchor(parse_sdp(two), "::1", [20000, 20002], 2)
    assert [m.port for m in anchored.media] == [20000, 0]
    assert "c=IN IP6 ::1" in bytes(anchored).decode()


@pytest.mark.parametrize("bad", [b"", b"v=1\r\n", b"v=0\r\no=x\r\nm=audio notaport RTP/AVP 0\r\n", b"garbage"])
def test_bad_sdp_is_a_488(bad: bytes) -> None:
    with pytest.raises(SdpError) as info:
        parse_sdp(bad)
    assert info.value.status == 488
