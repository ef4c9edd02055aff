"""Every `pbxtui` management command through `main([...])`, on a real SQLite file."""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import DOMAIN, Cli, CliResult

from core.store.database import Store
from core.store.rows import CdrRow
from core.trunks.gateways import gateway_of
from core.users import check_admin_password, compute_ha1
from pbxtui.cli import main

T = TypeVar("T")


def read_store(db: Path, query: Callable[[Store], Awaitable[T]]) -> T:
    """Open the file the CLI wrote, as the server would, and ask it something."""

    async def go() -> T:
        async with await Store.open(db) as store:
            return await query(store)

    return asyncio.run(go())


def assert_usage_error(result: CliResult, *fragments: str) -> None:
    """Exit 2 with exactly one `pbxtui: error:` line and no traceback."""
    assert result.code == 2, result
    error_lines = [line for line in result.err.splitlines() if line.startswith("pbxtui: error:")]
    assert len(error_lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def answer_prompts(monkeypatch: pytest.MonkeyPatch, *answers: str) -> None:
    replies = iter(answers)
    monkeypatch.setattr("sys.stdin", Tty())
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(replies))


# --- users --------------------------------------------------------------------------------


def test_user_add_stores_ha1_for_the_domain(cli: Cli, db: Path) -> None:
    result = cli("user", "add", "alice", "--password", "alice-secret-1")
    assert (result.code, result.out.splitlines()[0]) == (0, "added user alice")
    user = read_store(db, lambda s: s.get_user("alice"))
    assert user.realm == DOMAIN
    assert user.ha1_md5 == compute_ha1("alice", DOMAIN, "alice-secret-1", "MD5")
    assert user.ha1_sha256 == compute_ha1("alice", DOMAIN, "alice-secret-1", "SHA-256")
    assert read_store(db, lambda s: s.get_setting("realm")) == DOMAIN


def test_user_add_prints_what_to_type_into_the_phone(cli: Cli) -> None:
    result = cli(
        "--listen",
        "udp:10.0.0.5:5060",
        "--listen",
        "tcp:10.0.0.5:5060",
        "--advertise",
        "203.0.113.10",
        "user",
        "add",
        "dave",
        "--password",
        "dave-secret-1",
    )
    assert result.code == 0, result
    fields = result.out.split("In the phone's SIP account:\n")[1]
    assert fields.splitlines() == [
        "SIP server / Domain  203.0.113.10",
        "Port                 5060 (UDP or TCP)",
        "Transport            UDP or TCP",
        "Username / Auth ID   dave",
        "Password             (the one you set)",
        f"Realm                {DOMAIN} (phones learn it from the server)",
        "Outbound proxy       none",
    ]
    assert "dave-secret-1" not in result.out  # never echoed back
    plain = cli("--listen", "udp:127.0.0.1:5070", "user", "add", "erin", "--password", "x" * 12)
    assert "SIP server / Domain  127.0.0.1\nPort                 5070 (UDP)\n" in plain.out


def test_user_add_generate_prints_the_password_once(cli: Cli, db: Path) -> None:
    result = cli("user", "add", "bob", "--generate", "--outbound", "national")
    assert result.code == 0
    password = result.out.splitlines()[1].removeprefix("password: ")
    assert len(password) == 20
    assert f"Password             {password}\n" in result.out  # the phone's account fields
    user = read_store(db, lambda s: s.get_user("bob"))
    assert user.ha1_md5 == compute_ha1("bob", DOMAIN, password)
    assert user.outbound_policy == "national"


def test_user_add_prompts_twice_when_interactive(
    cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer_prompts(monkeypatch, "typed-secret", "typed-secret")
    assert cli("user", "add", "carol").code == 0
    user = read_store(db, lambda s: s.get_user("carol"))
    assert user.ha1_md5 == compute_ha1("carol", DOMAIN, "typed-secret")
    answer_prompts(monkeypatch, "one-secret", "another")
    assert_usage_error(cli("user", "add", "dave"), "do not match")


def test_short_password_is_accepted_with_a_warning(cli: Cli) -> None:
    result = cli("user", "add", "alice", "--password", "1234")
    assert result.code == 0
    assert "warning" in result.err and "--generate" in result.err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["user", "add", "bad!name", "--password", "pw-pw-pw"], "contains '!'"),
        (["user", "add", ".hidden", "--password", "pw-pw-pw"], "must start with"),
        (["user", "add", "x" * 65, "--password", "pw-pw-pw"], "longer than 64"),
        (["user", "add", "alice"], "no password given"),
        (["user", "add", "alice", "--password", ""], "password is empty"),
        (["user", "add", "alice", "--password", "pw", "--caller-id", "abc"], "caller ID"),
        (["user", "add", "alice", "--password", "pw", "--max-calls", "-1"], "call limits"),
        (["user", "del", "ghost"], "no user 'ghost'"),
        (["user", "passwd", "ghost", "--password", "pw-pw-pw"], "no user 'ghost'"),
        (["user", "set", "ghost", "--disable"], "no user 'ghost'"),
    ],
)
def test_user_errors(cli: Cli, args: list[str], fragment: str) -> None:
    assert_usage_error(cli(*args), fragment)


def test_duplicate_user(cli: Cli) -> None:
    cli("user", "add", "alice", "--password", "alice-secret-1")
    assert_usage_error(cli("user", "add", "alice", "--password", "other-pass"), "already exists")


def test_argparse_usage_errors_exit_2(cli: Cli) -> None:
    result = cli("user", "add", "alice", "--password", "pw", "--generate")
    assert result.code == 2 and "not allowed with" in result.err
    assert cli("user").code == 2
    assert cli("frobnicate").code == 2
    assert cli("--headless", "user", "list").code == 2
    bad_workers = cli("--headless", "--workers", "lots")
    assert bad_workers.code == 2
    assert "error: --workers: expected 0-64 or \"auto\", got 'lots'" in bad_workers.err


def test_user_list_is_aligned(cli: Cli, db: Path) -> None:
    assert cli("user", "list").out == "no users\n"
    cli("user", "add", "alice", "--password", "alice-secret-1", "--display-name", "Alice A")
    cli("user", "add", "bob-the-builder", "--password", "bob-secret-22", "--max-calls", "2")
    cli("did", "add", "+44 1632 960001", "alice")
    result = cli("user", "list")
    assert result.code == 0 and result.err.splitlines() == [f"pbxtui: database {db}"]
    header, alice, bob = result.out.splitlines()
    assert header.split() == [
        "USER",
        "NAME",
        "ENABLED",
        "OUTBOUND",
        "CALLER",
        "ID",
        "LIMITS",
        "TLS",
        "ONLY",
        "DIDS",
        "CREATED",
    ]
    assert alice.startswith("alice            Alice A")
    assert "441632960001" in alice
    assert bob.startswith("bob-the-builder  -")
    assert "2 calls" in bob
    assert header.index("NAME") == alice.index("Alice A") == bob.index("-  ")


def test_changing_the_domain_warns_until_passwords_are_reset(cli: Cli, db: Path) -> None:
    cli("user", "add", "alice", "--password", "alice-secret-1")
    result = cli("user", "list", domain="new.example")
    assert result.code == 0
    assert "warning" in result.err and "'pbx.test'" in result.err and "reset" in result.err
    assert "needs new password" in result.out
    assert (
        cli("user", "passwd", "alice", "--password", "alice-secret-2", domain="new.example").code
        == 0
    )
    assert "warning" not in cli("user", "list", domain="new.example").err
    user = read_store(db, lambda s: s.get_user("alice"))
    assert user.ha1_md5 == compute_ha1("alice", "new.example", "alice-secret-2")


def test_user_passwd_and_set_and_del(cli: Cli, db: Path) -> None:
    cli("user", "add", "alice", "--password", "alice-secret-1")
    cli("did", "add", "200", "alice")
    assert cli("user", "passwd", "alice", "--generate").code == 0
    result = cli(
        "user", "set", "alice", "--disable", "--outbound", "local", "--caller-id", "+441632"
    )
    assert (result.code, result.out) == (0, "updated user alice\n")
    user = read_store(db, lambda s: s.get_user("alice"))
    assert (user.enabled, user.outbound_policy, user.caller_id) == (False, "local", "+441632")
    assert_usage_error(cli("user", "set", "alice"), "nothing to change")
    result = cli("user", "del", "alice")
    assert (result.code, result.out) == (0, "deleted user alice and its DIDs 200\n")
    assert read_store(db, lambda s: s.list_dids()) == []


def test_user_tls_only_is_set_by_add_and_changed_by_set(cli: Cli, db: Path) -> None:
    def tls_only(name: str) -> bool:
        user = read_store(db, lambda s: s.get_user(name))
        assert user is not None
        return user.tls_only

    result = cli(
        "--listen", "udp:10.0.0.5:5060", "--listen", "tls:10.0.0.5:5061",
        "user", "add", "alice", "--password", "alice-secret-1", "--tls-only",
    )  # fmt: skip
    assert result.code == 0, result
    assert tls_only("alice")
    fields = result.out.split("In the phone's SIP account:\n")[1]
    assert "Port                 5061 (TLS)\n" in fields
    assert "required: UDP and TCP are refused" in fields
    assert cli("user", "add", "bob", "--password", "bob-secret-22").code == 0
    assert not tls_only("bob")
    listing = cli("user", "list").out.splitlines()
    column = listing[0].index("TLS ONLY")
    assert [line[column : column + 3] for line in listing[1:]] == ["yes", "-  "]

    assert cli("user", "set", "alice", "--no-tls-only").out == "updated user alice\n"
    assert not tls_only("alice")
    assert cli("user", "set", "bob", "--tls-only").code == 0
    assert tls_only("bob")


@pytest.mark.parametrize(
    "args",
    [
        ["user", "set", "alice", "--tls-only", "--no-tls-only"],
        ["user", "set", "alice", "--tls-only=yes"],
        ["user", "add", "carol", "--password", "carol-secret-3", "--no-tls-only"],
        ["user", "add", "carol", "--password", "carol-secret-3", "--tls-only", "1"],
    ],
)
def test_user_tls_only_bad_arguments_exit_2(cli: Cli, db: Path, args: list[str]) -> None:
    assert cli("user", "add", "alice", "--password", "alice-secret-1").code == 0
    result = cli(*args)
    assert result.code == 2 and "Traceback" not in result.err
    assert "usage:" in result.err
    users = read_store(db, lambda s: s.list_users())
    assert [(u.username, u.tls_only) for u in users] == [("alice", False)]


# --- user import --------------------------------------------------------------------------


def test_import_with_header_blank_lines_and_bom(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text(
        '\ufeffusername,password\n100,pw-100-secret\n\n101,"pw,with,commas",Front Desk\n',
        encoding="utf-8",
    )
    result = cli("user", "import", str(path))
    assert (result.code, result.out) == (0, f"imported 2 users from {path}\n")
    users = {u.username: u for u in read_store(db, lambda s: s.list_users())}
    assert users["101"].ha1_md5 == compute_ha1("101", DOMAIN, "pw,with,commas")
    assert users["101"].display_name == "Front Desk"


def test_import_reports_every_bad_row_and_imports_nothing(
    cli: Cli, db: Path, tmp_path: Path
) -> None:
    cli("user", "add", "taken", "--password", "taken-secret")
    path = tmp_path / "users.csv"
    path.write_text(
        "good1,pw-good-1\n"  # 1
        "bad name,pw\n"  # 2
        "good2,\n"  # 3
        "taken,pw-pw-pw\n"  # 4
        "good1,again\n"  # 5
        "only-one-column\n"  # 6
        "good3,pw-good-3\n",  # 7
        encoding="utf-8",
    )
    result = cli("user", "import", str(path))
    assert_usage_error(result, "5 bad row(s)", "nothing imported")
    reported = [line for line in result.err.splitlines() if not line.startswith("pbxtui:")]
    assert reported == [
        f"{path}:2: username 'bad name' contains ' '; use only letters, digits, '.', '-' and '_'",
        f"{path}:3: password is empty",
        f"{path}:4: user 'taken' already exists",
        f"{path}:5: 'good1' is also on line 1",
        f"{path}:6: expected username,password[,display name], got 1 columns",
    ]
    assert [u.username for u in read_store(db, lambda s: s.list_users())] == ["taken"]


def test_import_thousands_of_users_quickly(cli: Cli, db: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["username", "password"])
        writer.writerows([f"ext{i}", f"secret-{i:05d}"] for i in range(3000))
    started = time.perf_counter()
    result = cli("user", "import", str(path))
    assert result.code == 0
    assert time.perf_counter() - started < 10
    assert len(read_store(db, lambda s: s.list_users())) == 3000


def test_import_file_problems(cli: Cli, tmp_path: Path) -> None:
    assert_usage_error(cli("user", "import", str(tmp_path / "nope.csv")), "no such file")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("jos\xe9,pw\n".encode("latin-1"))
    assert_usage_error(cli("user", "import", str(latin1)), "not UTF-8")
    empty = tmp_path / "empty.csv"
    empty.write_text("username,password\n", encoding="utf-8")
    assert_usage_error(cli("user", "import", str(empty)), "no users")


# --- carriers -----------------------------------------------------------------------------


def test_carrier_add_list_del(cli: Cli, db: Path) -> None:
    result = cli(
        "carrier", "add", "telco",
        "--ip", "192.0.2.7/24", "--ip", "198.51.100.1", "--ip", "2001:db8::/32",
        "--gateway", "sip.telco.example:5061", "--username", "acct", "--password", "hunter2",
        "--priority", "5", "--transport", "tcp",
    )  # fmt: skip
    assert result.code == 0, result
    carrier = read_store(db, lambda s: s.get_carrier("telco"))
    assert carrier.addresses == ("192.0.2.0/24", "198.51.100.1/32", "2001:db8::/32")
    assert (carrier.gateway, carrier.password, carrier.transport) == (
        "sip.telco.example:5061",
        "hunter2",
        "tcp",
    )
    cli("carrier", "add", "backup", "--ip", "203.0.113.10", "--gateway", "[2001:db8::5]")
    listing = cli("carrier", "list")
    assert "hunter2" not in listing.out
    lines = listing.out.splitlines()
    assert lines[0].split()[:3] == ["CARRIER", "ADDRESSES", "PORT"]
    assert lines[1].startswith("telco ") and "acct" in lines[1]
    assert "[2001:db8::5]  " in lines[2]  # stored as typed: no port added
    assert cli("carrier", "del", "telco").out == "deleted carrier telco\n"
    assert_usage_error(cli("carrier", "del", "telco"), "no carrier 'telco'")
    assert cli("carrier", "del", "backup").code == 0
    assert cli("carrier", "list").out == "no carriers\n"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--ip", "192.0.2.300"], "not an IP address"),
        (["--ip", "192.0.2.0/33"], "prefix length"),
        (["--ip", "10.0.0.1", "--port", "70000"], "port 70000 must be 1-65535"),
        (["--ip", "10.0.0.1", "--username", "only"], "go together"),
        (["--ip", "10.0.0.1", "--gateway", "host:99999"], "gateway 'host:99999'"),
        (["--ip", "10.0.0.1", "--gateway", "bad host:5060"], "gateway 'bad host:5060'"),
        (["--ip", "10.0.0.1", "--gateway", "[::1"], "gateway '[::1'"),
        (["--ip", "10.0.0.1", "--gateway", "sip.example>x"], "gateway 'sip.example>x'"),
        (["--ip", "10.0.0.1", "--priority", "-1"], "priority -1"),
    ],
)
def test_carrier_errors(cli: Cli, extra: list[str], fragment: str) -> None:
    assert_usage_error(cli("carrier", "add", "telco", *extra), fragment)


def test_a_gateway_without_a_port_stays_bare_so_calls_look_up_srv(cli: Cli, db: Path) -> None:
    """RFC 3263 §4.2: only a host without a port is looked up as SRV first."""
    assert (
        cli("carrier", "add", "acme", "--ip", "192.0.2.1", "--gateway", " sip.acme.example ").code
        == 0
    )
    carrier = read_store(db, lambda s: s.get_carrier("acme"))
    assert carrier.gateway == "sip.acme.example"
    gateway = gateway_of(carrier)
    assert gateway is not None and gateway.srv_name == "_sip._udp.sip.acme.example"


def test_carrier_name_rule_and_duplicates(cli: Cli) -> None:
    assert_usage_error(cli("carrier", "add", "my carrier", "--ip", "10.0.0.1"), "carrier name")
    cli("carrier", "add", "telco", "--ip", "10.0.0.1")
    assert_usage_error(cli("carrier", "add", "telco", "--ip", "10.0.0.2"), "already exists")


# --- DIDs ---------------------------------------------------------------------------------


def test_did_add_list_del(cli: Cli) -> None:
    cli("user", "add", "alice", "--password", "alice-secret-1")
    assert cli("did", "list").out == "no DIDs\n"
    assert cli("did", "add", "+44 1632 960001", "alice").out == "DID 441632960001 -> alice\n"
    assert cli("did", "list").out.splitlines() == ["NUMBER        USER", "441632960001  alice"]
    assert_usage_error(cli("did", "add", "0044-1632-960001", "alice"), "already routed")
    assert cli("did", "del", "00441632960001").out == "deleted DID 441632960001\n"
    assert_usage_error(cli("did", "del", "00441632960001"), "no DID 441632960001")


def test_did_errors(cli: Cli) -> None:
    assert_usage_error(cli("did", "add", "12345", "ghost"), "no user 'ghost'")
    assert_usage_error(cli("did", "add", "call-me", "ghost"), "not a telephone number")


# --- bans ---------------------------------------------------------------------------------


def test_ban_add_list_del(cli: Cli, db: Path) -> None:
    assert cli("ban", "list").out == "no bans\n"
    assert cli("ban", "add", "203.0.113.9", "--for", "600", "--reason", "scanner").code == 0
    assert cli("ban", "add", "2001:DB8::1").out == "banned 2001:db8::1 forever\n"
    cli("ban", "add", "203.0.113.9", "--for", "60")
    bans = {b.ip: b for b in read_store(db, lambda s: s.list_bans())}
    assert bans["203.0.113.9"].count == 2
    assert bans["2001:db8::1"].until is None
    listing = cli("ban", "list").out.splitlines()
    assert listing[0].split() == ["IP", "UNTIL", "LEFT", "COUNT", "SINCE", "REASON"]
    assert any(line.startswith("2001:db8::1  forever") for line in listing)
    assert cli("ban", "del", "203.0.113.9").out == "unbanned 203.0.113.9\n"
    assert_usage_error(cli("ban", "del", "203.0.113.9"), "not banned")


def test_ban_errors(cli: Cli) -> None:
    assert_usage_error(cli("ban", "add", "203.0.113.0/24"), "not an IP address")
    assert_usage_error(cli("ban", "add", "example.com"), "not an IP address")
    assert_usage_error(cli("ban", "add", "203.0.113.9", "--for", "0"), "ban time")
    assert_usage_error(cli("ban", "add", "203.0.113.9", "--for", "inf"), "ban time")
    assert_usage_error(cli("ban", "add", "203.0.113.9", "--for", "nan"), "ban time")
    assert_usage_error(cli("ban", "del", "nonsense"), "not an IP address")


# --- CDRs ---------------------------------------------------------------------------------


def _seed_cdrs(db: Path) -> None:
    async def go() -> None:
        async with await Store.open(db) as store:
            await store.insert_cdr(
                CdrRow("c1", "alice", "bob", "192.0.2.10", "internal", 1_700_000_000.0,
                       1_700_000_002.0, 1_700_000_065.0, 200, "", 63.0)
            )  # fmt: skip
            await store.insert_cdr(
                CdrRow("c2", '=HYPERLINK("http://evil")', "+441632960001", "203.0.113.5",
                       "inbound", 1_700_000_100.0, None, 1_700_000_110.0, 486, "Busy Here")
            )  # fmt: skip

    asyncio.run(go())


def test_cdr_list(cli: Cli, db: Path) -> None:
    assert cli("cdr", "list").out == "no calls\n"
    _seed_cdrs(db)
    lines = cli("cdr", "list").out.splitlines()
    assert lines[0].split()[:4] == ["ID", "STARTED", "DIRECTION", "FROM"]
    assert lines[1].startswith("2 ") and "486" in lines[1] and "Busy Here" in lines[1]
    assert "1:03" in lines[2]
    assert len(cli("cdr", "list", "--limit", "1").out.splitlines()) == 2
    assert_usage_error(cli("cdr", "list", "--limit", "0"), "--limit")


def test_cdr_export_csv(cli: Cli, db: Path, tmp_path: Path) -> None:
    _seed_cdrs(db)
    target = tmp_path / "cdrs.csv"
    result = cli("cdr", "export", "--csv", str(target))
    assert (result.code, result.out) == (0, f"exported 2 call records to {target}\n")
    with target.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["call_id"] for row in rows] == ["c1", "c2"]
    assert rows[0]["started_at"] == "2023-11-14T22:13:20.000+00:00"
    assert rows[0]["duration"] == "63.000"
    assert rows[1]["answered_at"] == ""
    assert rows[1]["caller"].startswith("'=")  # no live formula for spreadsheets
    assert rows[1]["callee"] == "+441632960001"  # numbers untouched
    to_stdout = cli("cdr", "export", "--csv", "-")
    assert to_stdout.out.startswith("id,call_id,caller")
    assert_usage_error(cli("cdr", "export", "--csv", str(tmp_path / "no" / "dir.csv")), "dir.csv")


# --- admin --------------------------------------------------------------------------------


def test_admin_passwd(cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_usage_error(cli("admin", "passwd"), "no password given")
    assert_usage_error(cli("admin", "passwd", "--password", "short"), "8+ characters")
    answer_prompts(monkeypatch, "console-one", "console-two")
    assert_usage_error(cli("admin", "passwd"), "do not match")
    result = cli("admin", "passwd", "--password", "console-pass")
    assert (result.code, result.out) == (0, "console password set\n")
    stored = read_store(db, lambda s: s.get_admin_hash())
    assert stored.startswith("$2b$12$")
    assert check_admin_password("console-pass", stored)


# --- global options -----------------------------------------------------------------------


def test_global_options_work_after_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other.db"
    assert main(["init", "--db", str(other)]) == 0
    assert main(["user", "add", "alice", "--password", "pw-pw-pw", "--db", str(other)]) == 0
    assert read_store(other, lambda s: s.get_user("alice")).username == "alice"


@pytest.fixture
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and working directory, no XDG or PBXTUI_CONFIG variables set."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "PBXTUI_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_management_command_never_creates_a_database(
    clean_environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `sudo pbxtui user add` with root's home: the service's database is elsewhere, so an
    # empty new one here would take the user and the phone would never register.
    default = clean_environment / "home/.local/share/pbxtui/pbxtui.db"
    assert main(["user", "add", "alice", "--password", "pw-pw-pw-pw"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"pbxtui: database {default}"
    assert f"pbxtui: error: no database at {default}" in err and "pbxtui init" in err
    assert not default.exists() and not default.parent.exists()
    assert main(["init"]) == 0
    assert capsys.readouterr().out == f"database ready: {default}\n"
    assert main(["user", "list"]) == 0
    assert default.exists()


def test_xdg_directories_and_the_config_variable(
    clean_environment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = clean_environment / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    assert main(["init"]) == 0
    assert (data / "pbxtui/pbxtui.db").exists()
    config_home = clean_environment / "xdg-config"
    (config_home / "pbxtui").mkdir(parents=True)
    (config_home / "pbxtui/pbxtui.toml").write_text("[server]\ndb = 'xdg.db'\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    assert main(["init"]) == 0
    assert (config_home / "pbxtui/xdg.db").exists()
    service = clean_environment / "service.toml"
    service.write_text(f"[server]\ndb = '{clean_environment / 'service.db'}'\n")
    monkeypatch.setenv("PBXTUI_CONFIG", str(service))
    assert main(["init"]) == 0
    assert (clean_environment / "service.db").exists()
    capsys.readouterr()
    monkeypatch.setenv("PBXTUI_CONFIG", str(clean_environment / "missing.toml"))
    assert main(["user", "list"]) == 2
    assert "missing.toml: config file not found" in capsys.readouterr().err


def test_default_database_lives_in_the_home_directory(
    clean_environment: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init"]) == 0
    assert main(["user", "list"]) == 0
    assert (clean_environment / "home/.local/share/pbxtui/pbxtui.db").exists()


def test_config_file_and_its_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pbxtui.toml").write_text("[server]\ndb = 'from-config.db'\n", encoding="utf-8")
    assert main(["init"]) == 0
    assert main(["user", "list"]) == 0
    assert (tmp_path / "from-config.db").exists()
    capsys.readouterr()
    (tmp_path / "pbxtui.toml").write_text("[security]\nflood_limt = 1\n", encoding="utf-8")
    code = main(["user", "list"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pbxtui: error:") and "flood_limt" in err
    assert main(["--config", str(tmp_path / "missing.toml"), "user", "list"]) == 2


def test_bad_global_values_exit_2(cli: Cli) -> None:
    assert_usage_error(cli("--listen", "udp:localhost:5060", "user", "list"), "--listen")
    assert_usage_error(cli("user", "list", domain="bad domain"), "--domain")
    assert_usage_error(cli("--advertise", "bad host:1", "user", "list"), "--advertise")
    assert_usage_error(cli("--advertise", "192.0.2.1:99999", "user", "list"), "--advertise")


def test_an_unusable_database_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 200)
    assert main(["--db", str(junk), "user", "list"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"pbxtui: database {junk}"
    assert err[1].startswith("pbxtui: error:") and len(err) == 2


def test_tls_selfsigned_writes_a_pair_the_server_loads(cli: Cli, tmp_path: Path) -> None:
    from core.net.tls import server_context

    result = cli("tls", "selfsigned", "--name", "pbx.test", "--name", "127.0.0.1")
    assert result.code == 0, result.err
    certificate, key = tmp_path / "pbxtui-cert.pem", tmp_path / "pbxtui-key.pem"
    server_context(certificate, key)  # a usable pair
    assert key.stat().st_mode & 0o077 == 0  # the key is readable by its owner only
    assert "phones will warn" in result.err and "openssl" in result.out
    assert "database" not in result.err  # files only: no database is opened for it
    assert f'certificate = "{certificate}"' in result.out
    again = cli("tls", "selfsigned")
    assert again.code == 2 and "--force" in again.err
    assert cli("tls", "selfsigned", "--force", "--days", "0").code == 2
    assert cli("tls", "selfsigned", "--force", "--name", "bad name!").code == 2


def test_a_tls_carrier_defaults_to_port_5061(cli: Cli, db: Path) -> None:
    """RFC 3261 §19.1.2: SIP over TLS is on 5061 unless the operator names a port."""
    assert cli("carrier", "add", "secure", "--ip", "192.0.2.1", "--transport", "tls").code == 0
    assert cli("carrier", "add", "plain", "--ip", "192.0.2.2").code == 0
    odd = ("--ip", "192.0.2.3", "--transport", "tls", "--port", "5070")
    assert cli("carrier", "add", "odd", *odd).code == 0
    carriers = {row.name: row for row in read_store(db, lambda store: store.list_carriers())}
    assert (carriers["secure"].transport, carriers["secure"].port) == ("tls", 5061)
    assert (carriers["plain"].transport, carriers["plain"].port) == ("udp", 5060)
    assert carriers["odd"].port == 5070
    bad = cli("carrier", "add", "x", "--ip", "192.0.2.4", "--transport", "sctp")
    assert bad.code == 2 and "transport" in bad.err
