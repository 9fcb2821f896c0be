"""RFC 4475's torture messages and the outcome the RFC expects of each, for Seabridge.

``parser`` is what ``parse_message`` must do: None to parse, else the status its
SipParseError carries (responses that fail to parse are dropped whatever that status).
``gateway`` is the final status a running gateway answers over UDP, or None when it
must answer nothing (responses, and junk it cannot route an answer to). Where the RFC
lets an element choose (be liberal or refuse), the comment says which we chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rfc4475"


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    parser: int | None
    gateway: int | None
    why: str

    @property
    def data(self) -> bytes:
        return (FIXTURES / f"{self.name}.dat").read_bytes()


CASES = [
    # 3.1.1: valid messages. Requests get the answer any request gets here: an INVITE
    # is challenged (407), a REGISTER for an unknown user challenged (401).
    Case("wsinv", "3.1.1.1", None, 481, "folding, escaped quotes, odd case, LWS; its To tag names no dialog of ours"),
    Case("intmeth", "3.1.1.2", None, 501, "unknown method made of every token character"),
    Case("esc01", "3.1.1.3", None, 407, "% escapes in URIs"),
    Case("escnull", "3.1.1.4", None, 401, "escaped NULs in user parts"),
    Case("esc02", "3.1.1.5", None, 501, "% that is not an escape: RE%47IST%45R is not REGISTER"),
    Case("lwsdisp", "3.1.1.6", None, 200, "no LWS between display name and <"),
    Case("longreq", "3.1.1.7", None, 407, "long values, 34 Vias, no branch on the top one"),
    Case("dblreq", "3.1.1.8", None, 401, "trailing octets after Content-Length are ignored"),
    Case("semiuri", "3.1.1.9", None, 200, "semicolons in the user part"),
    Case("transports", "3.1.1.10", None, 200, "SCTP, TLS and unknown transports in Via"),
    Case("mpart01", "3.1.1.11", None, 405, "multipart body with binary part; MESSAGE is not served"),
    Case("unreason", "3.1.1.12", None, None, "UTF-8 reason phrase; a stray response is dropped"),
    Case("noreason", "3.1.1.13", None, None, "empty reason phrase; a stray response is dropped"),
    # 3.1.2: invalid messages.
    Case("badinv01", "3.1.2.1", 400, 400, "empty parameters in Via and Contact"),
    Case("clerr", "3.1.2.2", 400, 400, "Content-Length larger than the datagram"),
    Case("ncl", "3.1.2.3", 400, 400, "negative Content-Length"),
    Case("scalar02", "3.1.2.4", 400, 400, "CSeq number beyond 2**31"),
    Case("scalarlg", "3.1.2.5", 400, None, "response with overlarge scalars: discarded"),
    Case("quotbal", "3.1.2.6", 400, 400, "unterminated quoted display name"),
    Case("ltgtruri", "3.1.2.7", 400, 400, "Request-URI in <>"),
    Case("lwsruri", "3.1.2.8", 400, 400, "LWS inside the Request-URI"),
    Case("lwsstart", "3.1.2.9", 400, 400, "several SP between Request-Line elements (we refuse)"),
    Case("trws", "3.1.2.10", 400, 400, "SP after SIP-Version (we refuse)"),
    Case("escruri", "3.1.2.11", 400, 400, "escaped headers in the Request-URI (we refuse)"),
    Case("baddate", "3.1.2.12", None, 407, "non-GMT Date: we do not use Date, so we do not refuse"),
    Case("regbadct", "3.1.2.13", 400, 400, "URI with ? not enclosed in <>"),
    Case("badaspec", "3.1.2.14", 400, 400, "spaces inside <> (we refuse)"),
    Case("baddn", "3.1.2.15", 400, 400, "unquoted display name with a comma"),
    Case("badvers", "3.1.2.16", 505, 505, "SIP/7.0"),
    Case("mismatch01", "3.1.2.17", 400, 400, "CSeq method differs from the method"),
    Case("mismatch02", "3.1.2.18", 400, 400, "unknown method, CSeq differs (the RFC allows 400 or 501)"),
    Case("bigcode", "3.1.2.19", 400, None, "status code 4294967301: dropped"),
    # 3.2: transaction layer.
    Case("badbranch", "3.2.1", 400, 400, "branch is the bare magic cookie (we refuse, statelessly)"),
    # 3.3: application layer.
    Case("insuf", "3.3.1", 400, 400, "no From, To or Call-ID"),
    Case("unkscm", "3.3.2", 416, 416, "unknown Request-URI scheme"),
    Case("novelsc", "3.3.3", 416, 416, "soap.beep Request-URI"),
    Case("unksm2", "3.3.4", None, 400, "REGISTER whose To is an isbn: URI"),
    Case("bext01", "3.3.5", None, 420, "Require of unknown extensions"),
    Case("invut", "3.3.6", None, 415, "unknown Content-Type"),
    Case("regaut01", "3.3.7", None, 401, "unknown Authorization scheme: challenged again"),
    Case("multi01", "3.3.8", 400, 400, "two From, To, Call-ID and CSeq"),
    Case("mcl01", "3.3.9", 400, 400, "two different Content-Lengths"),
    Case("bcast", "3.3.10", None, None, "200 OK with a broadcast Via: dropped"),
    Case("zeromf", "3.3.11", None, 200, "Max-Forwards 0 at an endpoint: processed"),
    Case("cparam01", "3.3.12", None, 401, "header parameter after an unbracketed Contact URI"),
    Case("cparam02", "3.3.13", None, 401, "URI parameter inside the bracketed Contact"),
    Case("regescrt", "3.3.14", None, 401, "escaped header in a bracketed Contact URI"),
    Case("sdp01", "3.3.15", None, 406, "Accept without application/sdp"),
    # 3.4: backward compatibility.
    Case("inv2543", "3.4.1", None, 407, "RFC 2543 INVITE: no branch, no From tag, no Content-Length"),
]
