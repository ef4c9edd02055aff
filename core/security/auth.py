"""Server-side digest authentication: is this request from a user who knows their password?

The route calls `DigestAuthenticator.check(request, now, proxy=...)` for every request that
is not from a carrier, and gets back an `AuthResult`: either the authenticated username, or a
complete 401/407 to send as is (already written as bytes) plus the reason (for the security
log and the brute-force counters, never for the wire).

What the answer must not reveal (DESIGN.md "Unknown user and wrong password get the same
answer"): an unknown user is verified against a dummy HA1 so both cost one digest, and both
get the same fresh challenge. Every failure gets the same challenge shape; only a correct
answer to a nonce that is expired, or was issued by another process or before a restart,
gets `stale=true` (RFC 7616 §3.3), so phones retry silently.

State is a secret (nonces are stateless HMACs, `core.sip.digest.NonceFactory`) plus a bounded
table of the last nonce-count per nonce to reject replays (RFC 7616 §3.4 "nc", §5.5). The
table is this process's alone, so a nonce is good only in the process and run that issued it.
"""

from __future__ import annotations

import enum
import hmac
import math
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from core.settings import AuthSettings
from core.sip import Request, Response, SipParseError, SipUri, Uri, new_tag
from core.sip.bounded import make_room
from core.sip.digest import (
    Credentials,
    NonceFactory,
    NonceState,
    canonical_algorithm,
    ha1,
    parse_credentials,
    request_ha2,
    verifier_response,
)
from core.sip.fields import format_auth
from core.sip.headers import check_line
from core.sip.message import answer_tail, response_bytes
from core.sip.parser import parse_message
from core.sip.uri import parse_uri

# (ha1_md5, ha1_sha256) of an enabled user of the realm, or None.
UserLookup = Callable[[str], tuple[str, str] | None]
# The To-tag for the answers to a request (the route's deterministic one, core/outbox.py).
TagMaker = Callable[[Request], str]

# Which stored HA1 each algorithm the server can verify uses: the -sess forms derive their
# session key from the same stored HA1 (RFC 7616 §3.4.2).
_HA1_INDEX_BY_ALGORITHM: Final = {"MD5": 0, "MD5-SESS": 0, "SHA-256": 1, "SHA-256-SESS": 1}
# HA2 per (algorithm, method, digest URI): a REGISTER's URI is the domain, an INVITE's the
# callee, so one entry per user called. Sized for ~4,000 callees busy at once (with fewer
# entries than that, nearly every INVITE hashed again, core/sip/bounded.py); the URI is the
# peer's text, so long ones are not kept.
_HA2_CACHE_SIZE: Final = 4_096
_HA2_URI_LENGTH: Final = 256
_WWW_AUTHENTICATE: Final = "WWW-Authenticate"
_PROXY_AUTHENTICATE: Final = "Proxy-Authenticate"
# Stands for the nonce while a challenge's header lines are pre-printed: split out again, it
# leaves the text either side. Never in the printed lines: a realm holds no LF (check_line),
# and the lines' own LFs each follow a CR.
_NONCE_SLOT: Final = "\n\n"
# The end of an answer with no header of our own: Content-Length and the blank line.
_BARE_TAIL: Final = answer_tail([])
# Bound once: compiled, `hmac.compare_digest` is a module attribute look-up per call.
_COMPARE_DIGEST: Final = hmac.compare_digest


class AuthFailure(enum.StrEnum):
    """Why a request was challenged, for the security log (never sent to the client)."""

    UNKNOWN_USER = "unknown user"
    WRONG_PASSWORD = "wrong password"
    STALE_NONCE = "stale nonce"
    BAD_NONCE = "bad nonce"
    REPLAYED_NC = "replayed nc"
    REALM_MISMATCH = "realm mismatch"
    URI_MISMATCH = "uri mismatch"
    MALFORMED = "malformed credentials"
    MISSING_QOP = "no qop (replayable)"


@dataclass(slots=True, init=False)
class AuthResult:
    """The verdict on one request.

    Exactly one of `username` (authenticated) and `answer` (the 401/407, or the 400 to
    credentials that break the grammar, written as the bytes to send; `status` its status
    code, 0 when there is none) is set. `failure` is None for a success and for a first
    request that carried no credentials;
    `counts_as_failure` tells the brute-force counters whether to count it (a stale nonce with
    the right password is a phone doing its job, not an attack). `claimed_user` is the
    username the client gave, whether or not it exists.
    """

    # One per request: the __init__ is written out because a frozen dataclass's generated
    # one costs ten times as much per object. Never changed once built.
    username: str | None
    answer: bytes | None
    status: int
    failure: AuthFailure | None
    claimed_user: str | None
    counts_as_failure: bool

    def __init__(
        self,
        username: str | None = None,
        answer: bytes | None = None,
        status: int = 0,
        failure: AuthFailure | None = None,
        claimed_user: str | None = None,
        counts_as_failure: bool = False,
    ) -> None:
        self.username = username
        self.answer = answer
        self.status = status
        self.failure = failure
        self.claimed_user = claimed_user
        self.counts_as_failure = counts_as_failure

    @property
    def authenticated(self) -> bool:
        return self.username is not None

    @property
    def challenge(self) -> Response | None:
        """`answer` parsed back into a Response, for a caller that wants to read it (tests,
        diagnostics): the route sends the bytes, and never builds this."""
        if self.answer is None:
            return None
        message = parse_message(self.answer)
        assert isinstance(message, Response)
        return message


class NonceCounts:
    """The highest nonce-count seen per nonce, so a captured request cannot be replayed.

    RFC 7616 §3.4 (nc) and §5.5: the client counts the requests it sends with one nonce; a
    server that remembers the count can reject a repeat. Entries are kept in first-seen order:
    those older than a nonce can stay valid are dropped as new ones arrive, and past `capacity`
    the oldest go first (evicting a live nonce only re-opens a replay window for that nonce).
    Each entry is one int, the count in the low 32 bits (nc is 8 hex digits) and a millisecond
    above them: when the nonce was issued (its time stamp, given by the authenticator, which
    then need not check a known nonce's MAC again), else when it was first seen. Either way
    the nonce cannot check VALID once `max_age` has passed since. A tuple of an int and a
    float per registered phone cost about 90 bytes more.

    The order is a deque beside a plain dict, not an OrderedDict: compiled, a plain dict's
    get and store are direct C calls where an OrderedDict's went through method look-ups (a
    third of the nonce work of an authenticated REGISTER), and a deque slot is smaller than an
    OrderedDict's per-key node. Entries are never moved nor removed but from the front, so
    the two stay in step.
    """

    __slots__ = ("_capacity", "_first_seen", "_last_nc_by_nonce", "_max_age")

    def __init__(self, capacity: int, max_age: float) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._max_age = max_age
        # nonce → highest nc accepted | (the millisecond the nonce was first seen << 32)
        self._last_nc_by_nonce: dict[str, int] = {}
        self._first_seen: deque[str] = deque()  # the same nonces, oldest first

    def __len__(self) -> int:
        return len(self._last_nc_by_nonce)

    def issued_ms(self, nonce: str) -> int | None:
        """The millisecond recorded with `nonce` (see the class), or None: not accepted yet,
        or forgotten."""
        entry = self._last_nc_by_nonce.get(nonce)
        return None if entry is None else entry >> 32

    def accept(self, nonce: str, nc: int, now: float, issued_ms: int | None = None) -> bool:
        """Record `nc` for `nonce` if it is higher than any seen before; False for a replay.
        `issued_ms`: the nonce's time stamp, kept with it (else `now`)."""
        table = self._last_nc_by_nonce
        entry = table.get(nonce)
        if entry is not None:
            if nc <= entry & _NC_MASK:
                return False
            table[nonce] = (entry & ~_NC_MASK) | nc
            return True
        # Whole milliseconds, rounded down: kept up to a millisecond longer, never less.
        expired_before = math.floor((now - self._max_age) * 1000)
        order = self._first_seen
        while order:
            oldest_nonce = order[0]
            if table[oldest_nonce] >> 32 >= expired_before and len(table) < self._capacity:
                break
            order.popleft()
            del table[oldest_nonce]
        stamp = max(0, math.floor(now * 1000)) if issued_ms is None else issued_ms
        table[nonce] = (stamp << 32) | nc
        order.append(nonce)
        return True


_NC_MASK: Final = 0xFFFFFFFF


class _Algorithm:
    """One algorithm the server offers, as the verifier needs it: worked out once here rather
    than upper-casing and looking its name up several times per request."""

    __slots__ = ("ha1_index", "name", "sess", "sha256")

    def __init__(self, name: str) -> None:
        upper = name.upper()
        self.name = name  # the wire spelling (canonical_algorithm)
        self.ha1_index: int = _HA1_INDEX_BY_ALGORITHM[upper]
        self.sha256 = self.ha1_index == 1
        self.sess = upper.endswith("-SESS")


def _nonce_count(nc: str) -> int:
    """The value of an nc of exactly 8 hex digits (RFC 7616 §3.4 8LHEX, either case), else -1:
    `int(nc, 16)` would also take a sign, underscores, spaces or "0x"."""
    if len(nc) != 8:
        return -1
    count = 0
    for index in range(8):
        code = ord(nc[index])
        if 48 <= code <= 57:  # 0-9
            count = count * 16 + code - 48
        elif 97 <= code <= 102:  # a-f
            count = count * 16 + code - 87
        elif 65 <= code <= 70:  # A-F
            count = count * 16 + code - 55
        else:
            return -1
    return count


class DigestAuthenticator:
    """Verifies Authorization / Proxy-Authorization and builds the challenges.

    `realm` is the SIP domain (HA1s depend on it); `secret` is the per-install nonce key;
    `lookup(username)` returns the stored (ha1_md5, ha1_sha256) of an enabled user or None.
    """

    __slots__ = (
        "_algorithms",
        "_allow_qopless",
        "_challenge_tails",
        "_dummy_ha1s",
        "_ha2_cache",
        "_lookup",
        "_nc_by_nonce",
        "_nonces",
        "realm",
    )

    def __init__(
        self,
        realm: str,
        secret: bytes,
        settings: AuthSettings,
        lookup: UserLookup,
        issuer: int = 0,
    ) -> None:
        if not settings.algorithms:
            raise ValueError("at least one digest algorithm must be offered")
        offered = [canonical_algorithm(name) for name in settings.algorithms]
        for algorithm in offered:
            if algorithm.upper() not in _HA1_INDEX_BY_ALGORITHM:
                raise ValueError(f"no stored HA1 for digest algorithm {algorithm!r}")
        self.realm = realm
        self._lookup = lookup
        self._allow_qopless = settings.allow_digest_without_qop
        self._nonces = NonceFactory(secret, settings.nonce_lifetime, issuer)
        self._nc_by_nonce = NonceCounts(settings.max_tracked_nonces, self._nonces.max_validity)
        # By the upper-cased name and by the wire spelling, so the usual one ("MD5") is found
        # without upper-casing it first.
        self._algorithms: dict[str, _Algorithm] = {}
        for algorithm in offered:
            record = _Algorithm(algorithm)
            self._algorithms[algorithm.upper()] = self._algorithms[algorithm] = record
        # Same order as settings: RFC 8760 §2.4, the server's preferred algorithm first. Each
        # challenge's end (its header lines, Content-Length, the blank line) is pre-printed
        # around its nonce, the only part that changes: a challenge joins the pieces with
        # its nonce (base64: nothing in it needs quoting). The lines are checked once, here:
        # the realm is configuration.
        realm_param = format_auth("Digest", [("realm", realm, True)])
        values = [
            f'{realm_param}, nonce="{_NONCE_SLOT}", algorithm={algorithm}, qop="auth"'
            for algorithm in offered
        ]
        # One per (proxy, stale), indexed 2 * proxy + stale.
        tails: list[tuple[str, ...]] = []
        for name in (_WWW_AUTHENTICATE, _PROXY_AUTHENTICATE):
            for stale_tail in ("", ", stale=true"):
                lines = [(name, value + stale_tail) for value in values]
                for line_name, value in lines:
                    check_line(line_name, value.replace(_NONCE_SLOT, ""))
                pieces = tuple(answer_tail(_keyed(lines)).split(_NONCE_SLOT))
                assert len(pieces) == len(lines) + 1  # one slot per line, nowhere else
                tails.append(pieces)
        self._challenge_tails: tuple[tuple[str, ...], ...] = tuple(tails)
        # HA2 by (algorithm, method, digest-uri): every phone's REGISTER hashes the same
        # "REGISTER:sip:<domain>". Bounded: emptied when full.
        self._ha2_cache: dict[tuple[str, str, str], str] = {}
        # An unknown user is checked against these, so its answer costs what a real one does.
        dummy_user, dummy_password = secrets.token_hex(8), secrets.token_hex(16)
        self._dummy_ha1s = (
            ha1(dummy_user, realm, dummy_password, "MD5"),
            ha1(dummy_user, realm, dummy_password, "SHA-256"),
        )

    # -- challenges -----------------------------------------------------------------------
    def challenge(
        self,
        request: Request,
        now: float,
        *,
        proxy: bool,
        stale: bool = False,
        tag: TagMaker | None = None,
    ) -> bytes:
        """A 401 with WWW-Authenticate (proxy=False) or 407 with Proxy-Authenticate, one header
        per offered algorithm, all sharing one fresh nonce (RFC 3261 §22.1, §22.3). Its To-tag
        is `tag(request)`, or a random one.

        Written straight as the bytes `make_response(request, status, to_tag=...,
        keyed=<the lines>).to_bytes()` gives (the request's Via, From, To, Call-ID and CSeq
        lines, then ours), without building the Response: the pre-printed end joined with
        the nonce, after the copied lines (`response_bytes`).
        """
        nonce = self._nonces.make(now)
        tail = nonce.join(self._challenge_tails[(2 if proxy else 0) + (1 if stale else 0)])
        to_tag = new_tag() if tag is None else tag(request)
        return response_bytes(request, 407 if proxy else 401, None, to_tag, tail)

    # -- verification ---------------------------------------------------------------------
    def check(
        self, request: Request, now: float, *, proxy: bool, tag: TagMaker | None = None
    ) -> AuthResult:
        """Authenticate `request`: REGISTER uses proxy=False (401), everything else the route
        challenges uses proxy=True (407), per RFC 3261 §22.3 and the route in DESIGN.md.
        Any answer it builds gets `tag(request)` as its To-tag (the route's own tag for the
        request), or a random one."""
        values = request.headers.get_all("proxy-authorization" if proxy else "authorization")
        if not values:
            return AuthResult(
                answer=self.challenge(request, now, proxy=proxy, tag=tag),
                status=407 if proxy else 401,
            )
        credentials = self._ours(values)
        if credentials is None:
            # Credentials that break the grammar (RFC 7616 §3.4, RFC 3261 §25.1) are a bad
            # request, not a wrong answer: 400 before any challenge, counted like a failure.
            header = "Proxy-Authorization" if proxy else "Authorization"
            to_tag = new_tag() if tag is None else tag(request)
            return AuthResult(
                answer=response_bytes(request, 400, f"Bad {header} header", to_tag, _BARE_TAIL),
                status=400,
                failure=AuthFailure.MALFORMED,
                counts_as_failure=True,
            )
        if isinstance(credentials, tuple):
            failure, claimed_user = credentials
            return self._fail(request, now, proxy, tag, failure, claimed_user)
        return self._verify(request, now, proxy, tag, credentials)

    def _ours(self, values: list[str]) -> Credentials | tuple[AuthFailure, str | None] | None:
        """Of possibly several credentials (one per realm, RFC 3261 §22.3), the Digest one for
        our realm, or why there is none; None when one breaks the grammar."""
        other_realm: Credentials | None = None
        unparsable = False
        for value in values:
            try:
                credentials = parse_credentials(value)
            except SipParseError:
                return None
            realm = credentials.realm
            if realm is None or not credentials.is_digest:
                unparsable = True
            elif realm == self.realm:
                return credentials
            elif other_realm is None:
                other_realm = credentials
        if unparsable or other_realm is None:
            return AuthFailure.MALFORMED, None
        return AuthFailure.REALM_MISMATCH, other_realm.username

    def _verify(
        self,
        request: Request,
        now: float,
        proxy: bool,
        tag: TagMaker | None,
        credentials: Credentials,
    ) -> AuthResult:
        username = credentials.username
        nonce = credentials.nonce
        uri = credentials.uri
        response = credentials.response
        named = credentials.algorithm
        algorithm = self._algorithms.get("MD5" if named is None else named)
        if algorithm is None and named is not None:
            algorithm = self._algorithms.get(named.upper())
        qop = credentials.qop
        nc = credentials.nc
        cnonce = credentials.cnonce
        if username is None or nonce is None or uri is None or response is None:
            return self._fail(request, now, proxy, tag, AuthFailure.MALFORMED, username)
        if algorithm is None:  # not one we offered
            return self._fail(request, now, proxy, tag, AuthFailure.MALFORMED, username)
        # A qop-less answer (RFC 2617 §3.2.2 compatibility, when allowed) carries no nc: its
        # nonce is good for one request (count 0, which no later answer can exceed).
        count = 0
        if qop is not None:
            # We offer qop="auth" only; RFC 7616 §3.4 then requires nc (8LHEX) and cnonce.
            # The token is compared without case (`AUTH` is the same token); the digest is
            # computed over the value we offered, so a client hashing another spelling fails
            # as a wrong answer: counted, never an exception.
            if (qop != "auth" and qop.lower() != "auth") or cnonce is None or nc is None:
                return self._fail(request, now, proxy, tag, AuthFailure.MALFORMED, username)
            count = _nonce_count(nc)
            if count < 0:
                return self._fail(request, now, proxy, tag, AuthFailure.MALFORMED, username)
        elif algorithm.sess and cnonce is None:
            return self._fail(request, now, proxy, tag, AuthFailure.MALFORMED, username)

        # A nonce with a count here checked VALID when first accepted: only its age can have
        # changed since, and its time stamp is kept with the count.
        # A fresh nonce (the answer to the challenge just sent, every phone's REGISTER pair)
        # is decoded and its MAC checked once, which also gives its time stamp.
        known_ms = self._nc_by_nonce.issued_ms(nonce)
        if known_ms is None:
            nonce_state, issued_ms = self._nonces.inspect(nonce, now)
        else:
            issued_ms = known_ms
            nonce_state = self._nonces.state_at(issued_ms, now)
        if nonce_state is NonceState.INVALID:
            return self._fail(request, now, proxy, tag, AuthFailure.BAD_NONCE, username)
        if qop is None and not self._allow_qopless:
            # RFC 7616 §3.4: without qop there is no nonce-count, hence no replay protection.
            return self._fail(request, now, proxy, tag, AuthFailure.MISSING_QOP, username)
        if not _same_uri(uri, request.uri):
            return self._fail(request, now, proxy, tag, AuthFailure.URI_MISMATCH, username)

        # Known or not, compute one digest and compare in constant time: the answer and its
        # timing must not tell an extension that exists from one that does not.
        stored = self._lookup(username)
        ha1_pair = self._dummy_ha1s if stored is None else stored
        expected = verifier_response(
            ha1_pair[algorithm.ha1_index],
            self._ha2(algorithm.name, request.method, uri),
            nonce,
            algorithm.sha256,
            algorithm.sess,
            None if qop is None else nc,
            cnonce,
        )
        answer = response.lower()
        try:
            matches = _COMPARE_DIGEST(expected, answer)  # str: both ASCII, the usual case
        except TypeError:  # a non-ASCII answer: compared as the bytes sent (never equal)
            matches = _COMPARE_DIGEST(
                expected.encode("ascii"), answer.encode("utf-8", "surrogateescape")
            )
        if stored is None:
            return self._fail(request, now, proxy, tag, AuthFailure.UNKNOWN_USER, username)
        if not matches:
            return self._fail(request, now, proxy, tag, AuthFailure.WRONG_PASSWORD, username)
        if nonce_state is NonceState.STALE:
            # RFC 7616 §3.3: right password, old nonce → stale=true and the phone retries.
            return AuthResult(
                answer=self.challenge(request, now, proxy=proxy, stale=True, tag=tag),
                status=407 if proxy else 401,
                failure=AuthFailure.STALE_NONCE,
                claimed_user=username,
            )
        if not self._nc_by_nonce.accept(nonce, count, now, issued_ms):
            return self._fail(request, now, proxy, tag, AuthFailure.REPLAYED_NC, username)
        return AuthResult(username=username, claimed_user=username)

    def _ha2(self, algorithm: str, method: str, uri: str) -> str:
        key = (algorithm, method, uri)
        cache = self._ha2_cache
        ha2 = cache.get(key)
        if ha2 is None:
            ha2 = request_ha2(method, uri, algorithm)
            if len(uri) <= _HA2_URI_LENGTH:
                make_room(cache, _HA2_CACHE_SIZE)
                cache[key] = ha2
        return ha2

    def _fail(
        self,
        request: Request,
        now: float,
        proxy: bool,
        tag: TagMaker | None,
        failure: AuthFailure,
        claimed_user: str | None,
    ) -> AuthResult:
        return AuthResult(
            answer=self.challenge(request, now, proxy=proxy, tag=tag),
            status=407 if proxy else 401,
            failure=failure,
            claimed_user=claimed_user,
            counts_as_failure=True,
        )


def _keyed(lines: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """`keyed_lines` without its check: the challenge's lines hold the nonce's placeholder
    (LF LF), and are checked without it by the caller."""
    return [(name.lower(), name, value) for name, value in lines]


def _same_uri(uri_text: str, request_uri: Uri) -> bool:
    """RFC 7616 §3.4.6 / RFC 3261 §22.4: the digest-uri must be the Request-URI. Byte-equal is
    the common case; otherwise the two must parse to the same URI (host case aside)."""
    if uri_text == str(request_uri):
        return True
    try:
        claimed = parse_uri(uri_text)
    except SipParseError:
        return False
    if isinstance(claimed, SipUri) and isinstance(request_uri, SipUri):
        return claimed.replace(host=claimed.host.lower()) == request_uri.replace(
            host=request_uri.host.lower()
        )
    return claimed == request_uri
