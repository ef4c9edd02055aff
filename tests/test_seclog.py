"""The security log line: exact format, escaping, and the documented fail2ban filter."""

from __future__ import annotations

import re

import pytest

from core.events import SecurityEvent, ServerEvent, SourceBanned, SourceUnbanned
from core.security.seclog import (
    FAIL2BAN_FAILREGEX,
    format_log_line,
    quote_value,
    security_log_listener,
)

AT = 1_795_730_400.0  # 2026-11-26T22:00:00Z
# fail2ban cuts the timestamp out, then matches; <HOST> becomes an address group.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
FAILREGEX = re.compile(FAIL2BAN_FAILREGEX.replace("<HOST>", r"(?P<host>[0-9A-Fa-f:.]+)"))
# A strict reader of the whole line: every field, quoted values with escapes only.
QUOTED = r'"(?:[^"\\]|\\.)*"'
LINE = re.compile(
    r"^(?P<at>\S+) pbxtui\[security\] action=(?P<action>[a-z-]+) src=(?P<src>\S+) "
    rf"user=(?P<user>{QUOTED}) ua=(?P<ua>{QUOTED}) count=(?P<count>\d+) "
    rf"detail=(?P<detail>{QUOTED})$"
)


def line_for(event: SecurityEvent) -> str:
    line = format_log_line(event)
    assert line is not None
    return line


def fail2ban_host(line: str) -> str | None:
    match = FAILREGEX.search(TIMESTAMP.sub("", line, count=1))
    return match.group("host") if match else None


def test_the_documented_format() -> None:
    event = SecurityEvent(
        action="flood-banned",
        source="203.0.113.9",
        user_agent="friendly-scanner",
        count=61,
        detail="61 requests in 2s",
        at=AT,
    )
    assert line_for(event) == (
        "2026-11-26T22:00:00Z pbxtui[security] action=flood-banned src=203.0.113.9 "
        'user="" ua="friendly-scanner" count=61 detail="61 requests in 2s"'
    )


@pytest.mark.parametrize("action", ["auth-failed", "scanner-dropped", "flood-banned", "banned"])
def test_fail2ban_filter_matches_actionable_lines(action: str) -> None:
    line = line_for(SecurityEvent(action=action, source="2001:db8::7", at=AT))
    assert fail2ban_host(line) == "2001:db8::7"


@pytest.mark.parametrize("action", ["unbanned", "banned-dropped", "brute-force-user"])
def test_fail2ban_filter_ignores_other_lines(action: str) -> None:
    line = line_for(SecurityEvent(action=action, source="203.0.113.9", at=AT))
    assert fail2ban_host(line) is None


def test_a_hostile_user_agent_cannot_forge_a_line_or_a_field() -> None:
    forged = (
        'x" src=6.6.6.6 count=999 detail="\n2026-11-26T22:00:01Z pbxtui[security] '
        'action=banned src=6.6.6.6 user="" ua="" count=1 detail=""\r\\'
    )
    event = SecurityEvent(
        action="auth-failed",
        source="203.0.113.9",
        user='alice" action=banned src=6.6.6.6',
        user_agent=forged,
        at=AT,
    )
    line = line_for(event)
    assert line.splitlines() == [line]
    fields = LINE.match(line)
    assert fields is not None
    assert (fields["action"], fields["src"], fields["count"]) == ("auth-failed", "203.0.113.9", "1")
    assert fail2ban_host(line) == "203.0.113.9"
    assert "\\n2026-11-26T22:00:01Z" in fields["ua"]
    assert fields["ua"].endswith('\\r\\\\"')


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ("a\x00b", '"a\\x00b"'),
        ("next\x85line", '"next\\x85line"'),
        ("para\u2028graph", '"para\\u2028graph"'),
        ("bad byte \udcff", '"bad byte \\udcff"'),
        ("tab\there", '"tab\\there"'),
        ("Grandstream GXP2170 1.0.11", '"Grandstream GXP2170 1.0.11"'),
        ("Zoiper ünïcode", '"Zoiper ünïcode"'),
    ],
)
def test_unprintable_characters_are_escaped(raw: str, written: str) -> None:
    assert quote_value(raw) == written
    line = line_for(SecurityEvent(action="scanner-dropped", source="::1", user_agent=raw))
    assert len(line.splitlines()) == 1
    line.encode("utf-8")  # no lone surrogates left: the log file stays valid UTF-8


def test_long_values_are_cut() -> None:
    assert quote_value("A" * 10_000) == '"' + "A" * 256 + '..."'


def test_a_source_that_is_not_an_address_is_quoted_and_never_matched() -> None:
    line = line_for(SecurityEvent(action="banned", source="6.6.6.6 x", at=AT))
    assert 'src="6.6.6.6 x"' in line
    assert fail2ban_host(line) is None


def test_bans_and_unbans_get_the_line_of_any_security_decision() -> None:
    """One event per ban, logged as before: fail2ban's failregex still matches it."""
    banned = SourceBanned(
        action="flood-banned",
        source="203.0.113.9",
        detail="61 requests in 2s",
        user_agent="friendly-scanner",
        count=61,
        until=0.0,
        reason="flood",
        at=AT,
    )
    assert format_log_line(banned) == (
        "2026-11-26T22:00:00Z pbxtui[security] action=flood-banned src=203.0.113.9 "
        'user="" ua="friendly-scanner" count=61 detail="61 requests in 2s"'
    )
    assert fail2ban_host(format_log_line(banned) or "") == "203.0.113.9"
    unbanned = SourceUnbanned(action="unbanned", source="203.0.113.9", detail="admin", at=AT)
    assert format_log_line(unbanned) == (
        "2026-11-26T22:00:00Z pbxtui[security] action=unbanned src=203.0.113.9 "
        'user="" ua="" count=1 detail="admin"'
    )
    assert fail2ban_host(format_log_line(unbanned) or "") is None


def test_the_listener_writes_security_events_only() -> None:
    lines: list[str] = []
    listener = security_log_listener(lines.append)
    listener(ServerEvent(message="started"))
    listener(SecurityEvent(action="parse-error", source="192.0.2.1", detail="Bad request line"))
    assert len(lines) == 1 and "action=parse-error src=192.0.2.1" in lines[0]
