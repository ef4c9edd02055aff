"""The answers pbxtui writes itself, as bytes: the 401/407 challenge (and the 400 to broken
credentials) and the deterministic To-tag of every local final answer.

The challenge used to be built as a Response (make_response with the challenge lines) and
serialised (Message.to_bytes); it is now written straight from the request's lines. The
reference here is that old construction, over generated requests (several Vias, compact
names, odd From/To, with and without a To-tag, headers missing), both header names, stale
or not, and every algorithm offer: the bytes must be the same. Then, through the real route:
the To-tag recognises the ACK of our own 407, the REGISTER pair shares it, and a cached
challenge is resent byte for byte with the counters moved as before.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from conftest import USERS, start_pbx

from core.events import EventBus, SipTraffic
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import Outbox
from core.pbx import Pbx
from core.security.auth import AuthFailure, DigestAuthenticator
from core.settings import AuthSettings, ListenAddress
from core.sip import Request, Response, parse_message
from core.sip.digest import build_authorization, canonical_algorithm, ha1
from core.sip.fields import AuthParams, format_auth, parse_auth
from core.sip.message import make_response

T0 = 1_700_000_000.0
SECRET = b"per-install-secret-for-tests-0001"
TAG_SECRET = b"t" * 16
PASSWORD = USERS["alice"]  # the route's tests register the shared fixture's alice
FLOW = Flow("udp", ("198.51.100.7", 5070), ("192.0.2.1", 5060))
OFFERS = [("MD5",), ("SHA-256",), ("SHA-256", "MD5"), ("MD5", "SHA-256"), ("md5", "SHA-256-sess")]
REALMS = ["pbx.test", 'odd "realm" \\ x', "réseau.test"]


def _lookup_for(realm: str) -> Callable[[str], tuple[str, str] | None]:
    def lookup(username: str) -> tuple[str, str] | None:
        if username != "alice":
            return None
        return ha1(username, realm, PASSWORD, "MD5"), ha1(username, realm, PASSWORD, "SHA-256")

    return lookup


def _authenticator(
    realm: str = "pbx.test", algorithms: tuple[str, ...] = ("MD5",)
) -> DigestAuthenticator:
    settings = AuthSettings(algorithms=algorithms)
    return DigestAuthenticator(realm, SECRET, settings, _lookup_for(realm))


def _outbox(secret: bytes = TAG_SECRET, sent: list[tuple[bytes, Flow]] | None = None) -> Outbox:
    box: list[tuple[bytes, Flow]] = [] if sent is None else sent

    def send(data: bytes, flow: Flow) -> bool:
        box.append((data, flow))
        return True

    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "0.0.0.0", 5060)])
    return Outbox(
        identity=identity, bus=EventBus(), send=send, clock=lambda: 0.0, tag_secret=secret
    )


def _parse(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# -- generated requests -----------------------------------------------------------------

_FROMS = [
    "<sip:alice@pbx.test>;tag=1928301774",
    '"Alice \\"A\\"" <sip:alice@pbx.test>;tag=x-9;foo=bar',
    "sip:alice@pbx.test;tag=77",
    "Alice <sip:alice@pbx.test>",  # no tag
    "<sip:alice@pbx.test>;TAG=Up",
    "<sip:alice@pbx.test",  # broken: does not parse
]
_TOS = [
    "<sip:bob@pbx.test>",
    '"Bob" <sip:bob@pbx.test>;x=1',
    "sip:bob@pbx.test",
    "<sip:bob@pbx.test>;",  # a trailing ';'
    "<sip:bob@pbx.test> ; ",
    "<sip:bob@pbx.test>;tag=zz91",  # in dialog: keeps its tag
    "sip:bob@pbx.test;tag=a;b",
    "<sip:bob@pbx.test",  # broken
]
_CALL_IDS = ["a84b4c76e66710@192.0.2.10", "x", "3848276298220188511", "odd\xff-id@h"]
_VIAS = [
    "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
    "SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa;received=198.51.100.7",
    "SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK-2",
    "SIP / 2.0 / UDP host.example ; branch=z9hG4bKodd",
]


def _generated(rng: random.Random) -> bytes:
    method = rng.choice(["REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE"])
    compact = rng.random() < 0.4
    lines = [f"{method} sip:{'pbx.test' if method == 'REGISTER' else 'bob@pbx.test'} SIP/2.0"]
    vias = rng.sample(_VIAS, rng.randint(1, 3))
    if rng.random() < 0.3:
        lines.append(("v: " if compact else "Via: ") + ", ".join(vias))
    else:
        lines += [("v: " if compact else rng.choice(["Via: ", "VIA: "])) + v for v in vias]
    lines.append("Max-Forwards: 70")
    if rng.random() < 0.95:
        lines.append(("f: " if compact else "From: ") + rng.choice(_FROMS))
    if rng.random() < 0.95:
        lines.append(("t: " if compact else "To: ") + rng.choice(_TOS))
    if rng.random() < 0.95:
        lines.append(("i: " if compact else "Call-ID: ") + rng.choice(_CALL_IDS))
    if rng.random() < 0.95:
        lines.append(f"CSeq: {rng.randint(1, 99)} {method}")
    lines.append("Contact: <sip:alice@192.0.2.10:5060>")
    if rng.random() < 0.5:
        lines.append("User-Agent: Yealink SIP-T46S")
    lines.append(("l: " if compact else "Content-Length: ") + "0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _requests(count: int, seed: int) -> list[Request]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        out.append(_parse(_generated(rng)))
    return out


# -- the old construction ---------------------------------------------------------------


def _old_challenge(
    realm: str,
    algorithms: tuple[str, ...],
    request: Request,
    nonce: str,
    proxy: bool,
    stale: bool,
    tag: str,
) -> bytes:
    """What `DigestAuthenticator.challenge` sent before it wrote bytes: make_response with
    the keyed challenge lines, then to_bytes."""
    realm_param = format_auth("Digest", [("realm", realm, True)])
    key, name = (
        ("proxy-authenticate", "Proxy-Authenticate")
        if proxy
        else ("www-authenticate", "WWW-Authenticate")
    )
    lines = [
        (
            key,
            name,
            f'{realm_param}, nonce="{nonce}", algorithm={canonical_algorithm(algorithm)}, '
            f'qop="auth"' + (", stale=true" if stale else ""),
        )
        for algorithm in algorithms
    ]
    response = make_response(request, 407 if proxy else 401, to_tag=tag, keyed=lines)
    return response.to_bytes()


def _nonce_of(data: bytes, count: int) -> str:
    nonces = set(re.findall(rb'nonce="([^"]+)"', data))
    assert len(nonces) == 1 and len(re.findall(rb"nonce=", data)) == count
    return nonces.pop().decode("ascii")


@pytest.mark.parametrize("realm", REALMS)
@pytest.mark.parametrize("algorithms", OFFERS)
def test_challenge_bytes_are_what_make_response_serialised(
    realm: str, algorithms: tuple[str, ...]
) -> None:
    server = _authenticator(realm, algorithms)
    outbox = _outbox()
    seed = sum(map(ord, realm + "".join(algorithms)))  # not hash(): the same cases every run
    for index, request in enumerate(_requests(60, seed=seed)):
        proxy, stale = bool(index & 1), bool(index & 2)
        tag = outbox.local_tag(request)
        data = server.challenge(request, T0, proxy=proxy, stale=stale, tag=outbox.local_tag)
        nonce = _nonce_of(data, len(algorithms))
        assert server._nonces.check(nonce, T0).name == "VALID"
        assert data == _old_challenge(realm, algorithms, request, nonce, proxy, stale, tag)
        # Without a tag maker: a random tag, the rest the same.
        untagged = server.challenge(request, T0, proxy=proxy, stale=stale)
        random_tag = re.search(rb";tag=([0-9a-f]{12})\r\n", untagged)
        if random_tag is not None:
            nonce = _nonce_of(untagged, len(algorithms))
            expected = _old_challenge(
                realm, algorithms, request, nonce, proxy, stale, random_tag.group(1).decode()
            )
            assert untagged == expected


def _answer(challenge_bytes: bytes, request: Request, password: str, proxy: bool) -> str:
    response = parse_message(challenge_bytes)
    assert isinstance(response, Response)
    header = "proxy-authenticate" if proxy else "www-authenticate"
    offered = parse_auth(response.headers.get_all(header)[0])
    params = {k: v for k, v in offered.params.items() if k != "stale"}
    return build_authorization(
        AuthParams(offered.scheme, params), "alice", password, request.method, str(request.uri),
        cnonce="0a4f113b",
    )  # fmt: skip


def _with_credentials(request: Request, value: str, proxy: bool) -> Request:
    data = request.to_bytes()
    name = b"Proxy-Authorization" if proxy else b"Authorization"
    head, _, _ = data.partition(b"\r\n\r\n")
    return _parse(head + b"\r\n" + name + b": " + value.encode() + b"\r\n\r\n")


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256", "MD5")])
def test_every_answer_check_builds_is_the_old_construction(algorithms: tuple[str, ...]) -> None:
    """Through `check`: the first challenge, a wrong password, an unknown user, a stale nonce
    (stale=true) and broken credentials (the 400), each the bytes the old path serialised,
    with the status and the verdict as before."""
    server = _authenticator("pbx.test", algorithms)
    outbox = _outbox()
    tag = outbox.local_tag
    seen: set[AuthFailure | None] = set()
    for index, request in enumerate(_requests(40, seed=7)):
        if request.headers.get("to") is None or request.headers.get("call-id") is None:
            continue
        proxy = request.method != "REGISTER"
        status = 407 if proxy else 401
        first = server.check(request, T0, proxy=proxy, tag=tag)
        assert first.status == status and first.failure is None and first.answer is not None
        nonce = _nonce_of(first.answer, len(algorithms))
        expected = _old_challenge(
            "pbx.test", algorithms, request, nonce, proxy, False, tag(request)
        )
        assert first.answer == expected
        cases = [
            (_answer(first.answer, request, "wrong", proxy), T0, AuthFailure.WRONG_PASSWORD),
            (_answer(first.answer, request, PASSWORD, proxy), T0 + 400.0, AuthFailure.STALE_NONCE),
            ('Digest realm="pbx.test", nonce="x', T0, AuthFailure.MALFORMED),
        ]
        if index % 3 == 0:
            value = _answer(first.answer, request, PASSWORD, proxy).replace("alice", "mallory")
            cases.append((value, T0, AuthFailure.UNKNOWN_USER))
        for value, now, failure in cases:
            asked = _with_credentials(request, value, proxy)
            result = server.check(asked, now, proxy=proxy, tag=tag)
            assert result.failure is failure and result.answer is not None
            seen.add(failure)
            if value.endswith('nonce="x'):  # grammar broken: the 400
                header = "Proxy-Authorization" if proxy else "Authorization"
                reference = make_response(
                    asked, 400, f"Bad {header} header", to_tag=tag(asked)
                ).to_bytes()
                assert result.status == 400 and result.answer == reference
                continue
            stale = failure is AuthFailure.STALE_NONCE
            nonce = _nonce_of(result.answer, len(algorithms))
            reference = _old_challenge(
                "pbx.test", algorithms, asked, nonce, proxy, stale, tag(asked)
            )
            assert result.status == status and result.answer == reference
            challenge = result.challenge  # the parsed view, for readers
            assert challenge is not None and challenge.to_bytes() == result.answer
    assert seen >= {
        AuthFailure.WRONG_PASSWORD,
        AuthFailure.STALE_NONCE,
        AuthFailure.MALFORMED,
        AuthFailure.UNKNOWN_USER,
    }


def test_a_realm_that_would_not_serialise_is_refused() -> None:
    with pytest.raises(ValueError):
        _authenticator("pbx\r\ntest")


# -- the local To-tag -------------------------------------------------------------------

_OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5070;branch=z9hG4bK-77;rport\r\n"
    b"f: <sip:100@pbx.test>;tag=ab\r\nt: <sip:pbx.test>\r\ni: c1@x\r\nCSeq: 3 OPTIONS\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
# The tag of _OPTIONS under TAG_SECRET, pinned: a tag sent before an upgrade or a restart
# (the 407 whose ACK comes after) must still be recognised after it.
_KNOWN_TAG = "pbx1564308947"


def test_local_tag_is_pinned_and_a_token() -> None:
    tag = _outbox().local_tag(_parse(_OPTIONS))
    assert tag == _KNOWN_TAG
    assert re.fullmatch(r"pbx[0-9]{1,10}", tag)


def test_local_tag_is_the_same_in_every_process_sharing_the_secret() -> None:
    """Workers are separate interpreters (core/cluster/pool.py), each with its own str hash
    seed: the tag must not depend on it."""
    script = (
        "import sys\n"
        "from core.events import EventBus\n"
        "from core.net.identity import ServerIdentity\n"
        "from core.outbox import Outbox\n"
        "from core.sip import parse_message\n"
        "outbox = Outbox(identity=ServerIdentity('pbx.test', []), bus=EventBus(),\n"
        "                send=lambda data, flow: True, clock=lambda: 0.0,\n"
        "                tag_secret=bytes.fromhex(sys.argv[1]))\n"
        "print(outbox.local_tag(parse_message(bytes.fromhex(sys.argv[2]))))\n"
    )
    root = Path(__file__).resolve().parent.parent
    tags = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, TAG_SECRET.hex(), _OPTIONS.hex()],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        tags.add(done.stdout.strip())
    assert tags == {_KNOWN_TAG}


def test_local_tag_depends_on_call_id_from_tag_and_secret_only() -> None:
    outbox = _outbox()
    base = outbox.local_tag(_parse(_OPTIONS))
    assert _outbox().local_tag(_parse(_OPTIONS)) == base  # another instance, same secret
    assert _outbox(b"u" * 16).local_tag(_parse(_OPTIONS)) != base
    same = [
        _OPTIONS.replace(b"OPTIONS sip", b"INVITE sip").replace(b"3 OPTIONS", b"3 INVITE"),
        _OPTIONS.replace(b"branch=z9hG4bK-77", b"branch=z9hG4bK-78"),
        _OPTIONS.replace(b"t: <sip:pbx.test>", b"t: <sip:pbx.test>;tag=pbx1"),
        _OPTIONS.replace(b"f: <sip:100@", b'f: "Hundred" <sip:100@'),
    ]
    for data in same:
        assert outbox.local_tag(_parse(data)) == base
    different = [
        _OPTIONS.replace(b"i: c1@x", b"i: c2@x"),
        _OPTIONS.replace(b";tag=ab", b";tag=ac"),
        _OPTIONS.replace(b";tag=ab", b""),
    ]
    tags = {outbox.local_tag(_parse(data)) for data in different}
    assert base not in tags and len(tags) == len(different)


def test_local_tag_of_a_request_whose_from_is_broken() -> None:
    """The 400 to a broken From still gets a tag, from the From's text."""
    outbox = _outbox()
    broken = _parse(_OPTIONS.replace(b"f: <sip:100@pbx.test>;tag=ab", b"f: <sip:100@pbx.test"))
    tag = outbox.local_tag(broken)
    assert tag == outbox.local_tag(broken) and tag != outbox.local_tag(_parse(_OPTIONS))


# -- through the route ------------------------------------------------------------------

SOURCE = ("127.0.0.5", 5090)


def _request_text(method: str, *, call_id: str, branch: str, extra: str = "") -> bytes:
    uri = "sip:pbx.test" if method == "REGISTER" else "sip:bob@pbx.test"
    to = "<sip:alice@pbx.test>" if method == "REGISTER" else "<sip:bob@pbx.test>"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SOURCE[0]}:{SOURCE[1]};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@pbx.test>;tag=r1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:alice@{SOURCE[0]}:{SOURCE[1]}>\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _Route:
    """The Pbx's route with what it sends captured."""

    def __init__(self, pbx: Pbx) -> None:
        self.pbx = pbx
        self.sent: list[bytes] = []
        pbx.core.outbox._send = lambda data, flow: self.sent.append(data) or True
        self.flow = Flow("udp", SOURCE, ("127.0.0.1", pbx.listening[0].port))

    def send(self, data: bytes) -> list[bytes]:
        before = len(self.sent)
        self.pbx.route.on_message(data, self.flow)
        return self.sent[before:]


@pytest.fixture
async def route(tmp_path: Path) -> AsyncIterator[_Route]:
    pbx = await start_pbx(tmp_path)
    try:
        yield _Route(pbx)
    finally:
        await pbx.stop()


async def test_the_ack_of_our_407_is_recognised_and_absorbed(route: _Route) -> None:
    invite = _request_text("INVITE", call_id="ack-1@x", branch="z9hG4bKinv1")
    [answer] = route.send(invite)
    response = parse_message(answer)
    assert isinstance(response, Response) and response.status == 407
    outbox = route.pbx.core.outbox
    assert response.to_tag == outbox.local_tag(_parse(invite))
    # The ACK a phone sends (§17.1.1.3): the INVITE's branch, the 407's To.
    ack_text = (
        invite.replace(b"INVITE sip", b"ACK sip")
        .replace(b"1 INVITE", b"1 ACK")
        .replace(b"To: <sip:bob@pbx.test>", b"To: " + (response.headers.get("to") or "").encode())
    )
    ack = _parse(ack_text)
    assert ack.to_tag == outbox.local_tag(ack)  # what the route compares
    answered = outbox.answered_locally
    assert route.send(ack_text) == []
    assert outbox.answered_locally == answered


async def test_the_register_pair_shares_its_to_tag(route: _Route) -> None:
    first = _request_text("REGISTER", call_id="pair-1@x", branch="z9hG4bKreg1")
    [challenge] = route.send(first)
    parsed = parse_message(challenge)
    assert isinstance(parsed, Response) and parsed.status == 401
    value = _answer(challenge, _parse(first), USERS["alice"], proxy=False)
    second = _request_text(
        "REGISTER", call_id="pair-1@x", branch="z9hG4bKreg2", extra=f"Authorization: {value}\r\n"
    ).replace(b"CSeq: 1", b"CSeq: 2")
    [ok] = route.send(second)
    answer = parse_message(ok)
    assert isinstance(answer, Response) and answer.status == 200
    assert answer.to_tag == parsed.to_tag


async def test_a_failed_answers_challenge_is_resent_byte_for_byte(route: _Route) -> None:
    """A wrong password's 401 is cached: its retransmission gets the same bytes (the same
    nonce) and is not counted again. A first challenge is not: a new nonce each time."""
    pbx = route.pbx
    first = _request_text("REGISTER", call_id="re-1@x", branch="z9hG4bKre1")
    [challenge] = route.send(first)
    [again] = route.send(first)  # a retransmission of a first request: a fresh challenge
    assert again != challenge and _nonce_of(again, 1) != _nonce_of(challenge, 1)
    assert again.replace(_nonce_of(again, 1).encode(), b"") == challenge.replace(
        _nonce_of(challenge, 1).encode(), b""
    )
    pbx.bus.capture_traffic = True  # the console watching: every answer on the bus too
    _events, cursor, _missed = pbx.bus.traffic.read_since(0)
    value = _answer(challenge, _parse(first), "wrong", proxy=False)
    wrong = _request_text(
        "REGISTER", call_id="re-1@x", branch="z9hG4bKre2", extra=f"Authorization: {value}\r\n"
    )
    failures = pbx.security.stats.auth_failures
    answered = pbx.core.outbox.answered_locally
    [refused] = route.send(wrong)
    [resent] = route.send(wrong)
    assert resent == refused and parse_message(refused).status == 401  # type: ignore[union-attr]
    assert pbx.security.stats.auth_failures == failures + 1
    assert pbx.core.outbox.answered_locally == answered + 1  # the resend is not an answer
    traffic, _cursor, _missed = pbx.bus.traffic.read_since(cursor)
    sent_out = [e.data for e in traffic if isinstance(e, SipTraffic) and e.direction == "out"]
    assert sent_out == [refused, resent]
