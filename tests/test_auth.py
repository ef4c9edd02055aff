"""The server-side authenticator (core/security/auth.py): challenges, verification, and what
must not leak.

Requests are parsed from bytes; the clock is a float moved by hand; the client side is the
real `build_authorization`, so every success here is a client/server round trip.
"""

from __future__ import annotations

import base64
import math
import re
from collections import OrderedDict
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.security.auth import (
    AuthFailure,
    AuthResult,
    DigestAuthenticator,
    NonceCounts,
    _nonce_count,
    _same_uri,
)
from core.settings import AuthSettings
from core.sip import Request, Response, SipParseError, parse_message
from core.sip.digest import (
    NonceFactory,
    NonceState,
    build_authorization,
    canonical_algorithm,
    ha1,
    pick_challenge,
    request_ha2,
    response_from_ha2,
)
from core.sip.fields import AuthParams, format_auth, parse_auth

REALM = "pbx.test"
SECRET = b"per-install-secret-for-tests-0001"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
T0 = 1_700_000_000.0


def lookup(username: str) -> tuple[str, str] | None:
    password = PASSWORDS.get(username)
    if password is None:
        return None
    return ha1(username, REALM, password, "MD5"), ha1(username, REALM, password, "SHA-256")


# Most tests here exercise both algorithms, so they start from the SHA-256 opt-in.
BOTH = AuthSettings(algorithms=("SHA-256", "MD5"))


def authenticator(**changes: object) -> DigestAuthenticator:
    settings = replace(BOTH, **changes)  # type: ignore[arg-type]
    return DigestAuthenticator(REALM, SECRET, settings, lookup)


def register(auth: str | None = None, header: str = "Authorization", uri: str = REALM) -> Request:
    lines = [
        f"REGISTER sip:{uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
        "Max-Forwards: 70",
        f"From: <sip:alice@{REALM}>;tag=1928301774",
        f"To: <sip:alice@{REALM}>",
        "Call-ID: a84b4c76e66710@192.0.2.10",
        "CSeq: 2 REGISTER",
        "Contact: <sip:alice@192.0.2.10:5060>",
    ]
    if auth is not None:
        lines.append(f"{header}: {auth}")
    lines.append("Content-Length: 0")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def invite(auth: str | None = None, header: str = "Proxy-Authorization") -> Request:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\n"
    lines = [
        f"INVITE sip:bob@{REALM} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKnashds8",
        "Max-Forwards: 70",
        f"From: <sip:alice@{REALM}>;tag=8321234356",
        f"To: <sip:bob@{REALM}>",
        "Call-ID: 3848276298220188511@192.0.2.10",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@192.0.2.10:5060>",
        "Content-Type: application/sdp",
    ]
    if auth is not None:
        lines.append(f"{header}: {auth}")
    lines.append(f"Content-Length: {len(body)}")
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    assert isinstance(message, Request)
    return message


def challenges(response: Response | None, header: str = "WWW-Authenticate") -> list[AuthParams]:
    assert response is not None, "expected a challenge"
    return [parse_auth(value) for value in response.headers.get_all(header)]


def answer(
    result: AuthResult,
    request: Request,
    *,
    username: str = "alice",
    password: str | None = None,
    algorithm: str = "SHA-256",
    qop: bool = True,
    nc: int = 1,
    header: str = "WWW-Authenticate",
) -> str:
    """What a phone sends back for `result.challenge`, computed by the real client helper."""
    assert result.challenge is not None
    offered = [c for c in challenges(result.challenge, header) if c.get("algorithm") == algorithm]
    assert offered, f"{algorithm} not offered"
    challenge = offered[0]
    if not qop:
        challenge = AuthParams(
            challenge.scheme, {k: v for k, v in challenge.params.items() if k != "qop"}
        )
    if password is None:
        password = PASSWORDS.get(username, "whatever")
    return build_authorization(
        challenge, username, password, request.method, str(request.uri), cnonce="0a4f113b", nc=nc
    )


def first_round(server: DigestAuthenticator, now: float = T0) -> AuthResult:
    result = server.check(register(), now, proxy=False)
    assert result.challenge is not None
    return result


# -- challenges ---------------------------------------------------------------------------


def test_a_request_without_credentials_gets_a_401_that_is_not_a_failure() -> None:
    result = authenticator().check(register(), T0, proxy=False)
    assert result.username is None and not result.authenticated
    assert result.failure is None
    assert result.counts_as_failure is False
    assert result.claimed_user is None
    response = result.challenge
    assert response is not None
    assert response.status == 401
    assert response.reason == "Unauthorized"
    assert response.to_tag is not None
    assert response.call_id == "a84b4c76e66710@192.0.2.10"
    offered = challenges(response)
    assert [c.get("algorithm") for c in offered] == ["SHA-256", "MD5"]
    for challenge in offered:
        assert challenge.scheme == "Digest"
        assert challenge.get("realm") == REALM
        assert challenge.get("qop") == "auth"
        assert challenge.get("stale") is None
    assert offered[0].get("nonce") == offered[1].get("nonce")
    assert pick_challenge(offered) is offered[0]
    assert "Proxy-Authenticate" not in response.headers


def test_algorithms_are_offered_in_settings_order() -> None:
    result = authenticator(algorithms=("MD5",)).check(register(), T0, proxy=False)
    assert result.challenge is not None
    assert [c.get("algorithm") for c in challenges(result.challenge)] == ["MD5"]
    result = authenticator(algorithms=("md5", "SHA-256")).check(register(), T0, proxy=False)
    assert result.challenge is not None
    assert [c.get("algorithm") for c in challenges(result.challenge)] == ["MD5", "SHA-256"]


def test_proxy_mode_uses_407_and_proxy_headers() -> None:
    server = authenticator()
    result = server.check(invite(), T0, proxy=True)
    assert result.challenge is not None
    assert result.challenge.status == 407
    assert len(challenges(result.challenge, "Proxy-Authenticate")) == 2
    assert "WWW-Authenticate" not in result.challenge.headers
    # An Authorization header is not a Proxy-Authorization: still a first request.
    credentials = answer(result, invite(), header="Proxy-Authenticate")
    ignored = server.check(invite(credentials, header="Authorization"), T0, proxy=True)
    assert ignored.failure is None and ignored.challenge is not None
    accepted = server.check(invite(credentials), T0 + 1, proxy=True)
    assert accepted.username == "alice"


def test_unsupported_algorithm_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        authenticator(algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        authenticator(algorithms=())


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("qop", [True, False])
def test_round_trip(algorithm: str, qop: bool) -> None:
    server = authenticator(allow_digest_without_qop=not qop)
    credentials = answer(first_round(server), register(), algorithm=algorithm, qop=qop)
    assert ("qop=auth" in credentials) is qop
    result = server.check(register(credentials), T0 + 2, proxy=False)
    assert result == AuthResult(username="alice", claimed_user="alice")
    assert result.authenticated


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_round_trip_invite_with_body(algorithm: str) -> None:
    server = authenticator()
    challenge = server.check(invite(), T0, proxy=True)
    credentials = answer(challenge, invite(), algorithm=algorithm, header="Proxy-Authenticate")
    assert server.check(invite(credentials), T0 + 1, proxy=True).username == "alice"


def test_sess_algorithm_when_offered() -> None:
    server = authenticator(algorithms=("SHA-256-sess", "MD5"))
    result = first_round(server)
    credentials = answer(result, register(), algorithm="SHA-256-sess")
    assert server.check(register(credentials), T0, proxy=False).username == "alice"


def test_upper_case_hex_response_is_accepted() -> None:
    server = authenticator()
    credentials = answer(first_round(server), register())
    response = re.search(r'response="([0-9a-f]+)"', credentials)
    assert response is not None
    shouting = credentials.replace(response.group(1), response.group(1).upper())
    assert server.check(register(shouting), T0, proxy=False).username == "alice"


def test_several_credentials_pick_the_one_for_our_realm() -> None:
    server = authenticator()
    ours = answer(first_round(server), register())
    theirs = ours.replace(f'realm="{REALM}"', 'realm="upstream.example"')
    request = register(theirs)
    request.headers.add("Authorization", ours)
    assert server.check(request, T0, proxy=False).username == "alice"


# -- nonces -------------------------------------------------------------------------------


def test_stale_nonce_with_the_right_password_gets_stale_true_and_is_not_counted() -> None:
    server = authenticator(nonce_lifetime=300.0)
    credentials = answer(first_round(server, T0), register())
    later = T0 + 301.0
    result = server.check(register(credentials), later, proxy=False)
    assert result.failure is AuthFailure.STALE_NONCE
    assert result.failure == "stale nonce"
    assert result.counts_as_failure is False
    assert result.claimed_user == "alice"
    assert result.username is None
    assert result.challenge is not None and result.challenge.status == 401
    offered = challenges(result.challenge)
    assert [c.get("stale") for c in offered] == ["true", "true"]
    # The phone retries silently with the fresh nonce, and gets in.
    retry = answer(result, register())
    assert server.check(register(retry), later + 0.1, proxy=False).username == "alice"


def test_stale_nonce_with_a_wrong_password_is_a_plain_failure() -> None:
    server = authenticator(nonce_lifetime=300.0)
    credentials = answer(first_round(server, T0), register(), password="guess")
    result = server.check(register(credentials), T0 + 301.0, proxy=False)
    assert result.failure is AuthFailure.WRONG_PASSWORD
    assert result.counts_as_failure is True
    assert result.challenge is not None
    assert all(c.get("stale") is None for c in challenges(result.challenge))


def test_a_nonce_another_process_issued_gets_stale_true_so_no_count_is_bypassed() -> None:
    # Two workers: each keeps its own nonce counts. A request captured on its way to one and
    # sent to the other (a Call-ID the other owns) must not pass there on an empty table.
    first = DigestAuthenticator(REALM, SECRET, BOTH, lookup, issuer=1)
    second = DigestAuthenticator(REALM, SECRET, BOTH, lookup, issuer=2)
    credentials = answer(first_round(first), register())
    assert first.check(register(credentials), T0 + 1, proxy=False).username == "alice"
    elsewhere = second.check(register(credentials), T0 + 1, proxy=False)
    assert elsewhere.username is None
    assert elsewhere.failure is AuthFailure.STALE_NONCE
    assert elsewhere.counts_as_failure is False  # a phone that moved is not an attacker
    assert [c.get("stale") for c in challenges(elsewhere.challenge)] == ["true", "true"]
    # The phone answers the fresh challenge, issued there, and gets in there.
    retry = answer(elsewhere, register())
    assert second.check(register(retry), T0 + 2, proxy=False).username == "alice"


def test_a_nonce_from_before_a_restart_gets_stale_true() -> None:
    # The nonce counts lived in the process that stopped: a captured request must not pass
    # on the empty table of the one that replaced it.
    credentials = answer(first_round(authenticator()), register())
    restarted = authenticator().check(register(credentials), T0 + 1, proxy=False)
    assert restarted.failure is AuthFailure.STALE_NONCE
    assert restarted.counts_as_failure is False


def test_nonce_just_inside_its_lifetime_is_fine() -> None:
    server = authenticator(nonce_lifetime=300.0)
    credentials = answer(first_round(server, T0), register())
    assert server.check(register(credentials), T0 + 299.0, proxy=False).username == "alice"


def test_a_nonce_in_use_goes_stale_on_its_issue_time_not_its_first_use() -> None:
    # After its first answer a nonce is not MAC-checked again (its count is kept with its
    # time stamp): its later answers must still meet the same lifetime and clock-skew rules.
    server = authenticator(nonce_lifetime=300.0)
    challenge = first_round(server, T0)
    first = answer(challenge, register(), nc=1)
    assert server.check(register(first), T0 + 200.0, proxy=False).username == "alice"
    inside = answer(challenge, register(), nc=2)
    assert server.check(register(inside), T0 + 299.0, proxy=False).username == "alice"
    outside = server.check(register(answer(challenge, register(), nc=3)), T0 + 301.0, proxy=False)
    assert outside.failure is AuthFailure.STALE_NONCE
    assert outside.counts_as_failure is False
    # A clock stepped back behind the issue time: stale, as on its first use.
    earlier = server.check(register(answer(challenge, register(), nc=4)), T0 - 2.0, proxy=False)
    assert earlier.failure is AuthFailure.STALE_NONCE
    assert server.check(register(answer(challenge, register(), nc=4)), T0 + 1, proxy=False).username


def test_nonce_counts_keep_the_time_stamp_they_are_given() -> None:
    counts = NonceCounts(capacity=3, max_age=10.0)
    assert counts.issued_ms("a") is None
    assert counts.accept("a", 1, 5.0, issued_ms=1_000)
    assert counts.issued_ms("a") == 1_000
    assert counts.accept("a", 2, 6.0)
    assert counts.issued_ms("a") == 1_000
    assert counts.accept("b", 1, 6.0)
    assert counts.issued_ms("b") == 6_000
    assert counts.accept("c", 1, 11.5)  # "a", stamped at 1.0, is past max_age and goes
    assert counts.issued_ms("a") is None and len(counts) == 2


def test_answers_carry_the_to_tag_the_caller_gives() -> None:
    server = authenticator()
    tagged = server.check(
        register(), T0, proxy=False, tag=lambda request: "pbx" + request.call_id[:4]
    )
    assert tagged.challenge is not None and tagged.challenge.to_tag == "pbxa84b"
    wrong = answer(tagged, register(), password="guess")
    failed = server.check(register(wrong), T0, proxy=False, tag=lambda request: "t1")
    assert failed.challenge is not None and failed.challenge.to_tag == "t1"
    bad = server.check(register('Digest realm="x'), T0, proxy=False, tag=lambda request: "t2")
    assert bad.challenge is not None and bad.challenge.status == 400
    assert bad.challenge.to_tag == "t2"


def test_forged_and_tampered_nonces_are_bad_nonces() -> None:
    server = authenticator()
    credentials = answer(first_round(server), register())
    nonce = re.search(r'nonce="([^"]+)"', credentials)
    assert nonce is not None
    tampered = nonce.group(1)[:-1] + ("A" if nonce.group(1)[-1] != "A" else "B")
    for forged in (tampered, "dcd98b7102dd2f0e8b11d0f600bfb0c093"):
        challenge = AuthParams("Digest", {"realm": REALM, "nonce": forged, "algorithm": "MD5"})
        sent = build_authorization(
            challenge, "alice", PASSWORDS["alice"], "REGISTER", "sip:pbx.test"
        )
        result = server.check(register(sent), T0, proxy=False)
        assert result.failure is AuthFailure.BAD_NONCE, forged
        assert result.counts_as_failure is True
        assert result.claimed_user == "alice"
    # A nonce from another install (another secret) is not ours either.
    other = DigestAuthenticator(REALM, b"another-install-secret-0002", BOTH, lookup)
    foreign = answer(first_round(other), register())
    assert server.check(register(foreign), T0, proxy=False).failure is AuthFailure.BAD_NONCE


def test_replayed_nonce_count_is_rejected() -> None:
    server = authenticator()
    result = first_round(server)
    first = answer(result, register(), nc=1)
    assert server.check(register(first), T0, proxy=False).username == "alice"
    replay = server.check(register(first), T0 + 1, proxy=False)
    assert replay.failure is AuthFailure.REPLAYED_NC
    assert replay.counts_as_failure is True
    assert replay.challenge is not None
    second = answer(result, register(), nc=2)
    assert server.check(register(second), T0 + 2, proxy=False).username == "alice"
    fifth = answer(result, register(), nc=5)
    assert server.check(register(fifth), T0 + 3, proxy=False).username == "alice"
    # Going backwards is a replay too, even with a count never used before.
    fourth = answer(result, register(), nc=4)
    assert server.check(register(fourth), T0 + 4, proxy=False).failure is AuthFailure.REPLAYED_NC


def test_answers_without_qop_are_refused_by_default() -> None:
    # No nc, so nothing would stop a captured answer being replayed for the nonce's lifetime.
    server = authenticator()
    credentials = answer(first_round(server), register(), qop=False)
    result = server.check(register(credentials), T0 + 1, proxy=False)
    assert result.failure is AuthFailure.MISSING_QOP
    assert result.counts_as_failure is True and result.challenge is not None


def test_answers_without_qop_when_allowed_are_single_use() -> None:
    # The switch for very old phones: each nonce answers one qop-less request.
    server = authenticator(allow_digest_without_qop=True)
    credentials = answer(first_round(server), register(), qop=False)
    assert server.check(register(credentials), T0 + 1, proxy=False).username == "alice"
    replay = server.check(register(credentials), T0 + 2, proxy=False)
    assert replay.failure is AuthFailure.REPLAYED_NC


def test_a_failed_attempt_does_not_burn_the_nonce_count() -> None:
    server = authenticator()
    result = first_round(server)
    wrong = answer(result, register(), password="guess", nc=1)
    assert server.check(register(wrong), T0, proxy=False).failure is AuthFailure.WRONG_PASSWORD
    right = answer(result, register(), nc=1)
    assert server.check(register(right), T0, proxy=False).username == "alice"


def test_nonce_counts_are_bounded_and_forget_expired_nonces() -> None:
    counts = NonceCounts(capacity=3, max_age=10.0)
    assert counts.accept("a", 1, 0.0)
    assert counts.accept("b", 1, 1.0)
    assert counts.accept("c", 1, 2.0)
    assert counts.accept("d", 1, 3.0)  # full: "a" goes
    assert len(counts) == 3
    assert counts.accept("a", 1, 3.0)  # forgotten, so accepted again ("b" goes)
    assert not counts.accept("c", 1, 3.0)
    assert counts.accept("c", 2, 4.0)  # an update keeps "c" where it was, first seen at 2.0
    assert counts.accept("e", 1, 12.5)  # "c" is older than max_age and goes
    assert len(counts) == 3
    assert not counts.accept("d", 1, 12.5)
    assert counts.accept("c", 1, 12.5)
    with pytest.raises(ValueError):
        NonceCounts(capacity=0, max_age=1.0)


# -- checks against the request -----------------------------------------------------------


def test_credentials_for_another_realm_are_a_realm_mismatch() -> None:
    server = authenticator()
    foreign = AuthParams("Digest", {"realm": "other.example", "nonce": "n", "qop": "auth"})
    sent = build_authorization(foreign, "alice", PASSWORDS["alice"], "REGISTER", "sip:pbx.test")
    result = server.check(register(sent), T0, proxy=False)
    assert result.failure is AuthFailure.REALM_MISMATCH
    assert result.claimed_user == "alice"
    assert result.counts_as_failure is True
    assert result.challenge is not None and result.challenge.status == 401


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="alice", realm="pbx.test", nonce="unterminated',
        'Digest username="alice", username="alice", realm="pbx.test"',
    ],
)
def test_credentials_breaking_the_grammar_get_400_and_count(value: str) -> None:
    # RFC 4475 §3.1.2: a header the route reads that breaks its grammar is a bad request.
    result = authenticator().check(register(value), T0, proxy=False)
    assert result.failure is AuthFailure.MALFORMED
    assert result.counts_as_failure is True
    assert result.challenge is not None and result.challenge.status == 400
    assert result.challenge.reason == "Bad Authorization header"


def test_digest_uri_must_be_the_request_uri() -> None:
    server = authenticator()
    result = first_round(server)
    challenge = challenges(result.challenge)[0]
    sent = build_authorization(
        challenge, "alice", PASSWORDS["alice"], "REGISTER", "sip:elsewhere.example", cnonce="c"
    )
    mismatch = server.check(register(sent), T0, proxy=False)
    assert mismatch.failure is AuthFailure.URI_MISMATCH
    assert mismatch.counts_as_failure is True
    # The same URI spelled with a differently cased host still names the same resource.
    sent = build_authorization(challenge, "alice", PASSWORDS["alice"], "REGISTER", "sip:pbx.test")
    request = register(sent, uri="PBX.Test")
    assert str(request.uri) == "sip:PBX.Test"
    assert server.check(request, T0, proxy=False).username == "alice"
    # A URI that does not even parse is a mismatch, not an exception.
    sent = build_authorization(challenge, "alice", "x", "REGISTER", "sip:bad host", cnonce="d")
    assert server.check(register(sent), T0, proxy=False).failure is AuthFailure.URI_MISMATCH


def test_method_is_part_of_the_digest() -> None:
    server = authenticator()
    result = first_round(server)
    challenge = challenges(result.challenge)[0]
    sent = build_authorization(challenge, "alice", PASSWORDS["alice"], "INVITE", "sip:pbx.test")
    assert server.check(register(sent), T0, proxy=False).failure is AuthFailure.WRONG_PASSWORD


def test_username_swapped_after_signing_fails() -> None:
    server = authenticator()
    credentials = answer(first_round(server), register())
    as_bob = credentials.replace('username="alice"', 'username="bob"')
    result = server.check(register(as_bob), T0, proxy=False)
    assert result.failure is AuthFailure.WRONG_PASSWORD
    assert result.claimed_user == "bob"
    as_nobody = credentials.replace('username="alice"', 'username="mallory"')
    result = server.check(register(as_nobody), T0, proxy=False)
    assert result.failure is AuthFailure.UNKNOWN_USER
    assert result.claimed_user == "mallory"


# -- what must not leak -------------------------------------------------------------------


def _shape(response: Response) -> list[tuple[str, str]]:
    """Every header but with the nonce and To-tag blanked: what an attacker can compare."""
    shape = [("status", f"{response.status} {response.reason}")]
    for name, value in response.headers:
        value = re.sub(r'nonce="[^"]*"', 'nonce="*"', value)
        value = re.sub(r";tag=[^;>]*", ";tag=*", value)
        shape.append((name, value))
    shape.append(("body", response.body.decode()))
    return shape


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_unknown_user_and_wrong_password_look_the_same(algorithm: str) -> None:
    server = authenticator()
    wrong = answer(first_round(server), register(), password="guess", algorithm=algorithm)
    unknown = answer(
        first_round(server), register(), username="mallory", password="guess", algorithm=algorithm
    )
    wrong_result = server.check(register(wrong), T0, proxy=False)
    unknown_result = server.check(register(unknown), T0, proxy=False)
    assert wrong_result.failure is AuthFailure.WRONG_PASSWORD
    assert unknown_result.failure is AuthFailure.UNKNOWN_USER
    assert wrong_result.counts_as_failure and unknown_result.counts_as_failure
    assert wrong_result.challenge is not None and unknown_result.challenge is not None
    assert _shape(wrong_result.challenge) == _shape(unknown_result.challenge)
    # ...and the same as the challenge to a first request: nothing says "try again".
    first = first_round(server).challenge
    assert first is not None
    assert _shape(wrong_result.challenge) == _shape(first)
    assert wrong_result.challenge.to_bytes().count(b"\r\n") == (
        unknown_result.challenge.to_bytes().count(b"\r\n")
    )


# -- malformed input never raises ---------------------------------------------------------

MALFORMED = [
    "Digest",
    "garbage",
    "Basic YWxpY2U6YWxpY2Utc2VjcmV0LTE=",
    'Digest username="alice", realm="pbx.test", uri="sip:pbx.test", response="00"',  # no nonce
    'Digest realm="pbx.test", nonce="n", uri="sip:pbx.test", response="00"',  # no username
]


@pytest.mark.parametrize("value", MALFORMED)
def test_malformed_credentials_get_a_fresh_challenge(value: str) -> None:
    result = authenticator().check(register(value), T0, proxy=False)
    assert result.failure is AuthFailure.MALFORMED
    assert result.counts_as_failure is True
    assert result.username is None
    assert result.challenge is not None and result.challenge.status == 401


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("qop=auth", "qop=auth-int"),  # not offered
        ("nc=00000001", "nc=1"),  # not 8 hex digits
        ("nc=00000001", "nc=0000000g"),
        (", nc=00000001", ""),  # qop without nc
        ('cnonce="0a4f113b", ', ""),  # qop without cnonce
        ("algorithm=SHA-256", "algorithm=SHA-512-256"),  # not offered
    ],
)
def test_broken_digest_parameters_are_malformed(old: str, new: str) -> None:
    server = authenticator()
    credentials = answer(first_round(server), register())
    assert old in credentials
    result = server.check(register(credentials.replace(old, new)), T0, proxy=False)
    assert result.failure is AuthFailure.MALFORMED
    assert result.claimed_user == "alice"


def test_algorithm_not_offered_is_malformed() -> None:
    sha_only = authenticator(algorithms=("SHA-256",))
    md5_only = authenticator(algorithms=("MD5",))
    credentials = answer(first_round(md5_only), register(), algorithm="MD5")
    # The nonce is from another authenticator with the same secret: only the algorithm differs.
    assert sha_only.check(register(credentials), T0, proxy=False).failure is AuthFailure.MALFORMED
    assert md5_only.check(register(credentials), T0, proxy=False).username == "alice"


def test_missing_algorithm_means_md5() -> None:
    server = authenticator()
    credentials = answer(first_round(server), register(), algorithm="MD5")
    bare = credentials.replace(", algorithm=MD5", "")
    assert "algorithm" not in bare
    assert server.check(register(bare), T0, proxy=False).username == "alice"


def test_hashes_of_many_digest_uris_are_remembered_and_long_ones_are_not() -> None:
    """HA2 is remembered per (algorithm, method, URI): an INVITE's URI is its callee, so the
    cache holds one per user called, and a peer's long URI is hashed but not kept."""
    from core.security import auth as auth_module

    server = authenticator()
    for n in range(3 * 1024):  # past the old limit of 1,024, which emptied the whole cache
        server._ha2("MD5", "INVITE", f"sip:u{n:05d}@{REALM}")
    assert len(server._ha2_cache) == 3 * 1024
    assert len(server._ha2_cache) <= auth_module._HA2_CACHE_SIZE
    long_uri = f"{REALM};x=" + "a" * auth_module._HA2_URI_LENGTH
    request = register(uri=long_uri)
    for attempt in (1, 2):
        credentials = answer(first_round(server), request, algorithm="MD5", nc=attempt)
        result = server.check(register(credentials, uri=long_uri), T0 + attempt, proxy=False)
        assert result.username == "alice"
    assert all(len(uri) <= auth_module._HA2_URI_LENGTH for _, _, uri in server._ha2_cache)


# -- the verifier against a reference -----------------------------------------------------


@given(st.text(alphabet="0123456789abcdefABCDEFgGx+_ /:@`\u0661\uff10", max_size=10))
def test_nonce_count_reads_exactly_eight_hex_digits(nc: str) -> None:
    hex_digits = set("0123456789abcdefABCDEF")
    expected = int(nc, 16) if len(nc) == 8 and hex_digits.issuperset(nc) else -1
    assert _nonce_count(nc) == expected


def test_nonce_count_refuses_every_character_beside_the_hex_digits() -> None:
    for code in range(0x250):
        char = chr(code)
        expected = int(char, 16) if char in "0123456789abcdefABCDEF" else -1
        assert _nonce_count("0000000" + char) == expected
        assert _nonce_count(char + "0000000") == (-1 if expected < 0 else expected << 28)


def _reference_check(
    server: DigestAuthenticator, counts: NonceCounts, request: Request, now: float, proxy: bool
) -> tuple[AuthFailure | None, str | None, str | None, bool, int | None, bool]:
    """The verdict the verifier gave before its fast paths, from the general pieces: the
    reference parser, the per-algorithm hash factories and `response_from_ha2`, on its own
    nonce-count table (the nonce factory is the server's: checking is pure)."""
    nonces = server._nonces
    offered = {name.upper(): name for name in BOTH.algorithms}
    values = request.headers.get_all("proxy-authorization" if proxy else "authorization")
    challenge = 407 if proxy else 401

    def fail(
        failure: AuthFailure, user: str | None, status: int = challenge
    ) -> tuple[AuthFailure | None, str | None, str | None, bool, int | None, bool]:
        return failure, user, None, True, status, False

    if not values:
        return None, None, None, False, challenge, False
    ours: AuthParams | None = None
    other: AuthParams | None = None
    unparsable = False
    for value in values:
        try:
            parsed = parse_auth(value)
        except SipParseError:
            return fail(AuthFailure.MALFORMED, None, 400)
        realm = parsed.get("realm")
        if parsed.scheme.lower() != "digest" or realm is None:
            unparsable = True
        elif realm == REALM:
            ours = parsed
            break
        elif other is None:
            other = parsed
    if ours is None:
        if unparsable or other is None:
            return fail(AuthFailure.MALFORMED, None)
        return fail(AuthFailure.REALM_MISMATCH, other.get("username"))
    params = ours.params
    username, nonce = params.get("username"), params.get("nonce")
    uri, response = params.get("uri"), params.get("response")
    algorithm = offered.get(params.get("algorithm", "MD5").upper())
    qop, nc, cnonce = params.get("qop"), params.get("nc"), params.get("cnonce")
    if username is None or nonce is None or uri is None or response is None or not algorithm:
        return fail(AuthFailure.MALFORMED, username)
    if qop is not None:
        if qop.lower() != "auth" or cnonce is None or nc is None:
            return fail(AuthFailure.MALFORMED, username)
        if len(nc) != 8 or not set("0123456789abcdefABCDEF").issuperset(nc):
            return fail(AuthFailure.MALFORMED, username)
        qop = "auth"
    elif algorithm.endswith("-sess") and cnonce is None:
        return fail(AuthFailure.MALFORMED, username)
    issued_ms = counts.issued_ms(nonce)
    state = nonces.check(nonce, now) if issued_ms is None else nonces.state_at(issued_ms, now)
    if state is NonceState.INVALID:
        return fail(AuthFailure.BAD_NONCE, username)
    if qop is None:
        return fail(AuthFailure.MISSING_QOP, username)
    if not _same_uri(uri, request.uri):
        return fail(AuthFailure.URI_MISMATCH, username)
    stored = lookup(username)
    pair = server._dummy_ha1s if stored is None else stored
    expected = response_from_ha2(
        pair[0 if algorithm.startswith("MD5") else 1],
        request_ha2(request.method, uri, algorithm),
        nonce,
        algorithm,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
    )
    matches = expected.encode() == response.lower().encode("utf-8", "surrogateescape")
    if stored is None:
        return fail(AuthFailure.UNKNOWN_USER, username)
    if not matches:
        return fail(AuthFailure.WRONG_PASSWORD, username)
    if state is NonceState.STALE:
        return AuthFailure.STALE_NONCE, username, None, False, challenge, True
    if issued_ms is None:
        issued_ms = NonceFactory.issued_ms(nonce)
    if not counts.accept(nonce, int(nc or "0", 16), now, issued_ms):
        return fail(AuthFailure.REPLAYED_NC, username)
    return None, username, username, False, None, False


def _verdict(
    result: AuthResult,
) -> tuple[AuthFailure | None, str | None, str | None, bool, int | None, bool]:
    challenge = result.challenge
    stale = challenge is not None and any(
        "stale=true" in value
        for value in (
            *challenge.headers.get_all("www-authenticate"),
            *challenge.headers.get_all("proxy-authenticate"),
        )
    )
    status = None if challenge is None else challenge.status
    return (
        result.failure,
        result.claimed_user,
        result.username,
        result.counts_as_failure,
        status,
        stale,
    )


# What a broken, odd or hostile client changes in an answer (old → new, applied when present).
_EDITS = [
    ("", ""),
    ("nc=00000001", "nc=0000000A"),
    ("nc=00000001", "nc=+0000001"),
    ("nc=00000001", "nc=0x000001"),
    ("nc=00000001", "nc=0000_001"),
    ("nc=00000001", "nc=\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0661"),
    ("nc=00000001", "nc=00000000"),
    ("nc=00000001", "nc=000000001"),
    ("nc=00000001", "NC=00000001"),
    ("qop=auth", "qop=AUTH"),
    ("qop=auth", 'qop="auth"'),
    ("qop=auth", "qop=auth-int"),
    ("qop=auth, ", ""),
    ("algorithm=MD5", "algorithm=md5"),
    ("algorithm=MD5", "algorithm=MD5-sess"),
    ("algorithm=MD5", "algorithm=SHA-512-256"),
    (", algorithm=MD5", ""),
    ("algorithm=SHA-256", "algorithm=sha-256"),
    ("algorithm=SHA-256", "algorithm=SHA-256-SESS"),
    ('realm="pbx.test"', 'realm="other.test"'),
    ('realm="pbx.test"', 'REALM="pbx.test"'),
    ('realm="pbx.test", ', ""),
    ('username="alice"', 'username="carol"'),
    ('username="alice"', 'username="bob"'),
    ('username="alice"', 'username="alice", username="alice"'),
    ('cnonce="0a4f113b", ', ""),
    ('uri="sip:pbx.test"', 'uri="sip:PBX.test"'),
    ('uri="sip:pbx.test"', 'uri="sip:elsewhere.test"'),
    ('response="', 'response="0'),
    ('response="', 'response="\u00e9'),
    ('nonce="', 'nonce="A'),
    ('nonce="', 'nonce=\\"'),
    ("Digest ", "Basic "),
    ("Digest ", "digest  "),
    (", ", ","),
    ('"', ""),
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["MD5", "SHA-256"]),
            st.sampled_from(["alice", "bob", "carol"]),
            st.booleans(),  # the right password
            st.integers(1, 3),  # nc
            st.sampled_from(_EDITS),
            st.sampled_from([0.0, 1.0, 400.0]),  # seconds on since the last request
            st.booleans(),  # a fresh challenge first
        ),
        min_size=1,
        max_size=8,
    )
)
def test_verdicts_match_the_reference_verifier(
    steps: list[tuple[str, str, bool, int, tuple[str, str], float, bool]],
) -> None:
    server = authenticator()
    counts = NonceCounts(BOTH.max_tracked_nonces, server._nonces.max_validity)
    now = T0
    result = first_round(server, now)
    for algorithm, user, right, nc, (old, new), step, fresh in steps:
        now += step
        if fresh:
            result = first_round(server, now)
        password = PASSWORDS.get(user, "x") if right else "wrong"
        value = answer(result, register(), username=user, password=password,
                       algorithm=algorithm, nc=nc)  # fmt: skip
        request = register(value.replace(old, new, 1) if old else value)
        assert _verdict(server.check(request, now, proxy=False)) == _reference_check(
            server, counts, request, now, False
        )


class _OrderedNonceCounts:
    """NonceCounts as it was, on an OrderedDict: the reference for the dict and deque."""

    def __init__(self, capacity: int, max_age: float) -> None:
        self.capacity, self.max_age = capacity, max_age
        self.table: OrderedDict[str, int] = OrderedDict()

    def issued_ms(self, nonce: str) -> int | None:
        entry = self.table.get(nonce)
        return None if entry is None else entry >> 32

    def accept(self, nonce: str, nc: int, now: float, issued_ms: int | None) -> bool:
        table = self.table
        entry = table.get(nonce)
        if entry is not None:
            if nc <= entry & 0xFFFFFFFF:
                return False
            table[nonce] = (entry & ~0xFFFFFFFF) | nc
            return True
        expired_before = math.floor((now - self.max_age) * 1000)
        while table:
            oldest = next(iter(table))
            if table[oldest] >> 32 >= expired_before and len(table) < self.capacity:
                break
            del table[oldest]
        stamp = max(0, math.floor(now * 1000)) if issued_ms is None else issued_ms
        table[nonce] = (stamp << 32) | nc
        return True


@given(
    st.integers(1, 5),
    st.lists(
        st.tuples(
            st.integers(0, 7),  # which nonce
            st.integers(0, 4),  # nc
            st.sampled_from([0.0, 0.0004, 0.25, 0.5, 3.0, 10.0, 11.0]),  # seconds on
            st.one_of(st.none(), st.integers(990_000, 1_100_000)),  # its time stamp
        ),
        max_size=40,
    ),
)
def test_nonce_counts_keep_what_the_ordered_dict_kept(
    capacity: int, steps: list[tuple[int, int, float, int | None]]
) -> None:
    counts, reference = NonceCounts(capacity, 10.0), _OrderedNonceCounts(capacity, 10.0)
    now = 1_000.0
    for which, nc, step, issued_ms in steps:
        now += step
        nonce = f"n{which}"
        assert counts.accept(nonce, nc, now, issued_ms) == reference.accept(
            nonce, nc, now, issued_ms
        )
        assert len(counts) == len(reference.table)
        for other in range(8):
            assert counts.issued_ms(f"n{other}") == reference.issued_ms(f"n{other}")


# -- the first use of a nonce: every kind a client may send, against the reference -----------

_OTHER_SECRET = b"another-install-secret-for-tests"


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["MD5", "SHA-256"]),
    st.sampled_from(["ours", "other issuer", "other install", "restarted"]),
    st.sampled_from([-5.0, -0.5, 0.0, 1.0, 299.0, 301.5, 10_000.0]),  # seconds since issued
    st.sampled_from(["none", "flip byte", "splice text"]),
    st.integers(0, 43),
    st.sampled_from(["A", "=", "-", "é", "\x00", "AA", ""]),
    st.booleans(),  # the right password
    st.integers(1, 3),  # how many times the same answer is sent
)
def test_a_fresh_nonce_first_use_matches_the_reference_verifier(
    algorithm: str,
    source: str,
    age: float,
    mutation: str,
    at: int,
    insert: str,
    right: bool,
    sends: int,
) -> None:
    server = authenticator()
    counts = NonceCounts(BOTH.max_tracked_nonces, server._nonces.max_validity)
    maker = {
        "ours": server._nonces,
        "other issuer": NonceFactory(SECRET, 300.0, issuer=7),
        "other install": NonceFactory(_OTHER_SECRET, 300.0),
        "restarted": NonceFactory(SECRET, 300.0),
    }[source]
    nonce = maker.make(T0)
    if mutation == "flip byte":
        raw = bytearray(base64.b64decode(nonce))
        raw[at % len(raw)] ^= 0x10
        nonce = base64.b64encode(bytes(raw)).decode()
    elif mutation == "splice text":
        nonce = nonce[:at] + insert + nonce[at + 1 :]
    challenge = next(
        c for c in challenges(first_round(server, T0).challenge) if c.get("algorithm") == algorithm
    )
    challenge = AuthParams(challenge.scheme, {**challenge.params, "nonce": nonce})
    value = build_authorization(
        challenge, "alice", PASSWORDS["alice"] if right else "wrong", "REGISTER",
        f"sip:{REALM}", cnonce="0a4f113b",
    )  # fmt: skip
    for _ in range(sends):
        request = register(value)
        got = _verdict(server.check(request, T0 + age, proxy=False))
        assert got == _reference_check(server, counts, request, T0 + age, False)


@pytest.mark.parametrize("proxy", [False, True])
@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256", "MD5"), ("md5", "SHA-256-sess")])
def test_challenge_headers_are_the_general_format(
    proxy: bool, stale: bool, algorithms: tuple[str, ...]
) -> None:
    server = authenticator(algorithms=algorithms)
    data = server.challenge(register(), T0, proxy=proxy, stale=stale)
    response = parse_message(data)
    assert isinstance(response, Response) and response.status == (407 if proxy else 401)
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    values = response.headers.get_all(name.lower())
    nonce = parse_auth(values[0]).get("nonce")
    assert nonce is not None and server._nonces.check(nonce, T0) is NonceState.VALID
    expected = []
    for algorithm in algorithms:
        params = [("realm", REALM, True), ("nonce", nonce, True)]
        text = format_auth("Digest", params) + f", algorithm={canonical_algorithm(algorithm)}"
        expected.append(text + ', qop="auth"' + (", stale=true" if stale else ""))
    assert values == expected
    assert f"\r\n{name}: {values[0]}\r\n" in data.decode()
