"""What to type into a phone for one SIP account, field by field.

Phones name the same things differently (Linphone's "SIP server address", Zoiper's
"Domain" and "Outbound proxy", a desk phone's "Registrar" and "Auth ID"), and a first-run
domain such as `pbx.local` resolves nowhere. So the server is given as an address the phone
can reach: a listener's advertised address (1:1 NAT), else a specific listen address, else
this host's primary address. The route accepts requests for that address as for the domain
(Kamailio's `myself`, core/net/identity.py), so the phone needs no outbound proxy. The realm
is the domain: phones learn it from the challenge, a few ask for it.

`user add` (the CLI) and the console's credentials screen both print these rows.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from core.settings import ListenAddress

_WILDCARDS = ("0.0.0.0", "::")
_TRANSPORT_ORDER = ["TLS", "UDP", "TCP"]  # as the Transport row names them
# RFC 5737 TEST-NET-2: only the routing table is asked which source address would reach it;
# connect() on a UDP socket sends nothing.
_ROUTE_PROBE = "198.51.100.1"


@dataclass(frozen=True, slots=True)
class PhoneSettings:
    """The fields of a phone's SIP account screen."""

    server: str  # host a phone registers at: address or name
    ports: tuple[tuple[str, int], ...]  # (transport, port) pairs, in listen order
    username: str
    password: str
    realm: str
    tls_required: bool = False  # a "TLS only" user: refused over UDP and TCP

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows, in the order phones ask for them.

        With a TLS listener (the server has a certificate) its port comes first and the phone
        is told to use TLS: the password and every call's signalling are then encrypted on the
        way (RFC 3261 §26.2.1). For a TLS-only user only the TLS port is given, and the phone
        is told TLS is required (or that the server cannot serve this account yet)."""
        # A stable sort: TLS first, the others in listen order.
        ports = sorted(self.ports, key=lambda pair: pair[0] != "tls")
        if self.tls_required and ports[:1] and ports[0][0] == "tls":
            ports = [pair for pair in ports if pair[0] == "tls"]
        by_port: dict[int, list[str]] = {}
        for transport, port in ports:
            by_port.setdefault(port, []).append(transport.upper())
        port_text = ", ".join(f"{port} ({' or '.join(t)})" for port, t in by_port.items())
        transports = sorted({t.upper() for t, _ in ports}, key=_TRANSPORT_ORDER.index)
        transport_text = " or ".join(transports) or "UDP"
        if transports[:1] == ["TLS"]:
            transport_text = "TLS: set the phone to TLS"
            others = " or ".join(transports[1:])
            if self.tls_required:
                transport_text += " (required: UDP and TCP are refused for this account)"
            elif others:
                transport_text += f" ({others} also work)"
        elif self.tls_required:
            transport_text = (
                "TLS required for this account, but the server has no TLS listener: "
                "the phone cannot register until one is set up ([tls])"
            )
        return [
            ("SIP server / Domain", self.server),
            ("Port", port_text or "5060"),
            ("Transport", transport_text),
            ("Username / Auth ID", self.username),
            ("Password", self.password),
            ("Realm", f"{self.realm} (phones learn it from the server)"),
            ("Outbound proxy", "none"),
        ]

    def text(self) -> str:
        return "\n".join(f"{label:<20} {value}" for label, value in self.rows())


def phone_settings(
    username: str,
    password: str,
    realm: str,
    listening: Sequence[ListenAddress],
    *,
    tls_required: bool = False,
) -> PhoneSettings:
    """The account fields for `username` on a server listening on `listening`;
    `tls_required` for a user who is "TLS only" (or a server with `[tls] tls_only`)."""
    return PhoneSettings(
        server=server_host(listening),
        ports=tuple(dict.fromkeys((a.transport, a.advertise_port or a.port) for a in listening)),
        username=username,
        password=password,
        realm=realm,
        tls_required=tls_required,
    )


def server_host(listening: Sequence[ListenAddress]) -> str:
    """The host a phone should register at (IPv6 in brackets)."""
    host = ""
    for address in listening:
        if address.advertise_host:
            host = address.advertise_host
            break
    if not host:
        specific = [a.host for a in listening if a.host not in _WILDCARDS]
        host = specific[0] if specific else primary_address()
    return f"[{host}]" if ":" in host else host


def primary_address() -> str:
    """The address this host sends from by default (the routing table's answer), else its
    host name."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((_ROUTE_PROBE, 9))
        return str(probe.getsockname()[0])
    return socket.gethostname()
