"""The forwarding fast paths against the general ones they replace, over many inputs.

Every shortcut of issue 21 on the forwarding path must leave the wire unchanged: the loop
hash (our Via branch) is the MD5 of the request's identity as it always was, the top Via
text read from the parsed view is the one the header lines give, and the datagrams the proxy
sends (a forwarded INVITE on several branches, the responses relayed up, a 482) are those the
general code writes. Inputs are generated from a seeded random source, so a failure repeats.
"""

from __future__ import annotations

import random
import re

import pytest
from support.loop_hash import reference_loop_hash

from core.events import EventBus
from core.net.flow import Flow
from core.net.identity import ServerIdentity
from core.outbox import Outbox, answer_flow
from core.proxy.forwarder import request_hash
from core.proxy.routing import has_looped, loop_hash, realm_of, remove_own_credentials
from core.route import stamp_via
from core.settings import ListenAddress
from core.sip.errors import SipParseError
from core.sip.headers import Headers
from core.sip.message import Request
from core.sip.parser import parse_message

SEED = 21


# -- generated requests ----------------------------------------------------------------------
_HOSTS = ["203.0.113.7", "phone.example", "[2001:db8::7]", "198.51.100.9", "h\u00e9te.example"]
_TRANSPORTS = ["UDP", "TCP", "TLS", "udp"]


def _via(rng: random.Random) -> str:
    """A Via element in one of the spellings phones send: canonical (the parser's fast path),
    with odd spacing or upper-case parameters (the general path), with received/rport."""
    host = rng.choice(_HOSTS)
    port = rng.choice(["", ":5060", ":5062", ":40000"])
    params = [f"branch=z9hG4bK{rng.getrandbits(40):x}"]
    if rng.random() < 0.5:
        params.append("rport")
    if rng.random() < 0.3:
        params.append(f"received={rng.choice(['10.0.0.1', '203.0.113.7'])}")
    if rng.random() < 0.2:
        params.append('x="a;b"')
    rng.shuffle(params)
    spelling = rng.random()
    joined = ";".join(params)
    if spelling < 0.6:
        return f"SIP/2.0/{rng.choice(_TRANSPORTS)} {host}{port};{joined}"
    if spelling < 0.8:
        return f"SIP / 2.0 / {rng.choice(_TRANSPORTS)} {host}{port} ; {joined.replace(';', ' ; ')}"
    return f"SIP/2.0/{rng.choice(_TRANSPORTS)} {host}{port};{joined.replace('branch', 'BRANCH')}"


def _via_lines(rng: random.Random) -> list[str]:
    """One to four Via elements, on separate lines, comma-joined, or compact (`v:`)."""
    vias = [_via(rng) for _ in range(rng.randint(1, 4))]
    layout = rng.random()
    if layout < 0.4:
        return [f"Via: {via}" for via in vias]
    if layout < 0.7:
        return [f"Via: {', '.join(vias)}"]
    if layout < 0.85:
        return [f"v: {via}" for via in vias]
    return [f"Via:   {vias[0]}  ", *[f"Via: {via}" for via in vias[1:]]]


def random_request(rng: random.Random, method: str = "INVITE") -> bytes:
    user = rng.choice(["bob", "b\u00f6b", "100", "carol"])
    uri = rng.choice(
        [f"sip:{user}@pbx.test", f"sips:{user}@pbx.test", f"sip:{user}@192.0.2.10:5060;lr"]
    )
    from_tag = rng.choice([";tag=a1", f";tag={rng.getrandbits(32):x}", ""])
    to_tag = rng.choice(["", "", ";tag=b2"])
    call_id = rng.choice(["call-1", f"{rng.getrandbits(64):x}@host", "c\u00e4ll@h"])
    lines = [
        f"{method} {uri} SIP/2.0",
        *_via_lines(rng),
        f"From: <sip:alice@pbx.test>{from_tag}",
        f"To: <sip:{user}@pbx.test>{to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {rng.randint(1, 2**31 - 1)} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def _requests(count: int) -> list[bytes]:
    rng = random.Random(SEED)
    return [
        random_request(rng, rng.choice(["INVITE", "BYE", "ACK", "OPTIONS"])) for _ in range(count)
    ]


@pytest.mark.parametrize("data", _requests(300))
def test_loop_hash_is_the_md5_it_always_was(data: bytes) -> None:
    request = parse_message(data)
    assert isinstance(request, Request)
    for top in (request.headers.values("via")[0], "", "SIP/2.0/UDP x;branch=\udcff"):
        assert loop_hash(request, top) == reference_loop_hash(request, top)


@pytest.mark.parametrize("data", _requests(300))
def test_request_hash_reads_the_top_via_as_the_header_lines_give_it(data: bytes) -> None:
    """Before any view is parsed, once sanity parsed the Vias, and once stamp_via rewrote the
    top one: always the hash over the first element of the Via lines."""
    rng = random.Random(data)
    request = parse_message(data)
    assert isinstance(request, Request)

    def expected() -> str:
        return reference_loop_hash(request, request.headers.values("via")[0])

    assert request_hash(request) == expected()  # nothing parsed yet: the general path
    try:
        assert request.top_via is not None  # the views sanity fills
    except SipParseError:
        return  # a Via the general parser refuses: sanity answers 400, nothing is forwarded
    assert request_hash(request) == expected()
    source = (rng.choice(["203.0.113.7", "10.9.8.7"]), rng.choice([5060, 5062, 40000]))
    stamp_via(request, Flow("udp", source, ("192.0.2.10", 5060)))
    assert request_hash(request) == expected()


def test_a_request_without_via_fails_as_before() -> None:
    data = random_request(random.Random(1)).replace(b"Via:", b"X-Via:").replace(b"v:", b"X-v:")
    request = parse_message(data)
    assert isinstance(request, Request)
    with pytest.raises(IndexError):
        request_hash(request)


def test_the_loop_check_finds_what_the_hash_marked() -> None:
    """A request carrying our Via whose branch is the hash of the Via below it has looped;
    one whose Request-URI changed since (a spiral) has not."""
    from tests.test_proxy_routing import IDENTITY, forwarded_back

    rng = random.Random(SEED)
    for _ in range(50):
        request = parse_message(random_request(rng))
        assert isinstance(request, Request)
        try:
            request.top_via  # noqa: B018 - the views sanity fills
        except SipParseError:
            continue
        assert not has_looped(request, IDENTITY)
        assert has_looped(forwarded_back(request, str(request.uri)), IDENTITY)
        assert not has_looped(forwarded_back(request, "sip:elsewhere@pbx.test"), IDENTITY)


# -- our credentials off a forwarded copy (§22.3) -------------------------------------------
_REALM_REFERENCE = re.compile(r'realm\s*=\s*(?:"([^"]*)"|([^\s,]+))', re.IGNORECASE)
_PIECES = [
    "realm", "REALM", "Realm", "xrealm", "=", " ", "\t", "\x0b", "\x1c", '"', ",", "pbx.test",
    "carrier.example", "username=", '"alice"', "nonce=", "n1", ";", "Digest ", "\u00e9", "",
]  # fmt: skip


def _credentials(rng: random.Random) -> str:
    """Credentials text as phones write it, and the pieces of it in every order."""
    if rng.random() < 0.3:
        realm = rng.choice(["pbx.test", "carrier.example", "", "PBX.test"])
        quoted = rng.choice([f'"{realm}"', realm, f'"{realm}'])
        space = rng.choice(["", " ", "\t "])
        return f'Digest username="alice",{space}realm{space}={space}{quoted}, nonce="n"'
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 14)))


def reference_remove_own_credentials(headers: Headers, realm: str) -> None:
    """remove_own_credentials as written before issue 21 (the regex on every value)."""
    values = headers.get_all("proxy-authorization")
    if not values:
        return
    kept = []
    for value in values:
        match = _REALM_REFERENCE.search(value)
        if match is None or (match.group(1) or match.group(2)) != realm:
            kept.append(value)
    headers.remove("proxy-authorization")
    for value in kept:
        headers.add("Proxy-Authorization", value)


def test_the_realm_is_read_as_the_regex_reads_it() -> None:
    rng = random.Random(SEED)
    for _ in range(20_000):
        value = _credentials(rng)
        match = _REALM_REFERENCE.search(value)
        expected = None if match is None else (match.group(1) or match.group(2))
        assert realm_of(value) == expected, value


def test_only_our_credentials_leave_a_forwarded_copy() -> None:
    rng = random.Random(SEED)
    for _ in range(2_000):
        lines = [("Via", "SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK1")]
        for _ in range(rng.randint(0, 4)):
            name = rng.choice(["Proxy-Authorization", "proxy-authorization", "X-Other"])
            lines.append((name, _credentials(rng)))
        lines.append(("Max-Forwards", "70"))
        ours, reference = Headers(lines), Headers(lines)
        remove_own_credentials(ours, "pbx.test")
        reference_remove_own_credentials(reference, "pbx.test")
        assert list(ours) == list(reference)


# -- our own answers and their Timer J cache ---------------------------------------------------
def reference_reply_key(request: Request, flow: Flow) -> tuple[str, str, int | None, str] | None:
    """Outbox._reply_key as written before issue 21."""
    try:
        via = request.top_via
    except SipParseError:
        return None
    if via is None or not via.is_rfc3261_branch or request.method == "ACK":
        return None
    return (via.branch or "", flow.remote[0], via.port, request.method)


def _answerable(rng: random.Random) -> bytes:
    """A request to answer ourselves, its top Via sometimes without a branch, with an RFC 2543
    one, without rport, with a port of its own, or too broken to parse."""
    data = random_request(rng, rng.choice(["OPTIONS", "REGISTER", "INVITE", "ACK", "BYE"]))
    roll = rng.random()
    if roll < 0.1:
        data = data.replace(b"branch=z9hG4bK", b"branch=old", 1)
    elif roll < 0.2:
        data = data.replace(b";branch=", b";x=", 1)
    elif roll < 0.3:
        data = data.replace(b"SIP/2.0/", b"SIP/3.0/", 1)  # a Via that does not parse
    return data


def _outbox(sent: list[tuple[bytes, Flow]], now: list[float]) -> Outbox:
    identity = ServerIdentity("pbx.test", [ListenAddress("udp", "192.0.2.10", 5060)])

    def send(data: bytes, flow: Flow) -> bool:
        sent.append((data, flow))
        return True

    return Outbox(
        identity=identity, bus=EventBus(), send=send, clock=lambda: now[0], tag_secret=b"t" * 32
    )


def test_answers_go_where_they_went_and_are_cached_as_they_were() -> None:
    """Every answer: the destination §18.2.2 gives by the top Via as answer_flow reads it, the
    cache key the old _reply_key built, and a retransmission answered from the cache with the
    same bytes to the same place (or, uncached, not at all)."""
    rng = random.Random(SEED)
    sent: list[tuple[bytes, Flow]] = []
    now = [100.0]
    outbox = _outbox(sent, now)
    for _ in range(600):
        data = _answerable(rng)
        port = rng.choice([5060, 5062, 40000])
        flow = Flow(rng.choice(["udp", "udp", "tcp"]), ("203.0.113.7", port), ("192.0.2.10", 5060))
        request = parse_message(data)
        assert isinstance(request, Request)
        key = reference_reply_key(request, flow)
        assert outbox._reply_key(request, flow) == key
        sent.clear()
        outbox.reply(request, flow, rng.choice([200, 401, 404, 482, 100]))
        if request.method == "ACK":
            assert sent == []
            continue
        [(answer, to)] = sent
        assert to == answer_flow(request, flow)
        sent.clear()
        again = parse_message(data)
        assert isinstance(again, Request)
        resent = outbox.resend_cached_reply(again, flow, now[0])
        cached = (
            key is not None and flow.transport == "udp" and not answer.startswith(b"SIP/2.0 100")
        )
        assert resent == cached
        assert sent == ([(answer, to)] if cached else [])


# -- the whole forwarding side on the wire ----------------------------------------------------
# tests/support/forward_transcript.py's digest as the code before issue 21 gave it (main
# 058a010): `cd <tree> && PYTHONPATH=. python -c 'import sys; sys.path.insert(0, "tests/support");
# import forward_transcript as t; print(t.digest(t.transcript()))'`. Since the local To-tag
# became a seeded CRC-32 (core/outbox.py, issue 21) the 25 482s carry other tag values: the
# two transcripts, with `;tag=pbx...` masked, were compared datagram by datagram and are the
# same (was aeec021770e78731a361e6d4fd75f7d8fdfade24903c71a27215c11648b020d7).
TRANSCRIPT_DATAGRAMS = 665
TRANSCRIPT_DIGEST = "6e6ced0f8fd7056fe7bd58a797862bbf75197910bef48c0bb1d5613279d46524"


def test_forwarded_relayed_and_refused_datagrams_are_byte_for_byte_the_same() -> None:
    """Forked INVITEs with our credentials and a carrier's, Vias in every layout, Record-Route,
    Max-Forwards or none; the 100s, the copies on each branch, the relayed 180s and finals,
    the CANCELs and ACKs, and the 482 for the looped ones: the same bytes, to the same places."""
    from support.forward_transcript import digest, transcript

    sent = transcript()
    assert len(sent) == TRANSCRIPT_DATAGRAMS
    assert digest(sent) == TRANSCRIPT_DIGEST


# tests/support/dialog_transcript.py's digest as main e9da540 gave it (before the in-dialog
# relay wrote its ACK's and our BYE's Via as a line alone): the same command, dialog_transcript.
DIALOG_TRANSCRIPT_DATAGRAMS = 375
DIALOG_TRANSCRIPT_DIGEST = "47c49c3a8f4f69c7e616be370fd13cc3cea2e2f58741022a2d9c793397ae3b1f"


def test_in_dialog_relayed_and_refused_datagrams_are_byte_for_byte_the_same() -> None:
    """ACKs (some with a late answer), BYEs, INFOs, UPDATEs on our Record-Route token: loose
    routing, a strict router before us and after us, compact names, credentials, identity
    headers; the relayed copies, the BYE's transactions, our 403, 404 and 416."""
    from support.dialog_transcript import digest, transcript

    sent = transcript()
    assert len(sent) == DIALOG_TRANSCRIPT_DATAGRAMS
    assert digest(sent) == DIALOG_TRANSCRIPT_DIGEST
