"""One rule, one verdict: the carrier and ban rules, and the CLI and the console's admin API
giving the same answer for the same input (both on real SQLite files, the API on a running
Pbx).

The other rules are tested where they live: host[:port] in test_sip_uri.py, gateways in
test_trunks_gateways.py, DIDs in test_dialplan.py, user fields in test_users.py.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from core.pbx import Pbx
from core.security.bans import checked_ban
from core.sip.errors import SipParseError
from core.sip.hostport import parse_hostport
from core.store.database import Store
from core.trunks.carriers import new_carrier
from pbxtui.cli import main

# --- the carrier rule ---------------------------------------------------------------------


def test_a_new_carrier_in_its_stored_form() -> None:
    carrier = new_carrier(
        " acme ",
        ["192.0.2.7/24", "192.0.2.0/24", "2001:DB8::1"],
        gateway=" sip.acme.example ",
        username="",
        password="",
    )
    assert carrier.name == "acme"
    assert carrier.addresses == ("192.0.2.0/24", "2001:db8::1/128")
    assert carrier.gateway == "sip.acme.example"  # bare: SRV first (RFC 3263 §4.2)
    assert (carrier.username, carrier.password, carrier.port) == (None, None, 5060)
    # No port: the transport's default (RFC 3261 §19.1.2), 5061 for TLS.
    assert new_carrier("secure", ["192.0.2.1"], transport="tls").port == 5061
    assert new_carrier("secure", ["192.0.2.1"], transport="tls", port=5070).port == 5070
    assert new_carrier("v6", ["192.0.2.1"], gateway="2001:db8::5").gateway == "[2001:db8::5]"
    assert new_carrier("v6", ["192.0.2.1"], gateway="[2001:db8::5]:5070").gateway == (
        "[2001:db8::5]:5070"
    )


@pytest.mark.parametrize(
    ("name", "addresses", "options", "reason"),
    [
        ("", ["192.0.2.1"], {}, "carrier name is empty"),
        ("my carrier", ["192.0.2.1"], {}, "carrier name"),
        ("-rf", ["192.0.2.1"], {}, "carrier name"),
        ("acme\x1b[31m", ["192.0.2.1"], {}, "carrier name"),
        ("a" * 65, ["192.0.2.1"], {}, "carrier name"),
        ("acme", [], {}, "at least one address"),
        ("acme", ["example.com"], {}, "not an IP address"),
        ("acme", ["192.0.2.0/33"], {}, "prefix length"),
        ("acme", ["192.0.2.1"], {"gateway": "sip.acme.example>x"}, "gateway"),
        ("acme", ["192.0.2.1"], {"port": 0}, "port 0 must be 1-65535"),
        ("acme", ["192.0.2.1"], {"port": 65_536}, "port"),
        ("acme", ["192.0.2.1"], {"transport": "sctp"}, "transport must be udp, tcp or tls"),
        ("acme", ["192.0.2.1"], {"username": "trunk"}, "go together"),
        ("acme", ["192.0.2.1"], {"password": "secret"}, "go together"),
        ("acme", ["192.0.2.1"], {"priority": -1}, "priority"),
        ("acme", ["192.0.2.1"], {"priority": 70_000}, "priority"),
    ],
)
def test_bad_carriers_are_refused(
    name: str, addresses: list[str], options: dict[str, object], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        new_carrier(name, addresses, **options)  # type: ignore[arg-type]


# --- the ban rule -------------------------------------------------------------------------


def test_a_ban_in_canonical_form() -> None:
    assert checked_ban("2001:DB8::1", None) == ("2001:db8::1", None)
    assert checked_ban("[::ffff:192.0.2.9]", 60.0) == ("192.0.2.9", 60.0)  # as the route sees it


@pytest.mark.parametrize(
    ("ip", "seconds", "reason"),
    [
        ("203.0.113.0/24", None, "not an IP address"),
        ("example.com", None, "not an IP address"),
        ("", None, "not an IP address"),
        ("203.0.113.9", 0.0, "ban time"),
        ("203.0.113.9", -5.0, "ban time"),
        ("203.0.113.9", math.inf, "ban time"),
        ("203.0.113.9", math.nan, "ban time"),
    ],
)
def test_bad_bans_are_refused(ip: str, seconds: float | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        checked_ban(ip, seconds)


# --- host[:port] for listening sockets ----------------------------------------------------


def test_only_a_listening_socket_may_ask_for_port_0() -> None:
    assert parse_hostport("127.0.0.1:0", zero_port=True) == ("127.0.0.1", 0)
    with pytest.raises(SipParseError, match="Bad port"):
        parse_hostport("127.0.0.1:0")


# --- the same verdict from the CLI and the admin API --------------------------------------


CliRun = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`pbxtui --db cli.db ARGS...` in a thread (it runs its own event loop), on a database
    made by `pbxtui init`: exit status and its one error line (without the `pbxtui: error: `
    prefix), or "" on success."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "cli.db"
    assert main(["--db", str(db), "--domain", "pbx.test", "init"]) == 0

    async def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, ["--db", str(db), "--domain", "pbx.test", *args])
        errors = [
            line.removeprefix("pbxtui: error: ")
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("pbxtui: error: ")
        ]
        assert len(errors) == (0 if code == 0 else 1), errors
        return code, errors[0] if errors else ""

    run.db = db  # type: ignore[attr-defined]
    return run


async def admin_verdict(call: Awaitable[object]) -> str:
    try:
        await call
    except ValueError as error:
        return str(error)
    return ""


async def same_verdict(cli: CliRun, cli_args: list[str], admin_call: Awaitable[object]) -> str:
    """Both refuse with the same sentence (the CLI exiting 2), or both accept."""
    code, cli_error = await cli(*cli_args)
    admin_error = await admin_verdict(admin_call)
    assert cli_error == admin_error, (cli_args, cli_error, admin_error)
    assert code == (2 if admin_error else 0), (cli_args, code)
    return admin_error


CARRIER_CASES = [
    ("acme", ["192.0.2.7/24"], {}),
    ("acme", ["192.0.2.7"], {"gateway": "sip.acme.example"}),
    ("acme", ["192.0.2.7"], {"gateway": "2001:db8::5", "port": 5080, "priority": 0}),
    ("acme", ["192.0.2.7"], {"username": "trunk", "password": "pw"}),
    ("acme", ["192.0.2.7"], {"transport": "tls", "gateway": "sip.acme.example"}),  # port 5061
    ("my carrier", ["192.0.2.7"], {}),
    ("acme", ["192.0.2.300"], {}),
    ("acme", ["192.0.2.7/40"], {}),
    ("acme", ["192.0.2.7"], {"gateway": "host:99999"}),
    ("acme", ["192.0.2.7"], {"gateway": "evil>x"}),
    ("acme", ["192.0.2.7"], {"gateway": "a;lr"}),
    ("acme", ["192.0.2.7"], {"gateway": "[::1"}),
    ("acme", ["192.0.2.7"], {"port": 0}),
    ("acme", ["192.0.2.7"], {"username": "trunk"}),
    ("acme", ["192.0.2.7"], {"priority": -1}),
]


def carrier_cli_args(name: str, addresses: list[str], options: dict[str, object]) -> list[str]:
    args = ["carrier", "add", name]
    for address in addresses:
        args += ["--ip", address]
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return args


@pytest.mark.parametrize(("name", "addresses", "options"), CARRIER_CASES)
async def test_carriers_get_the_same_verdict(
    pbx: Pbx, cli: CliRun, name: str, addresses: list[str], options: dict[str, object]
) -> None:
    args = carrier_cli_args(name, addresses, options)
    error = await same_verdict(cli, args, pbx.admin.add_carrier(name, addresses, **options))  # type: ignore[arg-type]
    if not error:  # and the same row stored
        async with await Store.open(cli.db) as store:  # type: ignore[attr-defined]
            assert await store.list_carriers() == await pbx.admin.list_carriers()


@pytest.mark.parametrize(
    "number", ["+44 1632 960001", "01632-960001", "200", "call me", "0", "00", "1" * 21, "+"]
)
async def test_dids_get_the_same_verdict(pbx: Pbx, cli: CliRun, number: str) -> None:
    await cli("user", "add", "alice", "--password", "alice-secret-1")
    error = await same_verdict(
        cli, ["did", "add", number, "alice"], pbx.admin.add_did(number, "alice")
    )
    if not error:
        async with await Store.open(cli.db) as store:  # type: ignore[attr-defined]
            assert await store.list_dids() == await pbx.admin.list_dids()
        await same_verdict(cli, ["did", "del", number], pbx.admin.delete_did(number))


@pytest.mark.parametrize(
    ("ip", "seconds"),
    [
        ("203.0.113.9", None),
        ("2001:DB8::1", 60.0),
        ("203.0.113.0/24", None),
        ("example.com", None),
        ("203.0.113.9", 0.0),
        ("203.0.113.9", -1.0),
        ("203.0.113.9", math.inf),
    ],
)
async def test_bans_get_the_same_verdict(
    pbx: Pbx, cli: CliRun, ip: str, seconds: float | None
) -> None:
    args = ["ban", "add", ip] + ([] if seconds is None else ["--for", str(seconds)])
    await same_verdict(cli, args, pbx.admin.ban(ip, seconds))


@pytest.mark.parametrize(
    ("cli_options", "changes"),
    [
        (["--caller-id", "+441632960001"], {"caller_id": "+441632960001"}),
        (["--caller-id", "12ab"], {"caller_id": "12ab"}),
        (["--display-name", 'Eve "admin"'], {"display_name": 'Eve "admin"'}),
        (["--max-calls", "-1"], {"max_concurrent_calls": -1}),
        (
            ["--outbound", "national", "--max-calls-per-hour", "5"],
            {
                "outbound_policy": "national",
                "max_calls_per_hour": 5,
            },
        ),
    ],
)
async def test_user_changes_get_the_same_verdict(
    pbx: Pbx, cli: CliRun, cli_options: list[str], changes: dict[str, object]
) -> None:
    await cli("user", "add", "alice", "--password", "alice-secret-1")
    await same_verdict(
        cli, ["user", "set", "alice", *cli_options], pbx.admin.update_user("alice", **changes)
    )
