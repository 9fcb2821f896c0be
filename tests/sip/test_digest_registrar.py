from __future__ import annotations

from gateway.sip.digest import AuthAccepted, AuthRejected, Credentials, DigestAuthenticator, client_response
from gateway.sip.headers import parse_auth_params
from gateway.sip.peer import Peer
from gateway.sip.registrar import RegistrarPolicy, process_register
from gateway.users import ha1

from .helpers import request

SECRET = b"k" * 32
SOURCE = Peer("10.0.0.1", 5060)


def ha1s(user: str = "alice", realm: str = "acme", password: str = "secret123") -> dict[str, str]:
    return {alg: ha1(alg, user, realm, password) for alg in ("MD5", "SHA-256")}


def answer(challenge: str, method: str, uri: str, password: str, nc: str = "00000001", user: str = "alice") -> str:
    _, params = parse_auth_params(challenge)
    alg = params["algorithm"]
    resp = client_response(alg, user, params["realm"], password, method, uri, params["nonce"], nc, "cn", "auth")
    return (
        f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{resp}", algorithm={alg}, qop=auth, nc={nc}, cnonce="cn", opaque="{params["opaque"]}"'
    )


def creds(header: str) -> Credentials:
    _, params = parse_auth_params(header)
    c = Credentials.from_params(params)
    assert c is not None
    return c


def test_challenges_offer_sha256_first_then_md5() -> None:
    auth = DigestAuthenticator(SECRET)
    values = auth.challenges("acme", now=0.0)
    assert [parse_auth_params(v)[1]["algorithm"] for v in values] == ["SHA-256", "MD5"]
    assert all('qop="auth"' in v for v in values)


def test_both_algorithms_verify() -> None:
    auth = DigestAuthenticator(SECRET)
    # Both challenges share one nonce, so each answer needs its own nonce count.
    for i, challenge in enumerate(auth.challenges("acme", now=0.0), start=1):
        header = answer(challenge, "REGISTER", "sip:acme", "secret123", nc=f"{i:08x}")
        c = creds(header)
        assert auth.verify(c, "REGISTER", "acme", ha1s()[c.algorithm], now=1.0) == AuthAccepted("alice")


def test_nonce_count_replay_is_refused() -> None:
    auth = DigestAuthenticator(SECRET)
    c = creds(answer(auth.challenges("acme", 0.0)[0], "REGISTER", "sip:acme", "secret123"))
    assert isinstance(auth.verify(c, "REGISTER", "acme", ha1s()["SHA-256"], 1.0), AuthAccepted)
    assert auth.verify(c, "REGISTER", "acme", ha1s()["SHA-256"], 2.0) == AuthRejected("nonce count replayed")


def test_expired_nonce_is_stale_forged_nonce_is_not_ours() -> None:
    auth = DigestAuthenticator(SECRET, nonce_ttl=300)
    c = creds(answer(auth.challenges("acme", 0.0)[0], "REGISTER", "sip:acme", "secret123"))
    result = auth.verify(c, "REGISTER", "acme", ha1s()["SHA-256"], 301.0)
    assert isinstance(result, AuthRejected) and result.stale
    other = DigestAuthenticator(b"z" * 32)
    c2 = creds(answer(other.challenges("acme", 0.0)[0], "REGISTER", "sip:acme", "secret123"))
    assert auth.verify(c2, "REGISTER", "acme", ha1s()["SHA-256"], 1.0) == AuthRejected("nonce not issued by us")


def test_nonce_is_bound_to_its_realm() -> None:
    auth = DigestAuthenticator(SECRET)
    header = answer(auth.challenges("globex", 0.0)[0], "REGISTER", "sip:acme", "secret123")
    forged = header.replace('realm="globex"', 'realm="acme"')
    assert isinstance(auth.verify(creds(forged), "REGISTER", "acme", ha1s()["SHA-256"], 1.0), AuthRejected)


def reg(extra: str = "", contact: str = "<sip:alice@10.0.0.1:5060>", cseq: int = 1, call_id: str = "r1"):  # type: ignore[no-untyped-def]
    text = request("REGISTER", uri="sip:acme", cseq=cseq, call_id=call_id, extra=f"Contact: {contact}\r\n{extra}")
    # REGISTER's To is the AOR being registered.
    from gateway.sip.message import Request

    headers = text.headers.replaced("To", "<sip:alice@acme>")
    return Request(headers=headers, method="REGISTER", uri=text.uri)


def test_unknown_and_known_users_get_the_same_challenge_shape() -> None:
    auth = DigestAuthenticator(SECRET)
    policy = RegistrarPolicy()
    first = reg()
    out_known = process_register(first, SOURCE, "acme", ha1s(), (), auth, policy, 0.0, 0.0)
    out_unknown = process_register(first, SOURCE, "acme", None, (), auth, policy, 0.0, 0.0)
    assert out_known.response.status == out_unknown.response.status == 401
    wrong = reg(
        f"Authorization: {answer(out_known.response.headers.get('WWW-Authenticate') or '', 'REGISTER', 'sip:acme', 'nope')}\r\n"
    )
    a = process_register(wrong, SOURCE, "acme", ha1s(), (), auth, policy, 1.0, 0.0)
    b = process_register(wrong, SOURCE, "acme", None, (), auth, policy, 1.0, 0.0)
    assert a.response.status == b.response.status == 401
    strip = lambda r: [k for k, _ in r.headers]  # noqa: E731
    assert strip(a.response) == strip(b.response)


def test_register_binds_lists_and_removes_contacts() -> None:
    auth = DigestAuthenticator(SECRET)
    policy = RegistrarPolicy(min_expires=60, max_expires=3600, default_expires=3600, max_contacts=10)
    challenge = process_register(reg(), SOURCE, "acme", ha1s(), (), auth, policy, 0.0, 0.0)
    www = challenge.response.headers.get("WWW-Authenticate") or ""
    ok = process_register(
        reg(f"Authorization: {answer(www, 'REGISTER', 'sip:acme', 'secret123')}\r\nExpires: 120\r\n"),
        SOURCE,
        "acme",
        ha1s(),
        (),
        auth,
        policy,
        1.0,
        0.0,
    )
    assert ok.response.status == 200 and ok.bindings is not None and len(ok.bindings) == 1
    assert ok.bindings[0].expires_at == 121.0 and ok.bindings[0].source == SOURCE
    assert "expires=120" in (ok.response.headers.get("Contact") or "")
    second = process_register(
        reg(
            f"Authorization: {answer(www, 'REGISTER', 'sip:acme', 'secret123', nc='00000002')}\r\n",
            contact="<sip:alice@10.0.0.2:5060>",
            call_id="r2",
        ),
        SOURCE,
        "acme",
        ha1s(),
        ok.bindings,
        auth,
        policy,
        2.0,
        0.0,
    )
    assert second.bindings is not None and len(second.bindings) == 2
    too_short = process_register(
        reg(f"Authorization: {answer(www, 'REGISTER', 'sip:acme', 'secret123', nc='00000003')}\r\nExpires: 5\r\n"),
        SOURCE,
        "acme",
        ha1s(),
        second.bindings,
        auth,
        policy,
        3.0,
        0.0,
    )
    assert too_short.response.status == 423 and too_short.response.headers.get("Min-Expires") == "60"
    remove_all = process_register(
        reg(
            f"Authorization: {answer(www, 'REGISTER', 'sip:acme', 'secret123', nc='00000004')}\r\nExpires: 0\r\n",
            contact="*",
        ),
        SOURCE,
        "acme",
        ha1s(),
        second.bindings,
        auth,
        policy,
        4.0,
        0.0,
    )
    assert remove_all.response.status == 200 and remove_all.bindings == ()


def test_someone_else_cannot_register_your_address() -> None:
    auth = DigestAuthenticator(SECRET)
    policy = RegistrarPolicy()
    www = auth.challenges("acme", 0.0)[0]
    mallory = answer(www, "REGISTER", "sip:acme", "malloryspw", user="mallory")
    out = process_register(
        reg(f"Authorization: {mallory}\r\n"),
        SOURCE,
        "acme",
        {alg: ha1(alg, "mallory", "acme", "malloryspw") for alg in ("MD5", "SHA-256")},
        (),
        auth,
        policy,
        1.0,
        0.0,
    )
    assert out.response.status == 403 and out.bindings is None
