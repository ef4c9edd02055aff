"""Turn the TOML config file and the command-line overrides into a `core.settings.Settings`.

Where the file comes from (first that applies):
  1. `--config FILE` (it must exist),
  2. `./pbxtui.toml`,
  3. `~/.config/pbxtui/pbxtui.toml`,
  4. none: every default from `core/settings.py`.

The file's sections mirror the dataclasses one to one: `[server]` holds the top-level fields
(`domain`, `db`, `listen`, `user_agent`), and `[transport]`, `[registrar]`, `[auth]`,
`[security]`, `[proxy]`, `[events]`, `[ui]` and `[dialplan]` hold the fields of the matching
`*Settings` class under the same names. `pbxtui.example.toml` at the top of the repository lists
every key with its default. Anything unknown or of the wrong type is a `ConfigError` naming the
key: a typo in a security limit must not silently leave the default in force.

`--db`, `--listen` (repeatable; replaces the whole list) and `--domain` are applied last.
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

from core.net.addresses import parse_network
from core.net.tls import parse_carrier_subjects
from core.settings import (
    AuthSettings,
    DialplanSettings,
    EventSettings,
    ListenAddress,
    ProxySettings,
    RegistrarSettings,
    SecuritySettings,
    Settings,
    TlsSettings,
    TransportSettings,
    UiSettings,
)

CONFIG_FILE_NAME = "pbxtui.toml"
USER_CONFIG_PATH = Path("~/.config/pbxtui") / CONFIG_FILE_NAME
DEFAULT_DB_PATH = Path("~/.local/share/pbxtui/pbxtui.db")
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
    "events": ("events", EventSettings),
    "ui": ("ui", UiSettings),
    "dialplan": ("dialplan", DialplanSettings),
}
_SERVER_KEYS = ("domain", "db", "listen", "user_agent", "workers")
MAX_WORKERS = 64

# A SIP domain is a hostname or an IP address; it is also the digest realm, which is quoted
# in WWW-Authenticate, so quotes, spaces and the like must never get in.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?",
    re.ASCII,
)
_DIGITS = re.compile(r"[0-9]*", re.ASCII)


class ConfigError(Exception):
    """The configuration is unusable; the message names the file and key."""


def parse_listen(text: str) -> ListenAddress:
    """Parse `PROTO:HOST[:PORT]`: `udp:0.0.0.0:5060`, `tcp:[::1]:5060`, `tls:0.0.0.0:5061`.

    PROTO is udp, tcp or tls; HOST is an IP address (IPv6 in brackets); PORT defaults to 5060
    (5061 for tls) and may be 0 to let the system pick one (tests). Raises `ValueError`
    saying what is wrong.
    """
    transport, colon, rest = text.strip().partition(":")
    transport = transport.lower()
    if not colon or transport not in LISTEN_TRANSPORTS:
        raise ValueError(
            f"listen address {text!r} must look like udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT"
        )
    if rest.startswith("["):
        host, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"listen address {text!r}: unbalanced [ ] around the IPv6 address")
        port_text = after[1:] if after else ""
        has_port = bool(after)
    else:
        host, colon, port_text = rest.partition(":")
        has_port = bool(colon)
        if ":" in port_text:
            raise ValueError(f"listen address {text!r}: put an IPv6 address in brackets")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen address {text!r}: {host!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv4Address) and rest.startswith("["):
        raise ValueError(f"listen address {text!r}: brackets are for IPv6 addresses only")
    port = DEFAULT_PORTS[transport]
    if has_port:
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65_535:
            raise ValueError(f"listen address {text!r}: port must be 0-65535")
        port = int(port_text)
    return ListenAddress(transport, str(address), port)


def validate_domain(domain: str) -> None:
    """Raise `ValueError` unless `domain` is a hostname or an IP address."""
    try:
        ipaddress.ip_address(domain)
    except ValueError:
        if not _HOSTNAME.fullmatch(domain):
            raise ValueError(f"domain {domain!r} is not a hostname or IP address") from None


def find_config_file(explicit: str | Path | None = None, cwd: Path | None = None) -> Path | None:
    """The config file to read, by the search order in this module's docstring."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    for candidate in ((cwd or Path.cwd()) / CONFIG_FILE_NAME, USER_CONFIG_PATH.expanduser()):
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
    cwd: Path | None = None,
) -> Settings:
    """Settings from the config file found by the search order, with CLI overrides on top."""
    path = find_config_file(config_file, cwd)
    settings = read_config_file(path) if path is not None else default_settings()
    return apply_overrides(settings, db=db, listen=listen, domain=domain, workers=workers, cwd=cwd)


def default_settings() -> Settings:
    """`Settings()` with the database path expanded for this user."""
    return dataclasses.replace(Settings(), db_path=DEFAULT_DB_PATH.expanduser())


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
    cwd: Path | None = None,
) -> Settings:
    """Apply `--db`, `--listen` (replaces the list), `--domain` and `--workers`;
    `ConfigError` if bad."""
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
        else:
            changes[key] = value
    return changes


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


def _all_sections() -> list[str]:
    return ["server", *_SECTIONS]


def _suggest(name: str, known: Sequence[str]) -> str:
    """`'flod_limit' (did you mean 'flood_limit'?)`, so a typo is one glance to fix."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
