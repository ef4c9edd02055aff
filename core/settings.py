"""What the core needs to know to run, as plain frozen dataclasses.

The core never reads TOML or argv: `pbxtui/config.py` turns the config file and the CLI flags
into a `Settings`, and tests build one directly. Every default here is the documented default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on: `udp:0.0.0.0:5060`, `tcp:[::]:5060`."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    max_message_bytes: int = 65_535  # a UDP datagram can't be larger; TCP messages get the same cap
    max_stream_buffer_bytes: int = 131_072  # per TCP connection, unparsed bytes
    tcp_idle_seconds: float = 300.0  # RFC 5626 keep-alives arrive well inside this
    max_tcp_connections: int = 4_096
    udp_receive_buffer_bytes: int = 4 * 1024 * 1024  # absorbs event-loop stalls (UI redraws)


@dataclass(frozen=True, slots=True)
class RegistrarSettings:
    min_expires: int = 60
    max_expires: int = 3_600
    default_expires: int = 3_600
    max_contacts_per_user: int = 10
    nat_ping_interval: float = 30.0  # seconds between OPTIONS pings to contacts behind NAT
    nat_ping_failures: int = 3  # unanswered pings before a contact is flagged unreachable


@dataclass(frozen=True, slots=True)
class AuthSettings:
    nonce_lifetime: float = 300.0  # an older nonce gets stale=true
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")  # offered in this order (RFC 8760 §2.4)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    # Flood detection (pike-like): requests per source in a sliding window.
    flood_window: float = 2.0
    flood_limit: int = 60  # ~30 req/s sustained from one address that never authenticated
    flood_limit_authenticated: int = 400  # a NATed office re-registering after an outage
    flood_limit_carrier: int = 1_000
    flood_ban_seconds: float = 600.0
    max_tracked_sources: int = 100_000  # per-IP state cap; oldest evicted first
    # Scanners.
    scanner_user_agents: tuple[str, ...] = (
        "friendly-scanner",
        "sipcli",
        "sipvicious",
        "sip-scan",
        "sipsak",
        "vaxsipuseragent",
        "pplsip",
        "sundayddr",
        "iwar",
        "sipptk",
        "siparmyknife",
        "smap",
        "nessus",
        "sip-vicious",
        "voiper",
        "cirpack",
        "exec",
        "l4sip",
    )
    scanner_ban_after: int = 3
    scanner_ban_seconds: float = 3_600.0
    # Brute force.
    auth_fail_window: float = 60.0
    auth_fail_limit_per_ip: int = 10
    auth_fail_limit_per_user: int = 20
    auth_fail_ban_seconds: float = 1_800.0
    max_bans: int = 100_000
    allow_list: tuple[str, ...] = ()  # CIDR ranges never banned nor rate-limited


@dataclass(frozen=True, slots=True)
class ProxySettings:
    invite_timeout: float = 60.0  # timer C-like: ringing with no answer → 408
    max_call_seconds: float = 4 * 3_600.0
    max_active_calls: int = 10_000
    max_calls_global: int = 200  # concurrent calls, all users (toll-fraud limit)


@dataclass(frozen=True, slots=True)
class EventSettings:
    traffic_capacity: int = 20_000  # raw SIP messages kept for the UI
    feed_capacity: int = 5_000  # other events kept for the UI


@dataclass(frozen=True, slots=True)
class UiSettings:
    lock_after_seconds: float = 900.0
    refresh_hz: float = 8.0


@dataclass(frozen=True, slots=True)
class Settings:
    domain: str = "pbx.local"
    db_path: Path = Path("~/.local/share/pbxtui/pbxtui.db")
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "0.0.0.0", 5060),
        ListenAddress("tcp", "0.0.0.0", 5060),
    )
    user_agent: str = "pbxtui"
    transport: TransportSettings = field(default_factory=TransportSettings)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    events: EventSettings = field(default_factory=EventSettings)
    ui: UiSettings = field(default_factory=UiSettings)

    @property
    def realm(self) -> str:
        """The digest realm is the SIP domain, so HA1 depends on it (RFC 3261 §22.1)."""
        return self.domain
