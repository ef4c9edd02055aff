"""One SIP account as stored: the record the directory (core/directory.py) holds by name.

A module of its own so the compiled directory can name it without importing core/users.py
(the rules for names and passwords, bcrypt), which re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    """One SIP account, as stored in the users table.

    `max_concurrent_calls` and `max_calls_per_hour` of 0 mean no per-user limit (the global
    limits in `ProxySettings` still apply). `allow_prefixes` / `deny_prefixes` refine the
    outbound policy for dialled numbers; `caller_id` is the number presented to carriers.
    `tls_only`: the user's REGISTERs and calls are refused unless they arrive over TLS (the
    route checks it after digest auth), for accounts whose phones must never speak in clear.
    """

    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    display_name: str = ""
    enabled: bool = True
    outbound_policy: str = "none"
    allow_prefixes: tuple[str, ...] = ()
    deny_prefixes: tuple[str, ...] = ()
    max_concurrent_calls: int = 0
    max_calls_per_hour: int = 0
    caller_id: str = ""
    created_at: float = 0.0
    tls_only: bool = False

    def ha1(self, algorithm: str) -> str:
        """The stored HA1 for a digest algorithm name as it appears on the wire."""
        if algorithm.upper() in ("SHA-256", "SHA-256-SESS"):
            return self.ha1_sha256
        return self.ha1_md5

    def __repr__(self) -> str:
        # HA1 is password-equivalent for this realm; keep it out of logs and tracebacks.
        return f"User(username={self.username!r}, realm={self.realm!r}, enabled={self.enabled})"
