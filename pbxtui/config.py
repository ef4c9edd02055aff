"""Turn the TOML config file and the command-line overrides into a `core.settings.Settings`.

Where the file comes from (first that applies):
  1. `--config FILE` (it must exist),
  2. `$PBXTUI_CONFIG` (it must exist),
  3. `./pbxtui.toml`,
  4. `$XDG_CONFIG_HOME/pbxtui/pbxtui.toml` (`~/.config/pbxtui/pbxtui.toml`),
  5. `/etc/pbxtui/pbxtui.toml` (a service, and `sudo pbxtui ...` beside it),
  6. none: every default from `core/settings.py`, the database in
     `$XDG_DATA_HOME/pbxtui/pbxtui.db` (`~/.local/share/pbxtui/pbxtui.db`).

The file's sections mirror the dataclasses one to one: `[server]` holds the top-level fields
(`domain`, `db`, `listen`, `user_agent`, `workers`, plus `advertise`, the address every
listener without its own `advertise` is reached by), and `[transport]`, `[registrar]`, `[auth]`,
`[security]`, `[proxy]`, `[events]`, `[ui]` and `[dialplan]` hold the fields of the matching
`*Settings` class under the same names. `pbxtui.example.toml` at the top of the repository lists
every key with its default. Anything unknown or of the wrong type is a `ConfigError` naming the
key: a typo in a security limit must not silently leave the default in force.

`--db`, `--listen` (repeatable; replaces the whole list), `--domain` and `--advertise` are
applied last.
A relative `db` in the file is relative to the file's directory; on the command line, to the
current directory. The database's parent directory is created by `core.store.database.Store.open`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.accounting.rates import parse_money, validate_currency
from core.net.addresses import parse_network
from core.net.tls import parse_carrier_subjects
from core.settings import (
    AccountingSettings,
    AuthSettings,
    DialplanSettings,
    EventSettings,
    ListenAddress,
    MediaSettings,
    ProxySettings,
    RegistrarSettings,
    SecuritySettings,
    Settings,
    TlsSettings,
    TransportSettings,
    UiSettings,
)
from core.sip.errors import SipParseError
from core.sip.hostport import is_hostname, parse_hostport

CONFIG_FILE_NAME = "pbxtui.toml"
SYSTEM_CONFIG_PATH = Path("/etc/pbxtui") / CONFIG_FILE_NAME
CONFIG_ENVIRONMENT = "PBXTUI_CONFIG"
LISTEN_TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}  # RFC 3261 §19.1.2
DIGEST_ALGORITHMS = ("SHA-256", "MD5")

# TOML section -> (Settings attribute, dataclass it fills).
_SECTIONS: dict[str, tuple[str, type]] = {
    "transport": ("transport", TransportSettings),
    "tls": ("tls", TlsSettings),
    "registrar": ("registrar", RegistrarSettings),
    "auth": ("auth", AuthSettings),
    "security": ("security", SecuritySettings),
    "proxy": ("proxy", ProxySettings),
    "media": ("media", MediaSettings),
    "events": ("events", EventSettings),
    "ui": ("ui", UiSettings),
    "dialplan": ("dialplan", DialplanSettings),
    "accounting": ("accounting", AccountingSettings),
}
_SERVER_KEYS = (
    "domain",
    "db",
    "listen",
    "advertise",
    "user_agent",
    "workers",
    "log_level",
    "control_group",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_WORKERS = 64

MAX_DOMAIN_LENGTH = 253  # a DNS name (RFC 1035 §2.3.4)
_DIGITS = re.compile(r"[0-9]*", re.ASCII)


class ConfigError(Exception):
    """The configuration is unusable; the message names the file and key."""


def parse_listen(text: str) -> ListenAddress:
    """Parse `PROTO:HOST[:PORT] [advertise HOST[:PORT]]`: `udp:0.0.0.0:5060`,
    `tcp:[::1]:5060`, `tls:0.0.0.0:5061`, `udp:10.0.0.5:5060 advertise 203.0.113.10:5060`.

    PROTO is udp, tcp or tls; HOST is an IP address (IPv6 in brackets); PORT defaults to 5060
    (5061 for tls) and may be 0 to let the system pick one (tests). The advertised address
    (Kamailio's syntax) is an IP address or host name; its port defaults to the listen port.
    Raises `ValueError`
    saying what is wrong.
    """
    address_text, _, advertise_text = text.strip().partition(" advertise ")
    address = _parse_listen_address(address_text.strip(), text)
    if advertise_text:
        address = with_advertise(address, advertise_text.strip())
    return address


def parse_advertise(text: str) -> tuple[str, int]:
    """`HOST[:PORT]` peers reach a listener by; port 0 when not given (the listen port)."""
    try:
        host, port = parse_hostport(text.strip())
    except SipParseError:
        raise ValueError(f"advertised address {text!r} must look like HOST or HOST:PORT") from None
    validate_domain(host)
    return host, port or 0


def with_advertise(address: ListenAddress, text: str) -> ListenAddress:
    """`address` advertised as `text` (`HOST[:PORT]`); `ValueError` if `text` is bad."""
    host, port = parse_advertise(text)
    return dataclasses.replace(address, advertise_host=host, advertise_port=port)


def _parse_listen_address(text: str, original: str) -> ListenAddress:
    transport, colon, rest = text.partition(":")
    transport = transport.lower()
    if not colon or transport not in LISTEN_TRANSPORTS:
        raise ValueError(
            f"listen address {original!r} must look like udp:HOST:PORT, tcp:HOST:PORT or "
            "tls:HOST:PORT"
        )
    try:
        host, port = parse_hostport(rest, zero_port=True)
    except SipParseError as exc:
        if exc.reason == "Bad port":
            raise ValueError(f"listen address {original!r}: port must be 0-65535") from None
        raise ValueError(
            f"listen address {original!r}: HOST must be an IP address, IPv6 in brackets"
        ) from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen address {original!r}: {host!r} is not an IP address") from None
    return ListenAddress(
        transport, str(address), DEFAULT_PORTS[transport] if port is None else port
    )


def validate_domain(domain: str) -> None:
    """Raise `ValueError` unless `domain` is a hostname or an IP address. It is also the
    digest realm, quoted in WWW-Authenticate, so the grammar keeps quotes and spaces out."""
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        if len(domain) > MAX_DOMAIN_LENGTH or not is_hostname(domain):
            raise ValueError(f"domain {domain!r} is not a hostname or IP address") from None


def user_config_path() -> Path:
    """`$XDG_CONFIG_HOME/pbxtui/pbxtui.toml`, `~/.config/...` when it is unset (XDG Base
    Directory specification: a relative value is ignored)."""
    return _xdg_home("XDG_CONFIG_HOME", "~/.config") / "pbxtui" / CONFIG_FILE_NAME


def default_db_path() -> Path:
    """`$XDG_DATA_HOME/pbxtui/pbxtui.db`, `~/.local/share/...` when it is unset."""
    return _xdg_home("XDG_DATA_HOME", "~/.local/share") / "pbxtui" / "pbxtui.db"


def _xdg_home(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path(fallback).expanduser()


def find_config_file(explicit: str | Path | None = None, cwd: Path | None = None) -> Path | None:
    """The config file to read, by the search order in this module's docstring."""
    if explicit is None and os.environ.get(CONFIG_ENVIRONMENT):
        explicit = os.environ[CONFIG_ENVIRONMENT]
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    for candidate in (
        (cwd or Path.cwd()) / CONFIG_FILE_NAME,
        user_config_path(),
        SYSTEM_CONFIG_PATH,
    ):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    config_file: str | Path | None = None,
    *,
    db: str | Path | None = None,
    listen: Sequence[str] | None = None,
    domain: str | None = None,
    workers: str | None = None,
    advertise: str | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Settings from the config file found by the search order, with CLI overrides on top."""
    path = find_config_file(config_file, cwd)
    settings = read_config_file(path) if path is not None else default_settings()
    return apply_overrides(
        settings,
        db=db,
        listen=listen,
        domain=domain,
        workers=workers,
        advertise=advertise,
        cwd=cwd,
    )


def default_settings() -> Settings:
    """`Settings()` with the database path expanded for this user."""
    return dataclasses.replace(Settings(), db_path=default_db_path())


def read_config_file(path: Path) -> Settings:
    """Parse one TOML file into Settings; `ConfigError` for unreadable files and bad keys."""
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return settings_from_mapping(data, source=str(path), base_dir=path.parent)


def settings_from_mapping(
    data: Mapping[str, Any], source: str = "config", base_dir: Path | None = None
) -> Settings:
    """Build Settings from already-parsed TOML; relative `db` paths resolve from `base_dir`."""
    settings = default_settings()
    for section in data:
        if section != "server" and section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section {_suggest(section, _all_sections())}")
        if not isinstance(data[section], Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
    changes: dict[str, Any] = {}
    if "server" in data:
        changes.update(_server_changes(data["server"], source, base_dir or Path.cwd()))
    for section, (attribute, cls) in _SECTIONS.items():
        if section in data:
            changes[attribute] = _section(cls, data[section], f"{source}: [{section}]")
    if "tls" in changes:
        changes["tls"] = _tls_paths(changes["tls"], base_dir or Path.cwd())
    settings = dataclasses.replace(settings, **changes)
    _check_consistency(settings, source)
    return settings


def parse_workers(value: object) -> int:
    """Worker processes: an integer 0..MAX_WORKERS, or "auto" (one per CPU, 0 on one CPU)."""
    if value == "auto":
        cpus = os.cpu_count() or 1
        return 0 if cpus < 2 else min(cpus, MAX_WORKERS)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WORKERS:
        raise ValueError(f'expected 0-{MAX_WORKERS} or "auto", got {value!r}')
    return value


def apply_overrides(
    settings: Settings,
    *,
    db: str | Path | None = None,
    listen: Sequence[str] | None = None,
    domain: str | None = None,
    workers: str | None = None,
    advertise: str | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Apply `--db`, `--listen` (replaces the list), `--domain`, `--workers` and
    `--advertise` (for every listener); `ConfigError` if bad."""
    changes: dict[str, Any] = {}
    if workers is not None:
        try:
            changes["workers"] = parse_workers(workers)
        except ValueError as exc:
            raise ConfigError(f"--workers: {exc}") from None
    if db is not None:
        changes["db_path"] = ((cwd or Path.cwd()) / Path(db).expanduser()).absolute()
    if listen:
        try:
            changes["listen"] = tuple(parse_listen(text) for text in listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}") from None
    if domain is not None:
        try:
            validate_domain(domain)
        except ValueError as exc:
            raise ConfigError(f"--domain: {exc}") from None
        changes["domain"] = domain
    if advertise is not None:
        try:
            listen = changes.get("listen", settings.listen)
            changes["listen"] = tuple(with_advertise(address, advertise) for address in listen)
        except ValueError as exc:
            raise ConfigError(f"--advertise: {exc}") from None
    return dataclasses.replace(settings, **changes) if changes else settings


# --- sections -----------------------------------------------------------------------------


def _server_changes(table: Mapping[str, Any], source: str, base_dir: Path) -> dict[str, Any]:
    where = f"{source}: [server]"
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _SERVER_KEYS:
            raise ConfigError(f"{where} unknown key {_suggest(key, _SERVER_KEYS)}")
        if key == "listen":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} listen: expected a list of strings, got {value!r}")
            if not value:
                raise ConfigError(f"{where} listen: name at least one address")
            try:
                changes["listen"] = tuple(parse_listen(v) for v in value)
            except ValueError as exc:
                raise ConfigError(f"{where} listen: {exc}") from None
            continue
        if key == "advertise":
            if not isinstance(value, str):
                raise ConfigError(f"{where} advertise: expected a string, got {value!r}")
            try:
                parse_advertise(value)
            except ValueError as exc:
                raise ConfigError(f"{where} advertise: {exc}") from None
            continue  # applied to the listeners below, whatever the key order
        if key == "workers":
            try:
                changes["workers"] = parse_workers(value)
            except ValueError as exc:
                raise ConfigError(f"{where} workers: {exc}") from None
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where} {key}: expected a string, got {value!r}")
        if key == "db":
            changes["db_path"] = base_dir / Path(value).expanduser()
        elif key == "domain":
            try:
                validate_domain(value)
            except ValueError as exc:
                raise ConfigError(f"{where} domain: {exc}") from None
            changes["domain"] = value
        elif key == "log_level":
            if value.lower() not in LOG_LEVELS:
                raise ConfigError(f"{where} log_level: one of {', '.join(LOG_LEVELS)}")
            changes["log_level"] = value.lower()
        else:
            changes[key] = value
    if "advertise" in table:
        listen = changes.get("listen", default_settings().listen)
        changes["listen"] = _advertised(listen, table["advertise"])
    return changes


def _advertised(listen: Sequence[ListenAddress], text: str) -> tuple[ListenAddress, ...]:
    """Every listener without an advertised address of its own advertised as `text`."""
    return tuple(a if a.advertise_host else with_advertise(a, text) for a in listen)


def _section(cls: type, table: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise ConfigError(f"{where} unknown key {_suggest(key, names)}")
        values[key] = _convert(value, hints[key], f"{where} {key}")
    return cls(**values)


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{where}: must not be negative, got {value}")
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ConfigError(f"{where}: must not be negative, got {value}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    raise ConfigError(f"{where}: this setting cannot be set from the config file")


def _tls_paths(tls: TlsSettings, base_dir: Path) -> TlsSettings:
    """Relative certificate, key and CA paths are relative to the config file, like `db`."""
    paths = {}
    for key in ("certificate", "key", "ca_file", "client_certificate", "client_key"):
        value = getattr(tls, key)
        if value:
            paths[key] = str(base_dir / Path(value).expanduser())
    return dataclasses.replace(tls, **paths)


def _check_consistency(settings: Settings, source: str) -> None:
    """Rules that span keys or need more than a type check."""
    registrar = settings.registrar
    if not registrar.min_expires <= registrar.default_expires <= registrar.max_expires:
        raise ConfigError(
            f"{source}: [registrar] needs min_expires <= default_expires <= max_expires"
        )
    media = settings.media
    if media.relay not in ("auto", "always", "never"):
        raise ConfigError(f"{source}: [media] relay: choose from auto, always, never")
    if media.engine not in ("embedded", "rtpengine"):
        raise ConfigError(f"{source}: [media] engine: choose from embedded, rtpengine")
    if not 1 <= media.port_min < media.port_max <= 65_535 or media.port_max - media.port_min < 4:
        raise ConfigError(f"{source}: [media] needs 1 <= port_min < port_max <= 65535")
    algorithms = settings.auth.algorithms
    if not algorithms or any(a not in DIGEST_ALGORITHMS for a in algorithms):
        raise ConfigError(
            f"{source}: [auth] algorithms: choose from {', '.join(DIGEST_ALGORITHMS)}"
        )
    for text in settings.security.allow_list:
        try:
            parse_network(text)
        except ValueError as exc:
            raise ConfigError(f"{source}: [security] allow_list: {exc}") from None
    dialplan = settings.dialplan
    for key in ("country_code", "national_prefix", "international_prefix"):
        if not _DIGITS.fullmatch(getattr(dialplan, key)):
            raise ConfigError(f"{source}: [dialplan] {key}: digits only")
    tls = settings.tls
    try:
        parse_carrier_subjects(tls.carrier_subjects)
    except ValueError as exc:
        raise ConfigError(f"{source}: [tls] carrier_subjects: {exc}") from None
    if tls.certificate and not tls.key:
        raise ConfigError(f"{source}: [tls] certificate needs a key")
    if tls.handshake_timeout <= 0 or tls.reload_check_seconds <= 0:
        raise ConfigError(
            f"{source}: [tls] handshake_timeout and reload_check_seconds: more than 0"
        )
    if settings.ui.refresh_hz <= 0:
        raise ConfigError(f"{source}: [ui] refresh_hz: must be more than 0")
    _check_accounting(settings.accounting, source)


def _check_accounting(accounting: AccountingSettings, source: str) -> None:
    try:
        validate_currency(accounting.currency)
    except ValueError as exc:
        raise ConfigError(f"{source}: [accounting] currency: {exc}") from None
    for key in ("day_limit", "month_limit", "user_day_limit", "user_month_limit"):
        text = getattr(accounting, key)
        if text:
            try:
                parse_money(text)
            except ValueError as exc:
                raise ConfigError(f"{source}: [accounting] {key}: {exc}") from None


def _all_sections() -> list[str]:
    return ["server", *_SECTIONS]


def _suggest(name: str, known: Sequence[str]) -> str:
    """`'flod_limit' (did you mean 'flood_limit'?)`, so a typo is one glance to fix."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
