"""The security layer over real sockets: each REQINIT check, the silent drops, bans and their
expiry, brute force, exemptions and anti-enumeration, against an in-process Pbx.

Attackers bind other loopback addresses (127.0.0.x, x ≠ 1): 127.0.0.1 is the server's own
address, exempt from bans and limits like Kamailio's `src_ip != myself`. Linux routes all of
127/8 to lo, so a test has as many distinct sources as it needs.

"Nothing comes back" is proved without long sleeps: a request that is answered (an OPTIONS to
the server) follows the dropped one on the same socket, and the server handles datagrams in
order, so the first answer to arrive must be the probe's. For a banned source, whose probe is
dropped too, the test waits for the route's drop counter instead, then checks the socket.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import USERS, start_pbx
from support.client import UdpClient, request_text
from support.phone import Phone

from core.events import Event, SecurityEvent, SourceBanned, SourceUnbanned
from core.pbx import Pbx
from core.settings import SecuritySettings
from core.sip.digest import build_authorization, pick_challenge
from core.sip.fields import parse_auth
from core.sip.message import Response
from core.sip.parser import parse_message

ATTACKER = "127.0.0.5"


def _address(pbx: Pbx) -> tuple[str, int]:
    return pbx.listening[0].host, pbx.listening[0].port


@asynccontextmanager
async def _client(pbx: Pbx, ip: str = ATTACKER) -> AsyncIterator[UdpClient]:
    client = await UdpClient(_address(pbx)).open(ip)
    try:
        yield client
    finally:
        client.close()


async def _pbx_with(tmp_path: Path, **security: object) -> Pbx:
    return await start_pbx(tmp_path, security=replace(SecuritySettings(), **security))


def _feed(pbx: Pbx) -> list[Event]:
    events, _cursor, _missed = pbx.bus.feed.read_since(0)
    return events


def _bans_of(pbx: Pbx, ip: str) -> list[SourceBanned]:
    return [e for e in _feed(pbx) if isinstance(e, SourceBanned) and e.source == ip]


def _actions(pbx: Pbx, action: str) -> list[SecurityEvent]:
    return [e for e in _feed(pbx) if isinstance(e, SecurityEvent) and e.action == action]


async def _until(condition: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {condition}")
        await asyncio.sleep(0.01)


def _options(client: UdpClient, **kwargs: object) -> str:
    """An OPTIONS to the server itself: always answered 200 unless the source is dropped."""
    return request_text("OPTIONS", "sip:pbx.test", local=client.local, **kwargs)  # type: ignore[arg-type]


def _call_id(text: str) -> str:
    match = re.search(r"^Call-ID: (\S+)", text, re.M)
    assert match is not None
    return match.group(1)


async def _drain(client: UdpClient, quiet: float = 0.2) -> int:
    """Read and count whatever arrives until the socket stays quiet for `quiet` seconds."""
    count = 0
    while await client.recv(quiet) is not None:
        count += 1
    return count


async def _not_answered(client: UdpClient, text: str) -> None:
    """`text` gets no answer: a probe sent right after it is the first thing answered."""
    client.send(text)
    probe = _options(client)
    response = await client.ask(probe)
    assert response is not None, "the probe got no answer: the source was dropped entirely"
    assert response.call_id == _call_id(probe), f"an answer came back: {response.start_line()}"


async def _dropped_at_the_door(pbx: Pbx, client: UdpClient, text: str | None = None) -> None:
    """The source is banned: its message is counted as dropped and nothing comes back."""
    before = pbx.route.dropped
    client.send(text or _options(client))
    await _until(lambda: pbx.route.dropped > before)
    assert await client.recv(0.2) is None


# -- REQINIT: sanity checks answered with 400 and the reason ------------------------------


def _without(header: str) -> Callable[[str], str]:
    return lambda text: re.sub(rf"^{header}: [^\r]*\r\n", "", text, flags=re.M)


def _header(header: str, value: str) -> Callable[[str], str]:
    return lambda text: re.sub(rf"^{header}: [^\r]*", f"{header}: {value}", text, flags=re.M)


def _adding(line: str) -> Callable[[str], str]:
    return lambda text: text.replace("User-Agent:", f"{line}\r\nUser-Agent:", 1)


SANITY_CASES = [
    ("missing-call-id", "INVITE", _without("Call-ID"), 400, "Missing Call-ID"),
    ("missing-cseq", "INVITE", _without("CSeq"), 400, "Missing CSeq"),
    ("bad-cseq-method", "INVITE", _header("CSeq", "1 INV@TE"), 400, "Bad CSeq method"),
    ("cseq-method-differs", "INVITE", _header("CSeq", "1 BYE"), 400, "Bad CSeq method"),
    ("bad-cseq-number", "OPTIONS", _header("CSeq", "one OPTIONS"), 400, "Bad CSeq number"),
    ("content-length-text", "MESSAGE", _header("Content-Length", "ten"), 400, "Bad Content-Length"),
    (
        "content-length-past-body",
        "MESSAGE",
        _header("Content-Length", "40"),
        400,
        "Content-Length larger than body",
    ),
    ("expires-not-a-number", "REGISTER", _adding("Expires: soon"), 400, "Bad Expires"),
    ("unparsable-from", "INVITE", _header("From", "<sip:alice@>;tag=1"), 400, "Bad From header"),
    ("unparsable-to", "INVITE", _header("To", "<sip:@@>"), 400, "Bad To header"),
    (
        "unparsable-contact",
        "INVITE",
        _header("Contact", "<sip:alice@192.0.2.1"),
        400,
        "Bad Contact",
    ),
    (
        "missing-from-tag",
        "INVITE",
        _header("From", "<sip:alice@pbx.test>"),
        400,
        "Missing From tag",
    ),
    (
        "no-via-branch",
        "OPTIONS",
        lambda t: re.sub(r";branch=[^;\r]*", "", t),
        400,
        "Missing Via branch",
    ),
    ("duplicate-call-id", "OPTIONS", _adding("Call-ID: second@x"), 400, "Duplicate Call-ID header"),
    ("unsupported-proxy-require", "INVITE", _adding("Proxy-Require: foo"), 420, "Bad Extension"),
]


@pytest.mark.parametrize(
    ("method", "edit", "status", "reason"),
    [case[1:] for case in SANITY_CASES],
    ids=[case[0] for case in SANITY_CASES],
)
async def test_sanity_failure_is_answered_with_its_reason(
    pbx: Pbx, method: str, edit: Callable[[str], str], status: int, reason: str
) -> None:
    async with _client(pbx) as client:
        uri = "sip:pbx.test" if method == "REGISTER" else "sip:bob@pbx.test"
        text = edit(request_text(method, uri, local=client.local, body="hello"))
        response = await client.ask(text)
    assert response is not None
    assert (response.status, response.reason) == (status, reason)
    # Content-Length is the parser's check (a parse error), the rest are REQINIT's.
    reported = _actions(pbx, "sanity-rejected") + _actions(pbx, "parse-error")
    assert [e.source for e in reported] == [ATTACKER], "the refusal is reported on the bus"


async def test_unparsable_request_uri_gets_400(pbx: Pbx) -> None:
    async with _client(pbx) as client:
        text = request_text("INVITE", "sip:bob@", local=client.local)
        response = await client.ask(text, timeout=0.5)
    assert response is not None and response.status == 400


async def test_unsupported_uri_scheme_gets_416(pbx: Pbx) -> None:
    async with _client(pbx) as client:
        response = await client.ask(
            request_text("INVITE", "http://pbx.test/bob", local=client.local)
        )
    assert response is not None
    assert (response.status, response.reason) == (416, "Unsupported URI Scheme")


async def test_max_forwards_zero_gets_483(pbx: Pbx) -> None:
    async with _client(pbx) as client:
        text = request_text("INVITE", "sip:bob@pbx.test", local=client.local)
        response = await client.ask(text.replace("Max-Forwards: 70", "Max-Forwards: 0"))
    assert response is not None and response.status == 483
    assert _actions(pbx, "max-forwards")


async def test_missing_max_forwards_is_still_served(pbx: Pbx) -> None:
    async with _client(pbx) as client:
        options = await client.ask(_options(client).replace("Max-Forwards: 70\r\n", ""))
        invite = request_text("INVITE", "sip:bob@pbx.test", local=client.local)
        challenge = await client.ask(invite.replace("Max-Forwards: 70\r\n", ""))
    assert options is not None and options.status == 200
    assert challenge is not None and challenge.status == 407  # on to authentication


# -- silent drops -----------------------------------------------------------------------------


def _ack(client: UdpClient) -> str:
    return request_text("ACK", "sip:bob@pbx.test", local=client.local)


ACK_CASES: list[tuple[str, Callable[[str], str]]] = [
    ("out-of-dialog", lambda text: text),
    ("missing-call-id", _without("Call-ID")),
    ("cseq-method-differs", _header("CSeq", "1 INVITE")),
    ("max-forwards-zero", _header("Max-Forwards", "0")),
    ("bad-content-length", _header("Content-Length", "ten")),
    ("unsupported-scheme", lambda text: text.replace("ACK sip:bob@pbx.test", "ACK http://x/", 1)),
]


@pytest.mark.parametrize("edit", [c[1] for c in ACK_CASES], ids=[c[0] for c in ACK_CASES])
async def test_ack_is_never_answered(pbx: Pbx, edit: Callable[[str], str]) -> None:
    async with _client(pbx) as client:
        await _not_answered(client, edit(_ack(client)))


async def test_request_without_via_is_dropped(pbx: Pbx) -> None:
    async with _client(pbx) as client:
        await _not_answered(client, _without("Via")(_options(client)))


async def test_scanner_is_dropped_silently_then_banned(pbx: Pbx) -> None:
    after = pbx.settings.security.scanner_ban_after
    async with _client(pbx, "127.0.0.10") as scanner:
        for _ in range(after - 1):
            await _not_answered(scanner, _options(scanner, user_agent="friendly-scanner"))
        assert not _bans_of(pbx, "127.0.0.10")
        scanner.send(_options(scanner, user_agent="friendly-scanner"))
        await _until(lambda: _bans_of(pbx, "127.0.0.10"))
        # Banned: even a request with an innocent User-Agent gets nothing now.
        await _dropped_at_the_door(pbx, scanner)
    (ban,) = _bans_of(pbx, "127.0.0.10")
    assert ban.reason == "scanner" and ban.count == after
    assert len(_actions(pbx, "scanner-dropped")) >= 1
    assert pbx.security.stats.scanner_drops == after


async def test_scanner_recognised_by_from_display_name(pbx: Pbx) -> None:
    """svwar and svcrack send `From: "sipvicious"<sip:100@...>` whatever the User-Agent."""
    async with _client(pbx, "127.0.0.11") as scanner:
        text = _header("From", '"sipvicious"<sip:100@1.1.1.1>;tag=3836')(_options(scanner))
        await _not_answered(scanner, text)
    assert pbx.security.stats.scanner_drops == 1


# -- floods: ban, silence, expiry ---------------------------------------------------------


async def test_flood_is_banned_and_the_ban_expires(tmp_path: Path) -> None:
    pbx = await _pbx_with(tmp_path, flood_limit=10, flood_ban_seconds=1.0)
    try:
        async with _client(pbx, "127.0.0.9") as flooder:
            started = time.time()
            for _ in range(40):
                flooder.send(_options(flooder))
            await _until(lambda: _bans_of(pbx, "127.0.0.9"))
            answered = await _drain(flooder)
            (ban,) = _bans_of(pbx, "127.0.0.9")
            assert ban.reason == "flood"
            assert ban.until == pytest.approx(ban.at + 1.0, abs=0.05)
            assert ban.at - started < 1.0
            assert answered == 10, "exactly the messages under the limit were served"
            assert pbx.route.dropped == 40 - answered  # the 11th tripped the ban: dropped
            await _dropped_at_the_door(pbx, flooder)

            await asyncio.sleep(max(0.0, ban.until - time.time()) + 0.05)
            response = await flooder.ask(_options(flooder))
            assert response is not None and response.status == 200
        unbans = [
            e for e in _feed(pbx) if isinstance(e, SourceUnbanned) and e.source == "127.0.0.9"
        ]
        assert [e.detail for e in unbans] == ["expired"]
        assert pbx.security.bans(pbx.clock()) == []
    finally:
        await pbx.stop()


async def test_ban_expires_by_housekeeping_without_traffic(tmp_path: Path) -> None:
    pbx = await _pbx_with(tmp_path, flood_limit=5, flood_ban_seconds=0.5)
    try:
        async with _client(pbx, "127.0.0.12") as flooder:
            for _ in range(10):
                flooder.send(_options(flooder))
            await _until(lambda: _bans_of(pbx, "127.0.0.12"))
        assert pbx.security.bans(pbx.clock())
        # Housekeeping runs once a second: the ban ends without any packet from the source.
        await _until(lambda: any(isinstance(e, SourceUnbanned) for e in _feed(pbx)), timeout=3)
        assert pbx.security.bans(pbx.clock()) == []
    finally:
        await pbx.stop()


# -- brute force ----------------------------------------------------------------------------


async def _wrong_password(phone: Phone) -> Response | None:
    """One guess: REGISTER, then answer the 401 with the phone's (wrong) password."""
    response = await phone.register()
    assert response is not None and response.status == 401
    return response


async def test_brute_force_from_one_address_is_banned(pbx: Pbx) -> None:
    limit = pbx.settings.security.auth_fail_limit_per_ip
    async with _client(pbx, "127.0.0.6") as client:
        guesser = Phone(client, "alice", "not-alices-password")
        for _ in range(limit):
            await _wrong_password(guesser)
        (ban,) = _bans_of(pbx, "127.0.0.6")
        await _dropped_at_the_door(pbx, client, guesser.register_text())
        # Even the right password is not heard from a banned address.
        right = Phone(client, "alice", USERS["alice"])
        await _dropped_at_the_door(pbx, client, right.register_text())
    assert ban.reason == "brute-force" and ban.count == limit
    assert len(_actions(pbx, "auth-failed")) == limit
    assert pbx.location.lookup("alice", pbx.clock()) == []


async def test_brute_force_on_one_user_from_many_addresses_alerts_without_lockout(
    tmp_path: Path,
) -> None:
    pbx = await _pbx_with(tmp_path, auth_fail_limit_per_user=4)
    try:
        for source in ("127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"):
            async with _client(pbx, source) as client:
                await _wrong_password(Phone(client, "alice", "guess-" + source))
        (alert,) = _actions(pbx, "brute-force-user")
        assert (alert.user, alert.count) == ("alice", 4)
        assert not [e for e in _feed(pbx) if isinstance(e, SourceBanned)]
        async with _client(pbx, "127.0.0.25") as client:
            response = await Phone(client, "alice", USERS["alice"]).register()
        assert response is not None and response.status == 200, "users are never locked out"
    finally:
        await pbx.stop()


async def test_a_success_resets_the_count_of_its_address(tmp_path: Path) -> None:
    pbx = await _pbx_with(tmp_path, auth_fail_limit_per_ip=3)
    try:
        async with _client(pbx, "127.0.0.7") as client:
            wrong = Phone(client, "alice", "typo-password")
            right = Phone(client, "alice", USERS["alice"])
            for _ in range(2):
                await _wrong_password(wrong)
            response = await right.register()
            assert response is not None and response.status == 200
            for _ in range(2):
                await _wrong_password(wrong)
            assert not _bans_of(pbx, "127.0.0.7"), "4 failures, but never 3 in a row"
            await _wrong_password(wrong)
            assert _bans_of(pbx, "127.0.0.7")
    finally:
        await pbx.stop()


# -- who is never banned ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.17"], ids=["own-address", "allow-listed"])
async def test_exempt_sources_are_never_banned(tmp_path: Path, source: str) -> None:
    pbx = await _pbx_with(
        tmp_path,
        flood_limit=10,
        auth_fail_limit_per_ip=2,
        scanner_ban_after=1,
        allow_list=("127.0.0.16/30",),
    )
    try:
        async with _client(pbx, source) as client:
            for _ in range(30):
                client.send(_options(client))
            assert await _drain(client) == 30, "every message of a 'flood' was served"
            for _ in range(3):
                await _wrong_password(Phone(client, "alice", "wrong-password"))
            # Exempt from bans, not from checks: the scanner request is still dropped.
            await _not_answered(client, _options(client, user_agent="friendly-scanner"))
            response = await client.ask(_options(client))
            assert response is not None and response.status == 200
        assert not [e for e in _feed(pbx) if isinstance(e, SourceBanned)]
        with pytest.raises(ValueError, match="exempt"):
            await pbx.admin.ban(source, 60)
    finally:
        await pbx.stop()


# -- no extension enumeration ---------------------------------------------------------------

ENUMERATION_METHODS = ["REGISTER", "INVITE", "OPTIONS", "MESSAGE"]


def _shape(response: Response, user: str) -> str:
    """The response as text with the user's name and every per-request token blanked."""
    text = response.to_bytes().decode()
    text = text.replace(user, "USER")
    text = re.sub(r'(nonce|opaque)="[^"]*"', r'\1="X"', text)
    text = re.sub(r"(tag|branch)=[^;>\r\n]*", r"\1=X", text)
    return re.sub(r"^Call-ID: [^\r]*", "Call-ID: X", text, flags=re.M)


async def _answers_for(client: UdpClient, method: str, user: str) -> tuple[str, str]:
    """(first answer with no credentials, answer to credentials with a wrong password)."""
    uri = "sip:pbx.test" if method == "REGISTER" else f"sip:{user}@pbx.test"
    to = f"<sip:{user}@pbx.test>"
    body = "hi there" if method == "MESSAGE" else ""
    extra = "Content-Type: text/plain\r\n" if body else ""

    def text(credentials: str = "") -> str:
        return request_text(
            method,
            uri,
            local=client.local,
            from_user=user,
            to=to,
            extra=extra + credentials,
            body=body,
        )

    first = await client.ask(text())
    assert first is not None
    header = "WWW-Authenticate" if method == "REGISTER" else "Proxy-Authenticate"
    challenge = pick_challenge(parse_auth(v) for v in first.headers.get_all(header))
    assert challenge is not None, f"{method} to {user}: {first.start_line()}"
    answer = build_authorization(challenge, user, "wrong-password", method, uri)
    name = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
    second = await client.ask(text(f"{name}: {answer}\r\n"))
    assert second is not None
    return _shape(first, user), _shape(second, user)


@pytest.mark.parametrize("method", ENUMERATION_METHODS)
async def test_existing_and_unknown_users_get_identical_answers(pbx: Pbx, method: str) -> None:
    async with _client(pbx, "127.0.0.8") as client:
        existing = await _answers_for(client, method, "alice")
        unknown = await _answers_for(client, method, "zoltan")
    assert existing == unknown
    status = 401 if method == "REGISTER" else 407
    assert parse_message(existing[1].encode()).status == status  # type: ignore[union-attr]
