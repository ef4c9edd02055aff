"""What makes a carrier: the one validation of a new carrier, for the console and the CLI.

Both build a carrier only through `new_carrier`, so the same input gets the same verdict and
the same stored form whichever way an operator adds it. Errors are `ValueError`s with a
sentence that names the field first ("gateway ...", "port ...", "carrier name ..."), fit to
show under a form field or on one CLI error line.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.net.addresses import parse_network
from core.store.rows import CarrierRow
from core.trunks.gateways import SIP_PORT, SIPS_PORT, format_gateway, parse_gateway
from core.users import validate_name

CARRIER_TRANSPORTS = ("udp", "tcp", "tls")
MAX_PRIORITY = 65_535  # as in DNS SRV (RFC 2782), which the priority mirrors


def new_carrier(
    name: str,
    addresses: Iterable[str],
    *,
    gateway: str | None = None,
    port: int | None = None,
    transport: str = "udp",
    username: str | None = None,
    password: str | None = None,
    priority: int = 10,
) -> CarrierRow:
    """A checked carrier row, ready to store.

    The name follows the username rule (it is typed in shells and shown in logs). Addresses
    are networks (`ADDR[/PREFIX]`, host bits cleared, duplicates dropped). The gateway is
    stored as `parse_gateway` reads it, a bare host kept bare so calls look up SRV first;
    empty means inbound only. No port means the transport's default: 5061 for TLS, 5060
    otherwise (RFC 3261 §19.1.2). Credentials come as a pair or not at all (empty counts as
    not given: the console's blank fields).
    """
    name = name.strip()
    validate_name(name, "carrier name")
    networks = [str(parse_network(address)) for address in addresses]
    if not networks:
        raise ValueError("a carrier needs at least one address")
    stored_gateway = format_gateway(*parse_gateway(gateway)) if gateway else None
    if transport not in CARRIER_TRANSPORTS:
        *others, last = CARRIER_TRANSPORTS
        raise ValueError(f"transport must be {', '.join(others)} or {last}")
    if port is None:
        port = default_port(transport)
    if not 1 <= port <= 65_535:
        raise ValueError(f"port {port} must be 1-65535")
    if bool(username) != bool(password):
        raise ValueError("username and password go together")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority {priority} must be 0-{MAX_PRIORITY}")
    return CarrierRow(
        name=name,
        addresses=tuple(dict.fromkeys(networks)),
        port=port,
        transport=transport,
        gateway=stored_gateway,
        username=username or None,
        password=password or None,
        priority=priority,
    )


def default_port(transport: str) -> int:
    """A carrier's port when none is given: SIPS's 5061 over TLS, else 5060 (RFC 3261
    §19.1.2)."""
    return SIPS_PORT if transport == "tls" else SIP_PORT
