"""SIP users: the record, the rules for names and passwords, and the in-memory directory.

The record (`User`, core/account.py) and the directory (`UserDirectory`, core/directory.py,
compiled with the SIP core) live in modules of their own and are re-exported here, the one
place the rest of the code imports them from.

A SIP password is never stored. Digest authentication (RFC 2617, RFC 7616) only needs
HA1 = H(username ":" realm ":" password), so that is what we keep, once per algorithm we offer.
The cost is that HA1 depends on the realm: changing the SIP domain invalidates every stored
password. The console password is different: it is checked by us, never by a phone, so it is
kept as a slow bcrypt hash.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import replace

import bcrypt

from core.account import User as User
from core.directory import Credentials as Credentials
from core.directory import UserDirectory as UserDirectory
from core.sip import digest

OUTBOUND_POLICIES: tuple[str, ...] = ("none", "local", "national", "international")
"""What a user may dial through a carrier, widest last. 'none' is the default: toll fraud
starts with a guessed password, so outbound calling is something an admin grants."""

# What an admin may change on a user besides its password (the name is its identity).
USER_OPTIONS = frozenset(
    {
        "display_name",
        "enabled",
        "outbound_policy",
        "allow_prefixes",
        "deny_prefixes",
        "max_concurrent_calls",
        "max_calls_per_hour",
        "caller_id",
        "tls_only",
    }
)

_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_USERNAME_CHARACTER = re.compile(r"[A-Za-z0-9._-]", re.ASCII)
MAX_USERNAME_LENGTH = 64
MAX_DISPLAY_NAME_LENGTH = 64
_CALLER_ID = re.compile(r"\+?[0-9]{1,20}", re.ASCII)

# Lower-case letters and digits without the look-alikes (0/o, 1/l) and without symbols that
# hide on phone soft keyboards: 32 symbols, 5 bits each, 100 bits for 20 characters.
_PASSWORD_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
GENERATED_PASSWORD_LENGTH = 20

ADMIN_BCRYPT_COST = 12  # ~280 ms on the target machine: slow for guessing, fine for a login
_BCRYPT_MAX_BYTES = 72  # bcrypt ignores (bcrypt>=5: rejects) anything longer


def validate_username(name: str) -> None:
    """Check a SIP username; raise `ValueError` saying what is wrong.

    Rule: 1 to 64 characters, only ASCII letters, digits, `.`, `-` and `_`, starting with a
    letter or digit. That keeps names valid unescaped in a SIP URI user part (RFC 3261 §25.1),
    in HA1 (no ':'), in CSV files and in shell commands, and it rules out names such as `-rf`.
    """
    validate_name(name, "username")


def validate_name(name: str, what: str) -> None:
    """The username rule, for any name an admin types (carriers too); `what` names it in
    the error message."""
    if not name:
        raise ValueError(f"{what} is empty")
    if len(name) > MAX_USERNAME_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_USERNAME_LENGTH} characters")
    if _USERNAME.fullmatch(name):
        return
    if not _USERNAME_CHARACTER.fullmatch(name[0]) or name[0] in "._-":
        raise ValueError(f"{what} {name!r} must start with a letter or a digit")
    bad = next(c for c in name if not _USERNAME_CHARACTER.fullmatch(c))
    raise ValueError(
        f"{what} {name!r} contains {bad!r}; use only letters, digits, '.', '-' and '_'"
    )


def validate_password(password: str) -> None:
    """Reject passwords a phone could not send: empty, or with control characters."""
    if not password:
        raise ValueError("password is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
        raise ValueError("password contains a control character")


def validate_display_name(display_name: str) -> None:
    """A display name goes into From headers as a quoted-string (RFC 3261 §25.1): no quotes,
    backslashes or control characters, so it never needs escaping."""
    if len(display_name) > MAX_DISPLAY_NAME_LENGTH:
        raise ValueError(f"display name is longer than {MAX_DISPLAY_NAME_LENGTH} characters")
    if any(c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F for c in display_name):
        raise ValueError("display name must not contain quotes, backslashes or control characters")


def validate_caller_id(caller_id: str) -> None:
    """The outbound caller ID is a number carriers accept: digits, optionally after a '+'."""
    if caller_id and not _CALLER_ID.fullmatch(caller_id):
        raise ValueError(f"caller ID {caller_id!r} must be digits, optionally after '+'")


def validate_outbound_policy(policy: str) -> None:
    """Raise `ValueError` unless `policy` is one of `OUTBOUND_POLICIES`."""
    if policy not in OUTBOUND_POLICIES:
        raise ValueError(f"outbound policy {policy!r} is not one of {', '.join(OUTBOUND_POLICIES)}")


def generate_password() -> str:
    """A random 20-character password (100 bits) that is easy to type on a phone keypad."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password) as hex (RFC 7616 §3.4.2), for MD5 or SHA-256: the two
    hashes the users table stores. The maths is core.sip.digest's, shared with the verifier."""
    if algorithm.upper() not in ("MD5", "SHA-256"):
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return digest.ha1(username, realm, password, algorithm.upper())


def make_user(
    username: str,
    password: str,
    realm: str,
    *,
    display_name: str = "",
    enabled: bool = True,
    outbound_policy: str = "none",
    allow_prefixes: Iterable[str] = (),
    deny_prefixes: Iterable[str] = (),
    max_concurrent_calls: int = 0,
    max_calls_per_hour: int = 0,
    caller_id: str = "",
    created_at: float | None = None,
    tls_only: bool = False,
) -> User:
    """Validate the inputs and build a `User` holding only the HA1s of `password`."""
    validate_username(username)
    validate_password(password)
    user = User(
        username=username,
        realm=realm,
        ha1_md5=compute_ha1(username, realm, password, "MD5"),
        ha1_sha256=compute_ha1(username, realm, password, "SHA-256"),
        display_name=display_name,
        enabled=enabled,
        outbound_policy=outbound_policy,
        allow_prefixes=tuple(allow_prefixes),
        deny_prefixes=tuple(deny_prefixes),
        max_concurrent_calls=max_concurrent_calls,
        max_calls_per_hour=max_calls_per_hour,
        caller_id=caller_id,
        created_at=time.time() if created_at is None else created_at,
        tls_only=tls_only,
    )
    validate_user_options(user)
    return user


def changed_user(user: User, **changes: object) -> User:
    """`user` with some of `USER_OPTIONS` changed, checked by the same rules as a new user:
    the console's edit form and `pbxtui user set` both come through here."""
    validate_option_names(changes)
    for key in ("allow_prefixes", "deny_prefixes"):
        prefixes = changes.get(key)
        if prefixes is not None:
            if isinstance(prefixes, str) or not isinstance(prefixes, Iterable):
                raise ValueError(f"{key.replace('_', ' ')} must be a list of prefixes")
            changes[key] = tuple(str(prefix) for prefix in prefixes)
    updated = replace(user, **changes)  # type: ignore[arg-type]
    validate_user_options(updated)
    return updated


def validate_option_names(names: Iterable[str]) -> None:
    """Refuse a field that is not one of `USER_OPTIONS` (a typo must not pass silently)."""
    unknown = set(names) - USER_OPTIONS
    if unknown:
        raise ValueError(f"unknown user field(s): {', '.join(sorted(unknown))}")


def validate_user_options(user: User) -> None:
    """The rules for everything but the name and the password; `ValueError` says which."""
    validate_outbound_policy(user.outbound_policy)
    validate_display_name(user.display_name)
    validate_caller_id(user.caller_id)
    if not isinstance(user.enabled, bool):
        raise ValueError("enabled must be true or false")
    if not isinstance(user.tls_only, bool):
        raise ValueError("TLS only must be true or false")
    for limit in (user.max_concurrent_calls, user.max_calls_per_hour):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError("call limits must be 0 (no limit) or positive")


def with_password(user: User, password: str, realm: str | None = None) -> User:
    """The same user with HA1s for a new password (and, optionally, a new realm)."""
    validate_password(password)
    new_realm = user.realm if realm is None else realm
    return replace(
        user,
        realm=new_realm,
        ha1_md5=compute_ha1(user.username, new_realm, password, "MD5"),
        ha1_sha256=compute_ha1(user.username, new_realm, password, "SHA-256"),
    )


def hash_admin_password(password: str, cost: int = ADMIN_BCRYPT_COST) -> str:
    """bcrypt hash of the console password; slow on purpose, never called on the SIP path."""
    validate_password(password)
    encoded = password.encode()
    if len(encoded) > _BCRYPT_MAX_BYTES:
        raise ValueError(f"password is longer than {_BCRYPT_MAX_BYTES} bytes")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(rounds=cost)).decode("ascii")


def check_admin_password(password: str, bcrypt_hash: str) -> bool:
    """True when `password` matches the stored bcrypt hash (constant-time in bcrypt)."""
    encoded = password.encode()
    if not encoded or len(encoded) > _BCRYPT_MAX_BYTES:
        return False
    try:
        return bcrypt.checkpw(encoded, bcrypt_hash.encode("ascii"))
    except ValueError:
        return False
