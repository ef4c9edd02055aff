"""pbxtui/config.py (TOML, search order, overrides, listen addresses) and core/net/addresses.py."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from ipaddress import ip_address
from pathlib import Path

import pytest

from core.net.addresses import AddressSet, is_private, parse_ip, parse_network, parse_networks
from core.settings import ListenAddress, Settings
from pbxtui import config
from pbxtui.config import (
    ConfigError,
    apply_overrides,
    find_config_file,
    load_settings,
    parse_listen,
    read_config_file,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "pbxtui.example.toml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home and working directory, so no real config file is found."""
    home_dir = tmp_path / "home"
    home_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home_dir))
    for variable in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "PBXTUI_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(config, "SYSTEM_CONFIG_PATH", tmp_path / "etc/pbxtui/pbxtui.toml")
    monkeypatch.chdir(work)
    return home_dir


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- search order and defaults ------------------------------------------------------------


def test_no_file_means_the_documented_defaults(home: Path) -> None:
    settings = load_settings()
    assert settings == dataclasses.replace(
        Settings(), db_path=home / ".local/share/pbxtui/pbxtui.db"
    )
    assert [str(a) for a in settings.listen] == ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]


def test_search_order(home: Path, tmp_path: Path) -> None:
    user_file = write(home / ".config/pbxtui/pbxtui.toml", '[server]\ndomain = "home.example"\n')
    assert find_config_file() == user_file
    assert load_settings().domain == "home.example"
    local_file = write(Path.cwd() / "pbxtui.toml", '[server]\ndomain = "local.example"\n')
    assert find_config_file() == local_file
    explicit = write(tmp_path / "other.toml", '[server]\ndomain = "explicit.example"\n')
    assert load_settings(explicit).domain == "explicit.example"


def test_the_system_file_comes_after_the_users_and_the_variable_first(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = write(tmp_path / "etc/pbxtui/pbxtui.toml", '[server]\ndomain = "system.example"\n')
    assert find_config_file() == system
    user_file = write(home / ".config/pbxtui/pbxtui.toml", '[server]\ndomain = "home.example"\n')
    assert find_config_file() == user_file
    xdg = write(tmp_path / "xdg/pbxtui/pbxtui.toml", '[server]\ndomain = "xdg.example"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_config_file() == xdg
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    assert find_config_file() == user_file
    chosen = write(tmp_path / "chosen.toml", '[server]\ndomain = "chosen.example"\n')
    monkeypatch.setenv("PBXTUI_CONFIG", str(chosen))
    assert load_settings().domain == "chosen.example"
    assert load_settings(system).domain == "system.example"  # --config still wins
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert load_settings(system).db_path == tmp_path / "data/pbxtui/pbxtui.db"


def test_an_explicit_file_must_exist(home: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings("missing.toml")


def test_the_example_file_lists_every_key_at_its_default(home: Path) -> None:
    assert read_config_file(EXAMPLE) == load_settings()
    with EXAMPLE.open("rb") as stream:
        documented = tomllib.load(stream)
    defaults = Settings()
    assert set(documented["server"]) == {
        "domain",
        "db",
        "listen",
        "user_agent",
        "workers",
        "log_level",
        "control_group",
    }
    for field in dataclasses.fields(defaults):
        value = getattr(defaults, field.name)
        if dataclasses.is_dataclass(value):
            keys = {f.name for f in dataclasses.fields(value)}
            assert set(documented[field.name]) == keys, f"[{field.name}] is incomplete"


# --- values -------------------------------------------------------------------------------


def test_sections_map_onto_the_settings(home: Path) -> None:
    path = write(
        Path.cwd() / "pbxtui.toml",
        """
        [server]
        domain = "pbx.example.com"
        db = "data/pbx.db"
        listen = ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
        user_agent = "edge"
        [registrar]
        min_expires = 120
        nat_ping_interval = 15
        [auth]
        algorithms = ["MD5"]
        [security]
        allow_list = ["192.168.0.0/16"]
        flood_limit = 80
        [dialplan]
        country_code = "44"
        """,
    )
    settings = load_settings()
    assert settings.domain == "pbx.example.com"
    assert settings.db_path == path.parent / "data/pbx.db"  # relative to the file
    assert settings.listen == (
        ListenAddress("udp", "127.0.0.1", 5070),
        ListenAddress("tcp", "::1", 5070),
    )
    assert settings.user_agent == "edge"
    assert settings.registrar.min_expires == 120
    assert settings.registrar.nat_ping_interval == 15.0
    assert isinstance(settings.registrar.nat_ping_interval, float)
    assert settings.auth.algorithms == ("MD5",)
    assert settings.security.allow_list == ("192.168.0.0/16",)
    assert settings.security.flood_limit == 80
    assert settings.security.flood_window == 2.0  # untouched keys keep their defaults
    assert settings.dialplan.country_code == "44"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\ndomian = 'x'\n", "[server] unknown key 'domian' (did you mean 'domain'?)"),
        ("[securty]\n", "unknown section 'securty' (did you mean 'security'?)"),
        ("[security]\nflod_limit = 5\n", "[security] unknown key 'flod_limit'"),
        ("[security]\nflood_limit = 'many'\n", "[security] flood_limit: expected an integer"),
        ("[security]\nflood_limit = 2.5\n", "[security] flood_limit: expected an integer"),
        ("[security]\nflood_limit = true\n", "[security] flood_limit: expected an integer"),
        ("[security]\nflood_limit = -1\n", "[security] flood_limit: must not be negative"),
        ("[security]\nflood_window = 'x'\n", "[security] flood_window: expected a number"),
        ("[security]\nallow_list = '10.0.0.0/8'\n", "allow_list: expected a list of strings"),
        ("[security]\nallow_list = ['10.0.0.300/8']\n", "[security] allow_list:"),
        ("[auth]\nalgorithms = ['SHA-512']\n", "[auth] algorithms"),
        ("[registrar]\nmin_expires = 7200\n", "min_expires <= default_expires"),
        ("[dialplan]\ncountry_code = '+44'\n", "[dialplan] country_code: digits only"),
        ("[ui]\nrefresh_hz = 0\n", "refresh_hz"),
        ("[server]\ndomain = 'pbx \"x\"'\n", "[server] domain:"),
        ("[server]\ndomain = 5\n", "[server] domain: expected a string"),
        ("[server]\nlisten = 'udp:0.0.0.0:5060'\n", "listen: expected a list of strings"),
        ("[server]\nlisten = []\n", "listen: name at least one address"),
        ("[server]\nlisten = ['sctp:0.0.0.0:5060']\n", "[server] listen:"),
        ("[server]\nworkers = 65\n", '[server] workers: expected 0-64 or "auto", got 65'),
        ("[server]\nworkers = 'many'\n", "[server] workers: expected 0-64"),
        ("[server]\nworkers = true\n", "[server] workers: expected 0-64"),
        ("server = 1\n", "[server] must be a table"),
        ("[server\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(home: Path, toml: str, message: str) -> None:
    path = write(Path.cwd() / "pbxtui.toml", toml)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert message in str(raised.value)
    assert str(path) in str(raised.value)


# --- overrides ----------------------------------------------------------------------------


def test_cli_overrides_win(home: Path) -> None:
    write(Path.cwd() / "pbxtui.toml", "[server]\ndomain = 'file.example'\ndb = '/srv/pbx.db'\n")
    settings = load_settings(db="here.db", listen=["tcp:127.0.0.1:6000"], domain="cli.example")
    assert settings.domain == "cli.example"
    assert settings.db_path == Path.cwd() / "here.db"
    assert settings.listen == (ListenAddress("tcp", "127.0.0.1", 6000),)


def test_workers_from_the_file_and_the_command_line(home: Path) -> None:
    write(Path.cwd() / "pbxtui.toml", "[server]\nworkers = 3\n")
    assert load_settings().workers == 3
    assert load_settings(workers="0").workers == 0
    assert Settings().workers == 0  # by default one process does everything
    cpus = os.cpu_count() or 1
    assert load_settings(workers="auto").workers == (0 if cpus < 2 else min(cpus, 64))


def test_bad_overrides_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--workers: expected 0-64"):
        apply_overrides(Settings(), workers="-1")
    with pytest.raises(ConfigError, match="--listen"):
        apply_overrides(Settings(), listen=["udp:nowhere:5060"])
    with pytest.raises(ConfigError, match="--domain"):
        apply_overrides(Settings(), domain="bad domain")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenAddress("udp", "127.0.0.1", 5060)),
        ("TCP:0.0.0.0:5080", ListenAddress("tcp", "0.0.0.0", 5080)),
        ("tcp:[::1]:5060", ListenAddress("tcp", "::1", 5060)),
        ("udp:[::]", ListenAddress("udp", "::", 5060)),
        ("udp:127.0.0.1", ListenAddress("udp", "127.0.0.1", 5060)),
        ("udp:127.0.0.1:0", ListenAddress("udp", "127.0.0.1", 0)),
        (
            "udp:10.0.0.5:5060 advertise 203.0.113.10:5080",
            ListenAddress("udp", "10.0.0.5", 5060, "203.0.113.10", 5080),
        ),
        (
            "tcp:[::]:5060 advertise sip.example.com",
            ListenAddress("tcp", "::", 5060, "sip.example.com", 0),
        ),
        (
            "tcp:0.0.0.0 advertise [2001:db8::10]:5062",
            ListenAddress("tcp", "0.0.0.0", 5060, "2001:db8::10", 5062),
        ),
    ],
)
def test_parse_listen(text: str, expected: ListenAddress) -> None:
    assert parse_listen(text) == expected
    assert parse_listen(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1:5060",
        "dtls:127.0.0.1:5061",
        "udp:",
        "udp:localhost:5060",
        "udp:127.0.0.1:",
        "udp:127.0.0.1:65536",
        "udp:127.0.0.1:50x",
        "udp:::1:5060",
        "udp:[::1:5060",
        "udp:[127.0.0.1]:5060",
        "udp:[::1]5060",
        "udp:127.0.0.1:5060 advertise",
    ],
)
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        parse_listen(text)


@pytest.mark.parametrize(
    "text", ["udp:127.0.0.1 advertise bad host", "udp:127.0.0.1 advertise 1.2.3.4:99999"]
)
def test_a_bad_advertised_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"advertised address|not a hostname"):
        parse_listen(text)


def test_advertise_from_the_file_and_the_command_line(home: Path) -> None:
    write(
        Path.cwd() / "pbxtui.toml",
        """
[server]
advertise = "203.0.113.10"
listen = ["udp:10.0.0.5:5060", "tcp:10.0.0.5:5061 advertise 198.51.100.4:15061"]
""",
    )
    udp, tcp = load_settings().listen
    assert udp == ListenAddress("udp", "10.0.0.5", 5060, "203.0.113.10", 0)
    assert udp.advertised == "203.0.113.10:5060"
    assert tcp.advertised == "198.51.100.4:15061"  # its own advertisement wins
    [cli] = load_settings(listen=["udp:0.0.0.0:5060"], advertise="192.0.2.9:5070").listen
    assert cli.advertised == "192.0.2.9:5070"
    # --advertise is for every listener, the file's own advertisements included.
    assert {a.advertised for a in load_settings(advertise="192.0.2.9").listen} == {
        "192.0.2.9:5060",
        "192.0.2.9:5061",
    }
    with pytest.raises(ConfigError, match="--advertise"):
        load_settings(advertise="no spaces allowed")
    write(Path.cwd() / "pbxtui.toml", "[server]\nadvertise = 5\n")
    with pytest.raises(ConfigError, match="advertise: expected a string"):
        load_settings()


# --- core/net/addresses.py ----------------------------------------------------------------------


def test_parse_network_forms() -> None:
    assert str(parse_network("192.0.2.7")) == "192.0.2.7/32"
    assert str(parse_network("192.0.2.7/24")) == "192.0.2.0/24"
    assert str(parse_network("2001:db8::1/32")) == "2001:db8::/32"
    assert str(parse_network("[2001:db8::1]")) == "2001:db8::1/128"
    assert str(parse_ip("::ffff:192.0.2.1")) == "192.0.2.1"
    for bad in ["", "192.0.2.0/33", "192.0.2.0/", "192.0.2.0/x", "example.com", "1.2.3.4/-1"]:
        with pytest.raises(ValueError):
            parse_network(bad)
    with pytest.raises(ValueError, match="'nope'"):
        parse_networks(["10.0.0.0/8", "nope"])


def test_address_set_membership() -> None:
    trusted = AddressSet(["10.0.0.0/8", "192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"])
    assert len(trusted) == 4
    for member in ["10.9.8.7", "192.0.2.7", "198.51.100.255", "2001:db8::5", "::ffff:10.0.0.1"]:
        assert trusted.contains(member), member
        assert member in trusted
    for outsider in ["192.0.2.8", "11.0.0.1", "2001:db9::1", "garbage", ""]:
        assert not trusted.contains(outsider), outsider
    assert trusted.contains(ip_address("10.1.1.1"))
    assert not AddressSet().contains("10.0.0.1")
    assert AddressSet(["0.0.0.0/0"]).contains("203.0.113.9")


def test_address_set_cache_stays_bounded() -> None:
    trusted = AddressSet(["10.0.0.0/8"])
    for i in range(10_000):
        trusted.contains(f"203.0.{i // 256}.{i % 256}")
    assert len(trusted._answers) <= AddressSet._MAX_CACHED_ANSWERS
    assert trusted.contains("10.0.0.1")


@pytest.mark.parametrize(
    ("ip", "private"),
    [
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.32.0.1", False),
        ("192.168.1.20", True),
        ("100.64.0.1", True),
        ("100.128.0.1", False),
        ("169.254.1.1", True),
        ("127.0.0.1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("::1", True),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
        ("phone.example.com", False),
    ],
)
def test_is_private(ip: str, private: bool) -> None:
    assert is_private(ip) is private
