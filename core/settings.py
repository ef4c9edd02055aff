"""What the core needs to know to run, as plain frozen dataclasses.

The core never reads TOML or argv: `pbxtui/config.py` turns the config file and the CLI flags
into a `Settings`, and tests build one directly. Every default here is the documented default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """One socket to listen on: `udp:0.0.0.0:5060`, `tcp:[::]:5060`.

    `advertise_host` (and `advertise_port`, 0 for the listen port) is the address peers reach
    this socket by when it is not the socket's own: a cloud instance behind 1:1 NAT listens
    on its private address and is reached on its public one (Kamailio's `advertise`,
    Asterisk's `external_signaling_address`). It goes in Via and Record-Route.
    """

    transport: str  # "udp", "tcp" or "tls"
    host: str
    port: int
    advertise_host: str = ""
    advertise_port: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.transport}:{host}:{self.port}"
        if self.advertise_host:
            host = self.advertise_host
            text += f" advertise [{host}]" if ":" in host else f" advertise {host}"
            if self.advertise_port:
                text += f":{self.advertise_port}"
        return text

    @property
    def advertised(self) -> str:
        """`host:port` peers reach this socket by (IPv6 in brackets); the advertised address
        when there is one."""
        host = self.advertise_host or self.host
        port = self.advertise_port or self.port
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    max_message_bytes: int = 65_535  # a UDP datagram can't be larger; TCP messages get the same cap
    max_stream_buffer_bytes: int = 131_072  # per TCP connection, unparsed bytes
    tcp_idle_seconds: float = 300.0  # RFC 5626 keep-alives arrive well inside this
    max_tcp_connections: int = 4_096
    # One address: a phone needs one or two, a NATed office a few dozen; more is exhaustion.
    max_tcp_connections_per_source: int = 64
    udp_receive_buffer_bytes: int = 4 * 1024 * 1024  # absorbs event-loop stalls (UI redraws)
    udp_backlog_messages: int = 8_192  # datagrams read but not yet handled; more are dropped
    # Once the oldest waiting datagram has waited this long, requests that would start new
    # work (INVITE, REGISTER, OPTIONS ...) are dropped on arrival, so the responses, ACK,
    # CANCEL and BYE of the calls under way still get through before their senders'
    # retransmission timers (T1 = 0.5 s) double the load. 0 turns shedding off.
    udp_shed_after_seconds: float = 0.25


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """SIP over TLS (RFC 3261 §26.2.1; `core/net/tls.py` builds the contexts from these).

    `certificate` and `key` are PEM files; Let's Encrypt's fullchain.pem and privkey.pem work
    as they are. Both are read again when they change on disk (checked every
    `reload_check_seconds`) or on SIGHUP; a pair that does not load leaves the old one serving.
    """

    certificate: str = ""  # PEM, the server certificate followed by its chain
    key: str = ""  # PEM private key
    # Carriers' servers are verified against this CA bundle (PEM); empty: the system store.
    ca_file: str = ""
    # Presented to carriers that require mutual TLS; empty: none.
    client_certificate: str = ""
    client_key: str = ""
    # A connection that has not finished its handshake in this time is closed.
    handshake_timeout: float = 10.0
    # Handshakes under way at once, from one address and in all: half-open connections from
    # one source must not use up what every other phone needs.
    max_handshakes_per_source: int = 16
    max_handshakes: int = 512
    reload_check_seconds: float = 5.0
    # Refuse REGISTER and calls from users over UDP and TCP: every phone must use TLS.
    tls_only: bool = False
    # "CARRIER=NAME": requests from that carrier's addresses are trusted as the carrier only
    # over TLS with a client certificate (verified like a gateway's) naming NAME in its
    # subject CN or subjectAltName; otherwise they are treated as from anyone (digest).
    carrier_subjects: tuple[str, ...] = ()


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
    # Offered in this order (RFC 8760 §2.4). MD5 alone by default: clients that predate
    # RFC 8760 (Debian 12's baresip 1.0, sipsak, many desk phones) give up on the whole
    # challenge when any WWW-Authenticate names an algorithm they do not know, even when MD5
    # is offered beside it, whichever comes first. ("SHA-256", "MD5") is the opt-in for
    # fleets of phones that all handle it.
    algorithms: tuple[str, ...] = ("MD5",)
    max_tracked_nonces: int = 100_000  # last nonce-count per nonce, for replay checks; oldest go
    # Digest answers without qop (RFC 2069 / RFC 2617 §3.2.2.1 form) carry no nonce-count, so a
    # captured one replays for the nonce's lifetime. Refused unless this is on, for very old
    # phones; then each nonce answers one qop-less request only.
    allow_digest_without_qop: bool = False


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Defaults for `core.security.guard`; the reasoning behind each is in
    `core/security/flood.py` and
    `core/security/scanners.py`.

    The flood limits count every SIP message a source sends (requests and responses) in the
    window. A phone's normal chatter is a handful per minute: REGISTER every 60-3600 s (two
    requests with the digest round), an OPTIONS or CRLF keep-alive every 15-30 s, answers to
    our NAT pings, and a call's INVITE/ACK/BYE with their challenges, 5-8 messages over a few
    seconds. 60 in 2 s is several calls set up at once from one address that never logged in;
    a phone that has authenticated (and a whole office behind its NAT) gets 400, remembered for
    a day, so a burst of phones re-registering together after an outage is not mistaken for
    a flood. Scanners and floods run at hundreds to thousands a second and trip it at once.
    """

    # Flood detection (pike-like): messages per source in a sliding window.
    flood_window: float = 2.0
    flood_limit: int = 60  # ~30 msg/s sustained from one address that never authenticated
    flood_limit_authenticated: int = 400  # a NATed office re-registering after an outage
    flood_limit_carrier: int = 1_000
    flood_ban_seconds: float = 600.0
    max_tracked_sources: int = 100_000  # per-IP state cap; least recently seen evicted first
    # A source that passed digest auth keeps the higher limit this long (a day outlasts the
    # longest registration interval and an overnight outage) and this many such sources.
    authenticated_memory_seconds: float = 86_400.0
    max_authenticated_sources: int = 20_000
    # Scanners: case-insensitive, matched as whole words in User-Agent and in the From
    # display name / user (svmap, svwar and svcrack send `From: "sipvicious"<sip:100@...>`).
    # Left out on purpose: "sipsak" (monitoring probes such as check_sip use it), "cirpack"
    # (a carrier softswitch vendor), "exec" (matches ordinary product names).
    scanner_user_agents: tuple[str, ...] = (
        "friendly-scanner",
        "friendly-request",
        "sipvicious",
        "sip-vicious",
        "sipcli",
        "sip-scan",
        "vaxsipuseragent",
        "vaxipuseragent",
        "pplsip",
        "sundayddr",
        "iwar",
        "sivus",
        "sipptk",
        "siparmyknife",
        "smap",
        "nessus",
        "voiper",
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
    # IPv6 sources are counted and banned per prefix of this length (a host holds a /64 and
    # can rotate inside it); 128 counts single addresses.
    ipv6_prefix_length: int = 64
    # Repeated drops (from a banned source, a scanner, bad requests) are counted and published
    # at most once per source and kind per interval; at most this many such reports a second
    # overall, the rest summed into one warning, so a spoofed flood cannot flood the feed/log.
    report_interval: float = 5.0
    max_reports_per_second: int = 50


@dataclass(frozen=True, slots=True)
class ProxySettings:
    invite_timeout: float = 60.0  # timer C-like: ringing with no answer → 408
    max_call_seconds: float = 4 * 3_600.0
    max_active_calls: int = 10_000
    max_calls_global: int = 200  # concurrent calls, all users (toll-fraud limit)
    # Live SIP transactions (core/sip/transaction_table.py). Over UDP a finished INVITE's
    # transactions linger 32 s (RFC 6026 timers L/M) and a BYE's too (timer J), so a call
    # holds three or four for half a minute: 131,072 carries about 1,000 call setups/s.
    max_transactions: int = 131_072


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """Media anchoring (core/media/): when calls' RTP goes through us, and with what."""

    relay: str = "auto"  # "auto": calls with a NATed phone; "always"; "never"
    engine: str = "embedded"  # "embedded" (in-process) or "rtpengine"
    rtpengine: str = "127.0.0.1:2223"  # rtpengine's ng control address, HOST:PORT
    address: str = ""  # the relay's bind address; "": the first SIP listen address
    port_min: int = 30_000
    port_max: int = 40_000  # 4 ports per relayed audio stream: 2,500 calls
    max_sessions: int = 2_000
    latch_seconds: float = 3.0  # after each offer/answer, the source of RTP may be learnt
    timeout_seconds: float = 60.0  # no RTP either way this long: the call is hung up
    hold_timeout_seconds: float = 3_600.0  # the same while a stream is on hold


@dataclass(frozen=True, slots=True)
class EventSettings:
    traffic_capacity: int = 20_000  # raw SIP messages kept for the UI
    feed_capacity: int = 5_000  # other events kept for the UI


@dataclass(frozen=True, slots=True)
class UiSettings:
    lock_after_seconds: float = 900.0
    refresh_hz: float = 8.0
    # The Traffic pane's history: the oldest dialog (or a dialog's oldest message) goes first.
    traffic_dialogs: int = 2_000
    traffic_messages_per_dialog: int = 200
    # Messages decoded per refresh; past that the newest are kept and the rest counted as missed.
    traffic_per_refresh: int = 2_000
    max_table_rows: int = 1_000  # rows any live table shows (the newest)


@dataclass(frozen=True, slots=True)
class DialplanSettings:
    """How numbers are written here, so DIDs and dialled numbers compare in one canonical form
    (see `core.trunks.dialplan.Dialplan.did_number`)."""

    country_code: str = ""  # e.g. "44"; empty: national numbers are kept as dialled
    national_prefix: str = "0"  # trunk prefix dialled before a national number
    international_prefix: str = "00"  # dialled before a country code (as well as "+")


@dataclass(frozen=True, slots=True)
class AccountingSettings:
    """Call cost, spend limits and CDR retention (core/accounting). Amounts are text in the
    currency's main unit ("25.00"), read exactly (no float money); "" means no limit."""

    currency: str = "EUR"  # of rate tables imported without --currency
    keep_days: int = 400  # CDRs older than this are deleted, a small batch at a time; 0 keeps all
    day_limit: str = ""  # the PBX in all, per UTC day
    month_limit: str = ""  # the PBX in all, per calendar month (UTC)
    user_day_limit: str = ""  # each user without a limit of their own (`pbxtui user spend`)
    user_month_limit: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    domain: str = "pbx.local"
    db_path: Path = Path("~/.local/share/pbxtui/pbxtui.db")
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "0.0.0.0", 5060),
        ListenAddress("tcp", "0.0.0.0", 5060),
    )
    user_agent: str = "pbxtui"
    # Worker processes that serve SIP over UDP beside the main process (core/cluster/changes.py);
    # 0: one process does everything.
    workers: int = 0
    log_level: str = "info"  # the service's log: debug, info, warning or error (SIGHUP reloads)
    # A group whose members may use the service's control socket besides its own user and
    # root (core/control/peers.py); empty: nobody else.
    control_group: str = ""
    transport: TransportSettings = field(default_factory=TransportSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    events: EventSettings = field(default_factory=EventSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    dialplan: DialplanSettings = field(default_factory=DialplanSettings)
    accounting: AccountingSettings = field(default_factory=AccountingSettings)

    @property
    def realm(self) -> str:
        """The digest realm is the SIP domain, so HA1 depends on it (RFC 3261 §22.1)."""
        return self.domain
