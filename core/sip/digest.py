"""HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 7616, RFC 8760): the maths only.

Three jobs, no state beyond a secret and no clock (time is always an argument):

- the hashes: HA1, the `-sess` session key, HA2 and the request-digest (RFC 7616 §3.4.1 to
  §3.4.3; RFC 2617 §3.2.2 for the qop-less form that old phones and SIPp still send);
- stateless nonces: an HMAC over the issue time and a random part, so any nonce we issued can be
  checked (authentic? expired?) without remembering it (RFC 7616 §3.3 and §5.4);
- the client side, for answering a carrier's 401/407 (`pick_challenge`, `build_authorization`).

`parse_credentials` is a fast path for `fields.parse_auth`: the authenticator runs on every
request, and the character-by-character reference parser costs 20-40 µs per header here.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import importlib
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from core.sip.entropy import random_bytes, random_hex
from core.sip.fields import AuthParams, format_auth, is_token, parse_auth


class _Hash(Protocol):
    def hexdigest(self) -> str: ...


_HashFactory = Callable[[bytes], _Hash]


def _plain_md5() -> Callable[..., _Hash]:
    """CPython's own MD5 (`_md5`), else hashlib's: for the ~150 bytes a verifier hashes,
    OpenSSL 3's context set-up and the copy `hexdigest` makes cost more than the MD5 itself
    (about 2,000 instructions a digest more, measured). Same digests; builds
    without the built-in hashes (some FIPS ones) keep OpenSSL's."""
    try:
        return importlib.import_module("_md5").md5
    except (ImportError, AttributeError):
        return hashlib.md5


_MD5: Final = _plain_md5()
# SHA-256 stays OpenSSL's: there the built-in one is the slower.
_SHA256: Final = hashlib.sha256


def _md5(data: bytes) -> _Hash:
    # MD5 is what the protocol asks for, not our choice of security primitive (FIPS builds).
    return hashlib.md5(data, usedforsecurity=False)


# Upper-cased wire names → hash constructor: the RFC 7616 registry (§6.1: MD5, SHA-256,
# SHA-512-256 and their -sess forms), which RFC 8760 brings to SIP. SHA-512/256 comes from
# OpenSSL, so it is offered to callers only where this Python's hashlib has it.
_HASH_BY_ALGORITHM: Final[dict[str, _HashFactory]] = {
    "MD5": _md5,
    "MD5-SESS": _md5,
    "SHA-256": hashlib.sha256,
    "SHA-256-SESS": hashlib.sha256,
}
if "sha512_256" in hashlib.algorithms_available:

    def _sha512_256(data: bytes) -> _Hash:
        return hashlib.new("sha512_256", data)

    _HASH_BY_ALGORITHM["SHA-512-256"] = _sha512_256
    _HASH_BY_ALGORITHM["SHA-512-256-SESS"] = _sha512_256

# The spelling the RFC 7616 §6.1 registry uses on the wire, keyed by the upper-cased name.
_CANONICAL_NAME = {name: name.replace("-SESS", "-sess") for name in _HASH_BY_ALGORITHM}

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_CANONICAL_NAME.values())


def canonical_algorithm(name: str) -> str:
    """The wire spelling of an algorithm name ("md5-SESS" → "MD5-sess"); ValueError if unknown."""
    try:
        return _CANONICAL_NAME[name.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {name!r}") from None


def _hash_factory(algorithm: str) -> _HashFactory:
    try:
        return _HASH_BY_ALGORITHM[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None


def _hex(factory: _HashFactory, text: str) -> str:
    # Header text is decoded with surrogateescape, so this gives back the bytes that were sent.
    return factory(text.encode("utf-8", "surrogateescape")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username ":" realm ":" password) as lower-case hex (RFC 7616 §3.4.2).

    For a `-sess` algorithm this is the stored, per-password part; `compute_response` turns it
    into the session key with the nonce and cnonce of the request.
    """
    return _hex(_hash_factory(algorithm), f"{username}:{realm}:{password}")


def session_ha1(stored_ha1: str, nonce: str, cnonce: str, algorithm: str) -> str:
    """The `-sess` session key H(HA1 ":" nonce ":" cnonce) (RFC 7616 §3.4.2)."""
    return _hex(_hash_factory(algorithm), f"{stored_ha1}:{nonce}:{cnonce}")


def compute_response(
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | int | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest, lower-case hex (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 without qop).

    `ha1` is the stored H(username:realm:password) even for `-sess` algorithms. `nc` is the
    8-hex-digit text as sent (a server must hash exactly what it received) or an int a client
    wants formatted. `body` only counts for qop=auth-int.
    """
    factory = _hash_factory(algorithm)
    if qop is None or qop == "auth":
        ha2 = request_ha2(method, uri, algorithm)
    elif qop == "auth-int":
        ha2 = _hex(factory, f"{method}:{uri}:{factory(body).hexdigest()}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    return response_from_ha2(ha1, ha2, nonce, algorithm, qop, nc, cnonce)


def request_ha2(method: str, uri: str, algorithm: str = "MD5") -> str:
    """HA2 = H(method ":" digest-uri) for qop=auth or none (RFC 7616 §3.4.3): the same for
    every REGISTER to one domain, so a server may keep it."""
    return _hex(_hash_factory(algorithm), f"{method}:{uri}")


def response_from_ha2(
    ha1: str,
    ha2: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | int | None = None,
    cnonce: str | None = None,
) -> str:
    """`compute_response` from HA2 on (RFC 7616 §3.4.1), for a caller that has HA2 already."""
    factory = _hash_factory(algorithm)
    key = ha1
    if algorithm.upper().endswith("-SESS"):
        if cnonce is None:
            raise ValueError("a -sess algorithm needs a cnonce")
        key = _hex(factory, f"{ha1}:{nonce}:{cnonce}")
    if qop is None:
        return _hex(factory, f"{key}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    nc_text = f"{nc:08x}" if isinstance(nc, int) else nc
    return _hex(factory, f"{key}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")


def hex_digest(text: str, sha256: bool) -> str:
    """MD5 or SHA-256 of `text` as `_hex` gives it, without a factory: the verifier's hashes
    (one per request) call hashlib's constructor directly rather than through a Python-level
    callable, which costs about as much as the MD5 itself."""
    data = text.encode("utf-8", "surrogateescape")
    if sha256:
        return _SHA256(data).hexdigest()
    return _MD5(data, usedforsecurity=False).hexdigest()


def verifier_response(
    ha1: str,
    ha2: str,
    nonce: str,
    sha256: bool,
    sess: bool,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """`response_from_ha2` as the server needs it: qop="auth" when `nc` is given (with its
    cnonce), else the RFC 2617 form; `sess` for the -sess algorithms (cnonce given). The caller
    has checked all that, so nothing is checked here."""
    key = hex_digest(f"{ha1}:{nonce}:{cnonce}", sha256) if sess else ha1
    text = f"{key}:{nonce}:{ha2}" if nc is None else f"{key}:{nonce}:{nc}:{cnonce}:auth:{ha2}"
    # `hex_digest` written out: one native call fewer on every request.
    data = text.encode("utf-8", "surrogateescape")
    if sha256:
        return _SHA256(data).hexdigest()
    return _MD5(data, usedforsecurity=False).hexdigest()


# -- parsing ------------------------------------------------------------------------------

# The parameter names of the credentials and challenges phones send, as they spell them:
# one of these needs neither the token check nor lower-casing.
_COMMON_NAMES: Final = frozenset(
    {
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "qop",
        "nc",
        "opaque",
        "stale",
        "domain",
        "userhash",
    }
)


@dataclass(slots=True, init=False)
class Credentials:
    """What the server reads of one Authorization / Proxy-Authorization value (RFC 7616 §3.4):
    the scheme as written and the parameters it verifies, each None when absent.

    Fields rather than a dict: the authenticator reads each once, and a native attribute costs
    a fraction of a dict store plus a lookup (no name is hashed). Other parameters (opaque,
    userhash, extensions) are checked for the grammar and dropped.
    """

    # Written-out __init__ (one per request): a dataclass's generated one runs interpreted.
    scheme: str
    username: str | None
    realm: str | None
    nonce: str | None
    uri: str | None
    response: str | None
    algorithm: str | None
    cnonce: str | None
    qop: str | None
    nc: str | None

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self.username = self.realm = self.nonce = self.uri = self.response = None
        self.algorithm = self.cnonce = self.qop = self.nc = None

    @property
    def is_digest(self) -> bool:
        return self.scheme == "Digest" or self.scheme.lower() == "digest"


# The parameters `Credentials` keeps, lower-case as `parse_auth` names them.
_CREDENTIAL_FIELDS: Final = frozenset(
    {"username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "qop", "nc"}
)


def credentials_of(parsed: AuthParams) -> Credentials:
    """The `Credentials` in a header `parse_auth` has read: the general path."""
    params = parsed.params
    found = Credentials(parsed.scheme)
    found.username = params.get("username")
    found.realm = params.get("realm")
    found.nonce = params.get("nonce")
    found.uri = params.get("uri")
    found.response = params.get("response")
    found.algorithm = params.get("algorithm")
    found.cnonce = params.get("cnonce")
    found.qop = params.get("qop")
    found.nc = params.get("nc")
    return found


def parse_credentials(text: str) -> Credentials:
    """`credentials_of(parse_auth(text))`, in one pass for the headers phones send: same
    result, same errors (anything unusual is handed to parse_auth itself)."""
    found = _common_credentials(text)
    return credentials_of(parse_auth(text)) if found is None else found


def _common_credentials(text: str) -> Credentials | None:
    """The credentials as `parse_auth` would read them, or None when the header is not in the
    common shape.

    The common shape: `Scheme name="value", name=value, ...`, one space after the scheme,
    parameters separated by a comma and at most one space, names that are tokens, the ones
    kept spelled in lower case, quoted values, no backslash anywhere, bare values without
    surrounding whitespace, no name twice. Within it parse_auth's reading is plain (no
    quoted-pair, nothing to strip), so a few `find`s give the same values; anything else
    returns None, and parse_auth decides.

    Written for what mypyc makes of it, where each `find` or slice is a C call of ~60
    instructions and one character read with `ord(text[i])` a few: a kept parameter is told
    by its first letter and confirmed with one `find` bounded to its `name=` (no `=` search,
    no name sliced out), then its value costs a `find` and a slice.
    """
    if text.startswith("Digest "):
        scheme = "Digest"
        index = 7
    else:
        scheme, space, _ = text.partition(" ")
        if not space or not is_token(scheme):
            return None
        index = len(scheme) + 1
    if "\\" in text:
        return None  # a quoted-pair, maybe: parse_auth unescapes
    found = Credentials(scheme)
    others: set[str] | None = None  # names of the parameters not kept, to refuse repeats
    length = len(text)
    while index < length:
        field = _OTHER
        start = -1
        first = ord(text[index])
        # The second letter (third for realm/response) picks the one name to try.
        second = ord(text[index + 1]) if index + 2 < length else 0
        if first == 117:  # u
            if second == 115:  # s
                if text.find("username=", index, index + 9) == index:
                    field, start = _USERNAME, index + 9
            elif text.find("uri=", index, index + 4) == index:
                field, start = _URI, index + 4
        elif first == 114 and second == 101:  # r, e
            if ord(text[index + 2]) == 97:  # a
                if text.find("realm=", index, index + 6) == index:
                    field, start = _REALM, index + 6
            elif text.find("response=", index, index + 9) == index:
                field, start = _RESPONSE, index + 9
        elif first == 110:  # n
            if second == 111:  # o
                if text.find("nonce=", index, index + 6) == index:
                    field, start = _NONCE, index + 6
            elif text.find("nc=", index, index + 3) == index:
                field, start = _NC, index + 3
        elif first == 99 and text.find("cnonce=", index, index + 7) == index:  # c
            field, start = _CNONCE, index + 7
        elif first == 97 and text.find("algorithm=", index, index + 10) == index:  # a
            field, start = _ALGORITHM, index + 10
        elif first == 113 and text.find("qop=", index, index + 4) == index:  # q
            field, start = _QOP, index + 4
        name = ""
        if field == _OTHER:
            # Not a kept parameter in its usual spelling (so not one at all, or `Username`).
            eq = text.find("=", index)
            if eq < 0:
                return None
            name = text[index:eq]
            start = eq + 1
        if start < length and ord(text[start]) == 34:  # '"'
            end = text.find('"', start + 1)
            if end < 0:
                return None
            value = text[start + 1 : end]
            index = end + 1
        else:
            end = text.find(",", start)
            if end < 0:
                end = length
            value = text[start:end]
            # parse_auth strips a bare value: only one without spaces around reads the same.
            # Printable ASCII is not space: `isspace` only for the rest.
            if end > start:
                edge = ord(text[start])
                if (edge <= 32 or edge >= 127) and text[start].isspace():
                    return None
                edge = ord(text[end - 1])
                if (edge <= 32 or edge >= 127) and text[end - 1].isspace():
                    return None
            index = end
        # A repeat is malformed (parse_auth says so): the general path raises.
        if field == _USERNAME:
            if found.username is not None:
                return None
            found.username = value
        elif field == _REALM:
            if found.realm is not None:
                return None
            found.realm = value
        elif field == _NONCE:
            if found.nonce is not None:
                return None
            found.nonce = value
        elif field == _URI:
            if found.uri is not None:
                return None
            found.uri = value
        elif field == _RESPONSE:
            if found.response is not None:
                return None
            found.response = value
        elif field == _ALGORITHM:
            if found.algorithm is not None:
                return None
            found.algorithm = value
        elif field == _CNONCE:
            if found.cnonce is not None:
                return None
            found.cnonce = value
        elif field == _QOP:
            if found.qop is not None:
                return None
            found.qop = value
        elif field == _NC:
            if found.nc is not None:
                return None
            found.nc = value
        else:
            if name not in _COMMON_NAMES:
                if not is_token(name):
                    return None
                name = name.lower()
                if name in _CREDENTIAL_FIELDS:
                    return None  # a kept one spelled otherwise ("Username"): rare
            if others is None:
                others = {name}
            elif name in others:
                return None
            else:
                others.add(name)
        if index < length:
            if ord(text[index]) != 44:  # ','
                return None
            index += 1
            if index < length and ord(text[index]) == 32:  # ' '
                index += 1
    return found


# Which kept parameter `_common_credentials` is reading (native ints, compiled).
_OTHER: Final = 0
_USERNAME: Final = 1
_REALM: Final = 2
_NONCE: Final = 3
_URI: Final = 4
_RESPONSE: Final = 5
_ALGORITHM: Final = 6
_CNONCE: Final = 7
_QOP: Final = 8
_NC: Final = 9


# -- nonces -------------------------------------------------------------------------------


class NonceState(enum.Enum):
    VALID = "valid"
    # Ours, but too old (or from a clock that went backwards), or issued by another of our
    # processes or before a restart (its nonce counts are not here): stale=true, and the
    # phone retries.
    STALE = "stale"
    INVALID = "invalid"  # not ours: forged, tampered with, or from another install's secret


_ISSUED_BYTES: Final = 8  # signed milliseconds
# The origin: one byte for the process that issued it (0: main, 1..: workers), two drawn
# when that process started.
_ORIGIN_BYTES: Final = 3
_RANDOM_BYTES: Final = 6  # two nonces issued in the same millisecond still differ (nc is per nonce)
_MAC_BYTES: Final = 16  # keyed BLAKE2b, 128 bits: plenty against forgery
_PAYLOAD_BYTES: Final = _ISSUED_BYTES + _ORIGIN_BYTES + _RANDOM_BYTES
MAX_ISSUER = 255
_NONCE_BYTES: Final = _PAYLOAD_BYTES + _MAC_BYTES
_NONCE_CHARS: Final = 4 * _NONCE_BYTES // 3  # 33 bytes: base64 with no padding
_CLOCK_SKEW: Final = 1.0  # seconds a nonce may seem to come from the future before it is stale
_ISSUED: Final = struct.Struct(">q")  # the time stamp: signed milliseconds, big-endian
_ISSUED_SIGN: Final = 1 << (8 * _ISSUED_BYTES - 1)
# The C functions the nonce path calls, bound once: compiled, `binascii.a2b_base64` is a
# module attribute look-up on every call, a Final name a static load.
_A2B_BASE64: Final = binascii.a2b_base64
_B2A_BASE64: Final = binascii.b2a_base64
_COMPARE_DIGEST: Final = hmac.compare_digest


class NonceFactory:
    """Stateless nonces: base64(payload ‖ MAC(secret, payload)), where the payload is
    issued-ms ‖ origin ‖ random.

    RFC 7616 §3.3 suggests exactly this shape (a time stamp and a private key) so the server
    can spot old nonces without storing any. 33 bytes encode to 44 base64 characters with no
    padding: there is exactly one spelling of each nonce.

    The origin names the process that made the nonce, and its run. Replays are caught by a
    nonce-count table that each process keeps in memory (core/security/auth.py), so a nonce is
    accepted only by the process and run that issued it: sent to another worker (under a
    Call-ID that worker owns), or after a restart emptied the table, a captured request would
    find no count and pass. Anywhere else it checks STALE, and the phone answers a fresh
    challenge without asking anyone. The secret is per install and kept across restarts, so
    such a nonce is still known for ours (stale, not a failed login).
    """

    __slots__ = ("_keyed", "_lifetime", "_origin")

    def __init__(self, secret: bytes, lifetime: float, issuer: int = 0) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret needs at least 16 bytes")
        if lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        if not 0 <= issuer <= MAX_ISSUER:
            raise ValueError(f"the nonce issuer must be 0..{MAX_ISSUER}")
        self._origin = bytes((issuer,)) + os.urandom(_ORIGIN_BYTES - 1)
        # Keyed BLAKE2b is a MAC in a few C calls; the hmac module's objects cost four
        # interpreted calls per nonce (a tenth of a challenge's CPU, measured compiled). The
        # key is absorbed once, here: each MAC copies this state rather than hashing the key
        # block again (a third fewer instructions per nonce).
        key = hashlib.blake2b(b"pbxtui nonce", key=secret[:64]).digest()
        self._keyed = hashlib.blake2b(key=key, digest_size=_MAC_BYTES)
        self._lifetime = lifetime

    @property
    def lifetime(self) -> float:
        return self._lifetime

    @property
    def max_validity(self) -> float:
        """How long after a nonce is first seen it may still check VALID (lifetime + skew):
        per-nonce state older than this can be forgotten."""
        return self._lifetime + _CLOCK_SKEW

    def _mac(self, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.digest()

    def make(self, now: float) -> str:
        payload = _ISSUED.pack(int(now * 1000)) + self._origin + random_bytes(_RANDOM_BYTES)
        return _B2A_BASE64(payload + self._mac(payload), newline=False).decode("ascii")

    def check(self, nonce: str, now: float) -> NonceState:
        return self.inspect(nonce, now)[0]

    def inspect(self, nonce: str, now: float) -> tuple[NonceState, int]:
        """`check`, and the nonce's time stamp (`issued_ms`) when it is ours (VALID or
        STALE; 0 for INVALID): a nonce seen for the first time is decoded once, not once to
        check it and again to read its time stamp (a seventh of a first-use check, compiled).
        """
        raw = nonce_bytes(nonce)
        if raw is None:
            return NonceState.INVALID, 0
        payload = raw[:_PAYLOAD_BYTES]
        if not _COMPARE_DIGEST(self._mac(payload), raw[_PAYLOAD_BYTES:]):
            return NonceState.INVALID, 0
        # The signed big-endian time stamp, read byte by byte: native arithmetic, compiled,
        # where Struct.unpack_from is a method call and a tuple.
        issued_ms = 0
        for index in range(_ISSUED_BYTES):
            issued_ms = (issued_ms << 8) | raw[index]
        if issued_ms >= _ISSUED_SIGN:
            issued_ms -= 2 * _ISSUED_SIGN
        if payload[_ISSUED_BYTES : _ISSUED_BYTES + _ORIGIN_BYTES] != self._origin:
            return NonceState.STALE, issued_ms
        return self.state_at(issued_ms, now), issued_ms

    def state_at(self, issued_ms: int, now: float) -> NonceState:
        """The state at `now` of a nonce this process issued at `issued_ms` (its time stamp,
        `issued_ms()`): VALID, or STALE once too old or from the future. A nonce already
        checked VALID needs only this, not its MAC again."""
        age = now - issued_ms / 1000
        if age > self._lifetime or age < -_CLOCK_SKEW:
            return NonceState.STALE
        return NonceState.VALID

    @staticmethod
    def issued_ms(nonce: str) -> int:
        """The time stamp of a nonce that checked VALID: the millisecond it was issued."""
        return int(_ISSUED.unpack_from(binascii.a2b_base64(nonce))[0])


def nonce_bytes(nonce: str) -> bytes | None:
    """The bytes a nonce spells, or None unless it has the one spelling `make` gives: 44
    base64 characters, no padding (a peer's text, so anything may come).

    Strict decoding refuses any other character (a non-ASCII one raises ValueError); with a
    "=" in the 44 the result falls short of 33 bytes. One C call where a regular expression
    then the decoding walked the text twice.
    """
    if len(nonce) != _NONCE_CHARS:
        return None
    try:
        raw = _A2B_BASE64(nonce, strict_mode=True)
    except ValueError:  # binascii.Error is one
        return None
    return raw if len(raw) == _NONCE_BYTES else None


# -- the client side: answering a carrier's challenge -------------------------------------


class DigestChallengeError(ValueError):
    """A challenge we cannot answer: not Digest, no realm or nonce, or nothing we support."""


def _qop_options(challenge: AuthParams) -> list[str]:
    offered = challenge.get("qop")
    return [] if offered is None else [item.strip().lower() for item in offered.split(",")]


def _answerable(challenge: AuthParams) -> bool:
    if challenge.scheme.lower() != "digest":
        return False
    if challenge.get("realm") is None or challenge.get("nonce") is None:
        return False
    if (challenge.get("algorithm") or "MD5").upper() not in _HASH_BY_ALGORITHM:
        return False
    qops = _qop_options(challenge)
    return not qops or "auth" in qops or "auth-int" in qops


def pick_challenge(challenges: Iterable[AuthParams]) -> AuthParams | None:
    """The first challenge we can answer: servers list them most preferred first (RFC 7616 §3.7,
    RFC 8760 §2.4), so a 401 offering SHA-256 then MD5 gets SHA-256."""
    for challenge in challenges:
        if _answerable(challenge):
            return challenge
    return None


def build_authorization(
    challenge: AuthParams,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (RFC 7616 §3.4).

    Prefers qop=auth, then auth-int, then the RFC 2617 form when the challenge has no qop.
    Echoes opaque, and hashes the username when the challenge asks for userhash (§3.4.4).
    `cnonce` defaults to a fresh random value; pass one to make the output reproducible.
    """
    if not _answerable(challenge):
        raise DigestChallengeError("cannot answer this challenge")
    realm = challenge.get("realm") or ""
    nonce = challenge.get("nonce") or ""
    algorithm = canonical_algorithm(challenge.get("algorithm") or "MD5")
    qops = _qop_options(challenge)
    qop = "auth" if "auth" in qops else ("auth-int" if qops else None)
    if cnonce is None and (qop is not None or algorithm.endswith("-sess")):
        cnonce = random_hex(8)
    response = compute_response(
        ha1(username, realm, password, algorithm),
        method,
        uri,
        nonce,
        algorithm,
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        body=body,
    )
    userhash = (challenge.get("userhash") or "").lower() == "true"
    sent_username = _hex(_hash_factory(algorithm), f"{username}:{realm}") if userhash else username
    params: list[tuple[str, str, bool]] = [
        ("username", sent_username, True),
        ("realm", realm, True),
        ("nonce", nonce, True),
        ("uri", uri, True),
        ("response", response, True),
        ("algorithm", algorithm, False),
    ]
    if cnonce is not None and (qop is not None or algorithm.endswith("-sess")):
        params.append(("cnonce", cnonce, True))
    if qop is not None:
        params.append(("qop", qop, False))
        params.append(("nc", f"{nc:08x}", False))
    opaque = challenge.get("opaque")
    if opaque is not None:
        params.append(("opaque", opaque, True))
    if userhash:
        params.append(("userhash", "true", False))
    return format_auth("Digest", params)
