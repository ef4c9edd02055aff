"""Digest maths, nonces and the client helper (core/sip/digest.py), against the RFC vectors."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.sip.digest import (
    SUPPORTED_ALGORITHMS,
    Credentials,
    DigestChallengeError,
    NonceFactory,
    NonceState,
    _common_credentials,
    _hex,
    _md5,
    build_authorization,
    canonical_algorithm,
    compute_response,
    credentials_of,
    ha1,
    hex_digest,
    nonce_bytes,
    parse_credentials,
    pick_challenge,
    request_ha2,
    response_from_ha2,
    session_ha1,
    verifier_response,
)
from core.sip.errors import SipParseError
from core.sip.fields import AuthParams, format_auth, parse_auth

SECRET = b"0123456789abcdef-install-secret"

# RFC 2617 §3.5.
RFC2617 = {
    "username": "Mufasa",
    "realm": "testrealm@host.com",
    "password": "Circle Of Life",
    "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    "uri": "/dir/index.html",
    "cnonce": "0a4f113b",
    "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    "response": "6629fae49393a05397450978507c4ef1",
}

# RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_RESPONSES = {
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
}


def rfc7616_challenge(algorithm: str) -> AuthParams:
    return parse_auth(
        f'Digest realm="{RFC7616_REALM}", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


def h(algorithm: str, text: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]
    return hashlib.new(name, text.encode()).hexdigest()


# -- the maths ----------------------------------------------------------------------------


def test_rfc2617_vector() -> None:
    v = RFC2617
    stored = ha1(v["username"], v["realm"], v["password"])
    assert stored == h("MD5", "Mufasa:testrealm@host.com:Circle Of Life")
    response = compute_response(
        stored, "GET", v["uri"], v["nonce"], "MD5", qop="auth", nc="00000001", cnonce=v["cnonce"]
    )
    assert response == v["response"]


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_rfc7616_vectors(algorithm: str) -> None:
    stored = ha1("Mufasa", RFC7616_REALM, "Circle of Life", algorithm)
    response = compute_response(
        stored,
        "GET",
        "/dir/index.html",
        RFC7616_NONCE,
        algorithm,
        qop="auth",
        nc=1,
        cnonce=RFC7616_CNONCE,
    )
    assert response == RFC7616_RESPONSES[algorithm]


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_response_without_qop_is_rfc2069_form(algorithm: str) -> None:
    stored = ha1("alice", "pbx.test", "pw", algorithm)
    ha2 = h(algorithm, "REGISTER:sip:pbx.test")
    expected = h(algorithm, f"{stored}:abc:{ha2}")
    assert compute_response(stored, "REGISTER", "sip:pbx.test", "abc", algorithm) == expected


def test_auth_int_hashes_the_body() -> None:
    stored = ha1("alice", "pbx.test", "pw", "SHA-256")
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    ha2 = h("SHA-256", "INVITE:sip:bob@pbx.test:" + hashlib.sha256(body).hexdigest())
    expected = h("SHA-256", f"{stored}:n:00000002:c:auth-int:{ha2}")
    args = (stored, "INVITE", "sip:bob@pbx.test", "n", "SHA-256")
    assert compute_response(*args, qop="auth-int", nc=2, cnonce="c", body=body) == expected
    other = compute_response(*args, qop="auth-int", nc=2, cnonce="c", body=body + b"x")
    assert other != expected


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_algorithms_use_the_session_key(algorithm: str) -> None:
    base = algorithm.removesuffix("-sess")
    stored = ha1("alice", "pbx.test", "pw", algorithm)
    assert stored == ha1("alice", "pbx.test", "pw", base)
    key = session_ha1(stored, "n", "c", algorithm)
    assert key == h(base, f"{stored}:n:c")
    plain = compute_response(key, "REGISTER", "sip:pbx.test", "n", base, "auth", 1, "c")
    sess = compute_response(stored, "REGISTER", "sip:pbx.test", "n", algorithm, "auth", 1, "c")
    assert sess == plain
    with pytest.raises(ValueError):
        compute_response(stored, "REGISTER", "sip:pbx.test", "n", algorithm)


def test_algorithm_names() -> None:
    assert canonical_algorithm("md5") == "MD5"
    assert canonical_algorithm("sha-256-SESS") == "SHA-256-sess"
    assert {"MD5", "SHA-256", "MD5-sess", "SHA-256-sess"} <= set(SUPPORTED_ALGORITHMS)
    assert ha1("a", "r", "p", "md5") == ha1("a", "r", "p", "MD5")
    with pytest.raises(ValueError):
        canonical_algorithm("SHA-1")
    with pytest.raises(ValueError):
        ha1("a", "r", "p", "AKAv1-MD5")
    with pytest.raises(ValueError):
        compute_response("x", "GET", "/", "n", "MD5", qop="auth-conf", nc=1, cnonce="c")
    with pytest.raises(ValueError):
        compute_response("x", "GET", "/", "n", "MD5", qop="auth")  # no nc / cnonce


def test_utf8_credentials_hash_as_utf8() -> None:
    assert ha1("jürgen", "pbx.test", "päss") == h("MD5", "jürgen:pbx.test:päss")


# -- parsing ------------------------------------------------------------------------------

HEADERS = [
    'Digest username="alice", realm="pbx.test", nonce="abc", uri="sip:pbx.test", '
    'response="0123", algorithm=MD5, cnonce="c", qop=auth, nc=00000001',
    'Digest username="alice",realm="pbx.test",nonce="abc",uri="sip:pbx.test",response="1"',
    'Digest realm="pbx.test", nonce="n", algorithm=SHA-256, qop="auth", stale=true',
    'Digest  qop=auth ,  nc = 00000001 ,USERNAME="Bob"',
    'digest username="a\\"b", realm="r"',
    'Digest username="a, b=c", realm="r"',
    'Digest realm="r",,, nonce="n",',
    'Digest a="x"b="y"',
    "Digest a=b c=d",
    'Digest a="unterminated',
    'Digest a="x" junk',
    "Digest a=1, a=2",
    'Digest a="1", A="2"',
    "Digest =x",
    "Digest a b=1",
    "Digest a=",
    "Digest a=  , b=1",
    'Digest a=  "x"',
    'Digest a=b"c"',
    "Digest",
    "Bad@scheme a=1",
    "Basic dXNlcjpwYXNz",
    'Digest a="\\',
    'Digest a="x\\"',
    "Digest a=1\t,\tb=2\t",
    'Digest a="é", b=ü',
    ' Digest a="1"',
    'Digest a="1"\n',
    "Digest\ta=1",
    "Digest, a=1",
    "Digest a=b=c",
    'Digest a="x",b="y"',
    'Digest Username="x", REALM=r',
    "Digest a=1,  b=2",
    'Digest a=" x ", b= 1',
    "Digest a=\u00a0, b=2",
    "Digest \u212aa=1",
    "Digest a=1, ",
    'Digest nonce="x", NONCE="y"',
    'Digest nonce="x", nonce="y"',
    'Digest username="a",\r\n realm="b"',
    'Digest uri="sip:[2001:db8::1]:5060;transport=udp", nc=00000001',
    'Digest a="x"",b=1',
    'Digest a="x" , b=1',
    "Digest a=1 ,b=2",
    "Digest a=,b=",
    'Digest a="",b=""',
    "Digest a",
    "Digest ",
    "Digest  ",
    # Short or near-miss names at the end, and spaces beyond ASCII around a bare value.
    "Digest nc",
    "Digest n",
    "Digest u=1",
    "Digest re=1",
    "Digest r",
    "Digest usernam=1, uri=2, urix=3",
    "Digest responses=1, realms=2, nonces=3, ncs=4",
    "Digest nc=\u00a0",
    "Digest algorithm=MD5\u2003",
    "Digest qop=\u0085auth",
    "Digest qop=auth\x1f, nc=1",
]


def _parse_or_error(parser: Callable[[str], Credentials], text: str) -> Credentials | str:
    try:
        return parser(text)
    except SipParseError:
        return "error"


def _reference(text: str) -> Credentials:
    """The general path: the character-by-character parser, then the fields read."""
    return credentials_of(parse_auth(text))


def _agrees(text: str) -> None:
    """The fast path, when it answers, and the whole parse agree with the general path."""
    fast = _common_credentials(text)
    if fast is not None:
        assert fast == _reference(text)
    assert _parse_or_error(parse_credentials, text) == _parse_or_error(_reference, text)


@pytest.mark.parametrize("text", HEADERS)
def test_fast_parser_agrees_with_reference(text: str) -> None:
    _agrees(text)


@pytest.mark.parametrize(
    "text",
    [
        *HEADERS[:3],
        'Digest username="u00001",realm="pbx.test",nonce="n",uri="sip:pbx.test",'
        'response="5f",algorithm=MD5,cnonce="0a4f113b",qop=auth,nc=0000000a,opaque="o"',
        'Digest uri="sip:[2001:db8::1]:5060;transport=udp", username="a, b=c", a=b=c',
    ],
)
def test_common_headers_take_the_fast_path(text: str) -> None:
    assert _common_credentials(text) == _reference(text)


def test_fast_parser_reads_a_typical_header() -> None:
    parsed = _common_credentials(HEADERS[0])
    assert parsed is not None
    assert parsed.scheme == "Digest" and parsed.is_digest
    assert (parsed.username, parsed.realm, parsed.nonce, parsed.uri) == (
        "alice",
        "pbx.test",
        "abc",
        "sip:pbx.test",
    )
    assert (parsed.response, parsed.algorithm, parsed.cnonce) == ("0123", "MD5", "c")
    assert (parsed.qop, parsed.nc) == ("auth", "00000001")


@pytest.mark.parametrize(
    "text",
    [
        'Digest username="a", username="b"',  # a kept parameter twice
        'Digest opaque="a", opaque="b"',  # one that is not kept, twice
        'Digest x-y="a", x-Y="b"',  # the same extension spelled twice
        'Digest username="a", Username="b"',  # the same name in another case
        'Digest response="0", RESPONSE="1"',
    ],
)
def test_a_parameter_given_twice_is_malformed(text: str) -> None:
    assert _common_credentials(text) is None
    assert _parse_or_error(parse_credentials, text) == "error"


def test_unusual_spellings_leave_the_fast_path_but_read_the_same() -> None:
    for text in (
        'Digest Username="a", REALM="r"',
        'Digest username="a\\"b", realm="r"',
        'Digest username="a",  realm="r"',
        "digest\tusername=a",
    ):
        assert _common_credentials(text) is None
        _agrees(text)
    assert parse_credentials('Digest Username="a", REALM="r"').username == "a"
    assert parse_credentials('Digest username="a\\"b", realm="r"').username == 'a"b'


_AUTH_PIECES = st.sampled_from([*'aAbz=",\\ \t;:@-1', "username", "realm", "é"])
_NAMES = st.sampled_from(
    [
        "username", "Realm", "nonce", "qop", "nc", "x-y", "a", "uri", "response", "algorithm",
        "cnonce", "opaque", "NC", "stale", "URI",
    ]
)  # fmt: skip
_VALUES = st.text(alphabet='abc 0/=,;"\\é\t', max_size=8)
_SEPARATORS = st.sampled_from(["", ",", ", ", " ,", "\t,\t", ",,", " "])


@st.composite
def _header_shaped(draw: st.DrawFn) -> str:
    """Mostly well-formed parameter lists, with the quoting and spacing phones vary."""
    parts = []
    for name in draw(st.lists(_NAMES, max_size=6)):
        value = draw(_VALUES)
        if draw(st.booleans()):
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        spaces = draw(st.sampled_from(["", " ", "\t"]))
        parts.append(draw(_SEPARATORS) + name + spaces + "=" + spaces + value)
    return "".join(parts) + draw(_SEPARATORS)


@given(
    st.sampled_from(["Digest ", "Digest", " Digest ", "Digest\t", "digest  ", "Di gest "]),
    st.one_of(st.lists(_AUTH_PIECES, max_size=30).map("".join), _header_shaped()),
    st.sampled_from(["", " ", "\n", "\r\n", ",\t"]),
)
def test_fast_parser_agrees_with_reference_on_anything(scheme: str, rest: str, end: str) -> None:
    _agrees(scheme + rest + end)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "username",
                    "realm",
                    "nonce",
                    "uri",
                    "response",
                    "cnonce",
                    "x-Y",
                    "algorithm",
                    "qop",
                    "nc",
                    "opaque",
                    "userhash",
                ]
            ),
            st.text(alphabet="abz09 :;@[]./+=é", max_size=12),
            st.booleans(),
        ),
        max_size=9,
        unique_by=lambda param: param[0].lower(),
    )
)
def test_what_format_auth_prints_takes_the_fast_path(params: list[tuple[str, str, bool]]) -> None:
    # No quote, backslash or comma in any value; a bare one without surrounding spaces.
    params = [(name, value if quoted else value.strip(), quoted) for name, value, quoted in params]
    text = format_auth("Digest", params)
    fast = _common_credentials(text)
    assert fast is not None
    assert fast == _reference(text)


_PHONE_HEADER = (
    'Digest username="u00001", realm="pbx.test", nonce="AAABjQ8a/ZMBAgPq3xkq9fXl1uQn0rZ", '
    'uri="sip:pbx.test", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
    'cnonce="0a4f113b", qop=auth, nc=00000001, opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


@given(
    st.integers(0, len(_PHONE_HEADER)),
    st.integers(0, 4),
    st.text(alphabet=' ,="\\\t=aZ-é\u212a;', max_size=3),
)
def test_fast_parser_agrees_on_a_phone_header_cut_and_spliced(
    at: int, drop: int, insert: str
) -> None:
    """A real phone's header with a few characters dropped or put in anywhere: the shapes
    the verifier sees from broken and hostile clients."""
    _agrees(_PHONE_HEADER[:at] + insert + _PHONE_HEADER[at + drop :])


# -- the verifier's hashes ----------------------------------------------------------------


@given(st.text(max_size=40), st.booleans())
def test_hex_digest_is_the_factory_hash(text: str, sha256: bool) -> None:
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape")
    expected = _hex(hashlib.sha256 if sha256 else _md5, text)
    assert hex_digest(text, sha256) == expected


@given(
    st.sampled_from(["MD5", "MD5-sess", "SHA-256", "SHA-256-sess"]),
    st.booleans(),
    st.text(alphabet="abc019+/=\udcff", min_size=1, max_size=12),
    st.text(alphabet="abc019", max_size=9),
    st.sampled_from(["00000001", "0000000A", "ffffffff"]),
)
def test_verifier_response_is_response_from_ha2(
    algorithm: str, qop: bool, nonce: str, cnonce: str, nc: str
) -> None:
    stored = ha1("alice", "pbx.test", "secret", algorithm)
    ha2 = request_ha2("REGISTER", "sip:pbx.test", algorithm)
    expected = response_from_ha2(stored, ha2, nonce, algorithm, "auth" if qop else None, nc, cnonce)
    sha256 = algorithm.startswith("SHA")
    sess = algorithm.endswith("-sess")
    assert verifier_response(stored, ha2, nonce, sha256, sess, nc if qop else None, cnonce) == (
        expected
    )


# -- nonces -------------------------------------------------------------------------------


def test_nonce_is_valid_until_its_lifetime_then_stale() -> None:
    factory = NonceFactory(SECRET, lifetime=300.0)
    nonce = factory.make(1_000.0)
    assert factory.check(nonce, 1_000.0) is NonceState.VALID
    assert factory.check(nonce, 1_299.9) is NonceState.VALID
    assert factory.check(nonce, 1_300.1) is NonceState.STALE
    assert factory.check(nonce, 90_000.0) is NonceState.STALE


def test_nonce_from_the_future_is_stale_not_invalid() -> None:
    # A clock stepped back: the nonce is ours, so the phone may retry silently.
    factory = NonceFactory(SECRET, lifetime=300.0)
    nonce = factory.make(1_000.0)
    assert factory.check(nonce, 999.5) is NonceState.VALID
    assert factory.check(nonce, 900.0) is NonceState.STALE


def test_nonce_is_base64_of_time_origin_random_and_a_keyed_blake2b_mac() -> None:
    factory = NonceFactory(SECRET, lifetime=300.0, issuer=3)
    raw = base64.b64decode(factory.make(1_000.25))
    assert int.from_bytes(raw[:8], "big", signed=True) == 1_000_250
    assert raw[8] == 3  # the issuing process; raw[9:11] its run
    key = hashlib.blake2b(b"pbxtui nonce", key=SECRET).digest()
    assert raw[17:] == hashlib.blake2b(raw[:17], key=key, digest_size=16).digest()


def test_nonce_is_stale_in_any_other_process_and_after_a_restart() -> None:
    # Each process keeps its nonce counts in memory: a nonce is good only in the process
    # and run that issued it; elsewhere the phone gets a fresh challenge (stale=true).
    first, second = NonceFactory(SECRET, 300.0, issuer=1), NonceFactory(SECRET, 300.0, issuer=2)
    nonce = first.make(1_000.0)
    assert first.check(nonce, 1_000.0) is NonceState.VALID
    assert second.check(nonce, 1_000.0) is NonceState.STALE
    assert NonceFactory(SECRET, 300.0).check(nonce, 1_000.0) is NonceState.STALE
    # The same worker started again: same secret, same number, but its counts are gone.
    restarted = NonceFactory(SECRET, 300.0, issuer=1)
    assert restarted.check(nonce, 1_000.0) is NonceState.STALE
    assert restarted.check(restarted.make(1_000.0), 1_000.0) is NonceState.VALID
    # The origin is under the MAC: rewriting it to another process's breaks it.
    raw = bytearray(base64.b64decode(nonce))
    raw[8] = 2
    assert second.check(base64.b64encode(bytes(raw)).decode(), 1_000.0) is NonceState.INVALID


def test_nonces_differ_even_at_the_same_instant() -> None:
    factory = NonceFactory(SECRET, lifetime=300.0)
    nonces = {factory.make(5.0) for _ in range(50)}
    assert len(nonces) == 50
    assert all(len(nonce) == 44 for nonce in nonces)


def test_tampered_and_forged_nonces_are_invalid() -> None:
    factory = NonceFactory(SECRET, lifetime=300.0)
    nonce = factory.make(1_000.0)
    for index in range(len(nonce)):
        replacement = "A" if nonce[index] != "A" else "B"
        tampered = nonce[:index] + replacement + nonce[index + 1 :]
        assert factory.check(tampered, 1_000.0) is NonceState.INVALID, index
    # A nonce re-signed with another install's secret.
    assert NonceFactory(b"another-install-secret!", 300.0).check(nonce, 1_000.0) is (
        NonceState.INVALID
    )
    # Pushing the time stamp forward to dodge expiry breaks the MAC.
    raw = bytearray(base64.b64decode(nonce))
    raw[7] ^= 0x40
    moved = base64.b64encode(bytes(raw)).decode()
    assert factory.check(moved, 1_000.0) is NonceState.INVALID


@pytest.mark.parametrize(
    "nonce", ["", "x", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "!" * 44, "A" * 44, "é" * 44]
)
def test_garbage_nonces_are_invalid(nonce: str) -> None:
    assert NonceFactory(SECRET, 300.0).check(nonce, 0.0) is NonceState.INVALID


def test_nonce_factory_rejects_weak_settings() -> None:
    with pytest.raises(ValueError):
        NonceFactory(b"short", 300.0)
    with pytest.raises(ValueError):
        NonceFactory(SECRET, 0.0)
    with pytest.raises(ValueError):
        NonceFactory(SECRET, 300.0, issuer=256)
    with pytest.raises(ValueError):
        NonceFactory(SECRET, 300.0, issuer=-1)


# -- the client side ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_build_authorization_reproduces_rfc7616(algorithm: str) -> None:
    value = build_authorization(
        rfc7616_challenge(algorithm),
        "Mufasa",
        "Circle of Life",
        "GET",
        "/dir/index.html",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    sent = parse_auth(value)
    assert sent.scheme == "Digest"
    assert sent.params == {
        "username": "Mufasa",
        "realm": RFC7616_REALM,
        "nonce": RFC7616_NONCE,
        "uri": "/dir/index.html",
        "response": RFC7616_RESPONSES[algorithm],
        "algorithm": algorithm,
        "cnonce": RFC7616_CNONCE,
        "qop": "auth",
        "nc": "00000001",
        "opaque": RFC7616_OPAQUE,
    }


def test_build_authorization_reproduces_rfc2617() -> None:
    v = RFC2617
    challenge = parse_auth(
        f'Digest realm="{v["realm"]}", qop="auth,auth-int", nonce="{v["nonce"]}", '
        f'opaque="{v["opaque"]}"'
    )
    sent = parse_auth(
        build_authorization(
            challenge, v["username"], v["password"], "GET", v["uri"], cnonce=v["cnonce"]
        )
    )
    assert sent.get("response") == v["response"]
    assert sent.get("algorithm") == "MD5"
    assert sent.get("opaque") == v["opaque"]


def test_build_authorization_without_qop() -> None:
    challenge = parse_auth('Digest realm="carrier", nonce="xyz"')
    sent = parse_auth(build_authorization(challenge, "trunk", "pw", "INVITE", "sip:1@carrier"))
    assert "qop" not in sent.params and "nc" not in sent.params and "cnonce" not in sent.params
    expected = compute_response(ha1("trunk", "carrier", "pw"), "INVITE", "sip:1@carrier", "xyz")
    assert sent.get("response") == expected


def test_build_authorization_auth_int_only() -> None:
    challenge = parse_auth('Digest realm="r", nonce="n", qop="auth-int", algorithm=SHA-256')
    body = b"v=0\r\n"
    sent = parse_auth(
        build_authorization(challenge, "u", "p", "INVITE", "sip:x@r", cnonce="c", nc=3, body=body)
    )
    assert sent.get("qop") == "auth-int"
    assert sent.get("nc") == "00000003"
    key = ha1("u", "r", "p", "SHA-256")
    assert sent.get("response") == compute_response(
        key, "INVITE", "sip:x@r", "n", "SHA-256", "auth-int", 3, "c", body
    )


def test_build_authorization_hashes_the_username_when_asked() -> None:
    challenge = parse_auth('Digest realm="r", nonce="n", qop="auth", userhash=true')
    sent = parse_auth(build_authorization(challenge, "alice", "p", "REGISTER", "sip:r", "c"))
    assert sent.get("username") == h("MD5", "alice:r")
    assert sent.get("userhash") == "true"


def test_build_authorization_sess_sends_a_cnonce() -> None:
    challenge = parse_auth('Digest realm="r", nonce="n", algorithm=MD5-sess')
    sent = parse_auth(build_authorization(challenge, "u", "p", "REGISTER", "sip:r", cnonce="c"))
    assert sent.get("cnonce") == "c"
    assert sent.get("algorithm") == "MD5-sess"
    assert sent.get("response") == compute_response(
        ha1("u", "r", "p"), "REGISTER", "sip:r", "n", "MD5-sess", cnonce="c"
    )


def test_build_authorization_escapes_quotes() -> None:
    challenge = parse_auth('Digest realm="r", nonce="n"')
    sent = parse_auth(build_authorization(challenge, 'we"ird\\', "p", "REGISTER", "sip:r"))
    assert sent.get("username") == 'we"ird\\'


@pytest.mark.parametrize(
    "text",
    [
        'Basic realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-1',
        'Digest realm="r", nonce="n", qop="auth-conf"',
    ],
)
def test_unanswerable_challenges(text: str) -> None:
    challenge = parse_auth(text)
    assert pick_challenge([challenge]) is None
    with pytest.raises(DigestChallengeError):
        build_authorization(challenge, "u", "p", "REGISTER", "sip:r")


def test_pick_challenge_takes_the_first_answerable() -> None:
    sha1 = parse_auth('Digest realm="r", nonce="n", algorithm=SHA-1')
    sha256 = parse_auth('Digest realm="r", nonce="n", algorithm=SHA-256')
    md5 = parse_auth('Digest realm="r", nonce="n", algorithm=MD5')
    assert pick_challenge([sha1, sha256, md5]) is sha256
    assert pick_challenge([md5, sha256]) is md5
    assert pick_challenge([]) is None


@pytest.mark.skipif("SHA-512-256" not in SUPPORTED_ALGORITHMS, reason="no SHA-512/256 here")
def test_sha512_256_when_available() -> None:
    expected = hashlib.new("sha512_256", b"u:r:p").hexdigest()
    assert ha1("u", "r", "p", "SHA-512-256") == expected
    challenge = parse_auth('Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"')
    sent = parse_auth(build_authorization(challenge, "u", "p", "REGISTER", "sip:r", cnonce="c"))
    assert len(sent.get("response") or "") == 64


# -- the nonce's spelling -----------------------------------------------------------------

_NONCE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NONCE_SPELLING = re.compile(r"[A-Za-z0-9+/]{44}")  # what check() matched before


@given(
    st.integers(0, 44),
    st.integers(0, 2),
    st.text(alphabet=_NONCE_ALPHABET[:3] + "=\n -_.é\udcff\x00", max_size=3),
)
def test_a_nonce_is_read_only_in_its_one_spelling(at: int, drop: int, insert: str) -> None:
    nonce = NonceFactory(SECRET, 300.0).make(1_000.0)
    text = nonce[:at] + insert + nonce[at + drop :]
    raw = nonce_bytes(text)
    if _NONCE_SPELLING.fullmatch(text):
        assert raw == base64.b64decode(text)
    else:
        assert raw is None


@pytest.mark.parametrize(
    "text",
    [
        "A" * 43 + "=",
        "A" * 42 + "==",
        "A" * 40 + "====",
        "=" + "A" * 43,
        "A" * 20 + "=" + "A" * 23,
        "A" * 43 + "\n",
        " " + "A" * 43,
        "A" * 43 + "é",
        "A" * 43 + "-",
        "A" * 44 + "=",
        "A" * 48,
    ],
)
def test_a_padded_or_foreign_spelling_is_no_nonce(text: str) -> None:
    assert nonce_bytes(text) is None
    assert NonceFactory(SECRET, 300.0).check(text, 1_000.0) is NonceState.INVALID


# -- a fresh nonce's first check against an independent model -----------------------------


def _model_state(
    secret: bytes, origin: bytes, lifetime: float, nonce: str, now: float
) -> tuple[NonceState, int]:
    """What NonceFactory.inspect must answer, worked out with none of its code: the one
    spelling by regular expression, the MAC by hashlib, the age by arithmetic."""
    if not _NONCE_SPELLING.fullmatch(nonce):
        return NonceState.INVALID, 0
    raw = base64.b64decode(nonce)
    key = hashlib.blake2b(b"pbxtui nonce", key=secret[:64]).digest()
    if hashlib.blake2b(raw[:17], key=key, digest_size=16).digest() != raw[17:]:
        return NonceState.INVALID, 0
    issued = int.from_bytes(raw[:8], "big", signed=True)
    if raw[8:11] != origin:
        return NonceState.STALE, issued
    age = now - issued / 1000
    return (NonceState.STALE if age > lifetime or age < -1.0 else NonceState.VALID), issued


_OTHER_SECRET = b"another-install-secret-0000000!"


@settings(max_examples=400)
@given(
    st.sampled_from(["ours", "other issuer", "other install", "restarted"]),
    st.floats(-1e6, 1e10, allow_nan=False),
    st.floats(-400.0, 400.0, allow_nan=False),
    st.sampled_from(["none", "flip byte", "splice text"]),
    st.integers(0, 43),
    st.integers(0, 255),
    st.text(alphabet=_NONCE_ALPHABET[:4] + "=\n -_é\udcff\x00", max_size=3),
)
def test_inspect_agrees_with_a_model_for_any_nonce(
    source: str,
    issued_at: float,
    age: float,
    mutation: str,
    at: int,
    value: int,
    insert: str,
) -> None:
    factory = NonceFactory(SECRET, 300.0, issuer=1)
    maker = {
        "ours": factory,
        "other issuer": NonceFactory(SECRET, 300.0, issuer=2),
        "other install": NonceFactory(_OTHER_SECRET, 300.0, issuer=1),
        "restarted": NonceFactory(SECRET, 300.0, issuer=1),
    }[source]
    nonce = maker.make(issued_at)
    if mutation == "flip byte":
        raw = bytearray(base64.b64decode(nonce))
        raw[at % len(raw)] ^= value or 1
        nonce = base64.b64encode(bytes(raw)).decode()
    elif mutation == "splice text":
        nonce = nonce[:at] + insert + nonce[at + len(insert) % 2 :]
    origin = base64.b64decode(factory.make(0.0))[8:11]
    now = issued_at + age
    expected = _model_state(SECRET, origin, 300.0, nonce, now)
    assert factory.inspect(nonce, now) == expected
    assert factory.check(nonce, now) is expected[0]
    if expected[0] is not NonceState.INVALID:
        assert NonceFactory.issued_ms(nonce) == expected[1]


def test_inspect_gives_the_time_stamp_of_our_nonces() -> None:
    factory = NonceFactory(SECRET, 300.0, issuer=4)
    nonce = factory.make(1_234.5678)
    assert factory.inspect(nonce, 1_300.0) == (NonceState.VALID, 1_234_567)
    assert factory.inspect(nonce, 1_600.0) == (NonceState.STALE, 1_234_567)
    assert NonceFactory(SECRET, 300.0, issuer=4).inspect(nonce, 1_300.0) == (
        NonceState.STALE,
        1_234_567,
    )
    assert factory.inspect(nonce[:-1] + ("A" if nonce[-1] != "A" else "B"), 1_300.0) == (
        NonceState.INVALID,
        0,
    )


# What phones send, varied: every parameter of an answer, in any order, quoted or bare as
# phones differ, with the values they carry (SHA-256 and -sess, odd qop, non-ASCII users).
_PHONE_PARAMS: dict[str, list[str]] = {
    "username": ["alice", "1001", "jürgen", "a, b=c", 'a\\"b', ""],
    "realm": ["pbx.test", "other.test", ""],
    "nonce": ["AAABkmQ0Zb8Yv7Ww3K+f/a1Q==", "n"],
    "uri": ["sip:pbx.test", "sip:[2001:db8::1]:5060;transport=udp", "sip:1002@pbx.test"],
    "response": ["6629fae49393a05397450978507c4ef1", "0123", "é"],
    "algorithm": ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess", "md5"],
    "cnonce": ["0a4f113b", "c,d", ""],
    "qop": ["auth", "AUTH", "auth-int", "auth,auth-int"],
    "nc": ["00000001", "0000000a", "1", "00000001 "],
    "opaque": ["5ccc069c403ebaf9f0171e9517f40e41"],
}
_ALWAYS_QUOTED = {"username", "realm", "nonce", "uri", "response", "cnonce", "opaque"}


@st.composite
def _phone_header(draw: st.DrawFn) -> tuple[str, bool]:
    """(an Authorization value, whether it is in the shape the fast path must take)."""
    names = draw(st.permutations(list(_PHONE_PARAMS)))
    names = names[: draw(st.integers(min_value=1, max_value=len(names)))]  # missing ones
    common = True
    parts = []
    for name in names:
        value = draw(st.sampled_from(_PHONE_PARAMS[name]))
        quoted = name in _ALWAYS_QUOTED or draw(st.booleans())
        if quoted:
            common = common and "\\" not in value and '"' not in value
            value = f'"{value}"'
        elif any(c in value for c in ', "\\'):
            common = False
        spelled = name if draw(st.integers(0, 9)) else name.upper()
        common = common and spelled == name
        parts.append(f"{spelled}={value}")
    separator = draw(st.sampled_from([", ", ",", ", ", ",  ", " , "]))
    common = common and separator in (", ", ",")
    text = "Digest " + separator.join(parts)
    mutation = draw(st.sampled_from(["none", "none", "repeat", "truncate", "space", "tail"]))
    if mutation == "repeat":  # a parameter given twice: malformed
        text += separator + parts[draw(st.integers(0, len(parts) - 1))]
        common = False
    elif mutation == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
        common = False
    elif mutation == "space":  # odd whitespace somewhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([" ", "\t", "  ", "\r\n "])) + text[at:]
        common = False
    elif mutation == "tail":
        text += draw(st.sampled_from([",", ", ", " ", ",,"]))
        common = False
    return text, common


@given(_phone_header())
def test_fast_parser_agrees_on_what_phones_send(case: tuple[str, bool]) -> None:
    text, common = case
    _agrees(text)
    if common:  # the usual shapes must not fall back to the slow reader
        assert _common_credentials(text) is not None


@given(st.permutations(["username", "realm", "nonce", "uri", "response", "cnonce", "opaque"]))
def test_every_order_of_a_quoted_answer_takes_the_fast_path(names: list[str]) -> None:
    text = "Digest " + ", ".join(f'{name}="{_PHONE_PARAMS[name][0]}"' for name in names)
    text += ", algorithm=SHA-256-sess, qop=auth, nc=00000001"
    fast = _common_credentials(text)
    assert fast is not None and fast == _reference(text)
    assert (fast.algorithm, fast.qop, fast.nc) == ("SHA-256-sess", "auth", "00000001")


def test_verifier_response_matches_compute_response() -> None:
    ha1_value = ha1("alice", "pbx.test", "secret")
    for algorithm, sha256, sess in (
        ("MD5", False, False),
        ("SHA-256", True, False),
        ("MD5-sess", False, True),
        ("SHA-256-sess", True, True),
    ):
        ha2 = request_ha2("REGISTER", "sip:pbx.test", algorithm)
        for qop, nc in ((None, None), ("auth", "0000000a")):
            expected = compute_response(
                ha1_value, "REGISTER", "sip:pbx.test", "nönce", algorithm, qop, nc, "c"
            )
            got = verifier_response(ha1_value, ha2, "nönce", sha256, sess, nc, "c")
            assert got == expected
