r"""One log line per security decision, safe to feed to fail2ban and to grep.

Format (one line, fields always in this order, UTC timestamp to the second)::

    2026-11-26T22:00:00Z pbxtui[security] action=flood-banned src=203.0.113.9 user="" ua="friendly-scanner" count=61 detail="61 requests in 2s"

- `action` is a bare token from `SecurityEvent`'s vocabulary (`auth-failed`,
  `scanner-dropped`, `flood-banned`, `banned`, `unbanned`, `banned-dropped`, ...).
- `src` is the bare source IP address. Anything that is not made only of hex digits, `.` and
  `:` is written quoted instead, so it can never look like an address to a filter.
- `user`, `ua` and `detail` are always double-quoted. Inside quotes `\` and `"` are
  backslash-escaped, and every character that is not printable (CR, LF, TAB, NUL, DEL, C1
  controls such as NEL U+0085, U+2028/U+2029, lone surrogates from undecodable bytes) is
  written as `\n`, `\r`, `\t` or `\xNN` / `\uNNNN`. Values are cut to 256 characters (`...`
  marks a cut). A hostile User-Agent therefore stays inside its quotes and on its line: it
  cannot start a new line, close the quote, or add a second `src=`.
- `count` is how many occurrences the line stands for (repeated drops are summed).

Because `action` and `src` come before any value a peer controls, a filter anchored at the
start of the line reads the true source. The shipped fail2ban filter and jail are in
`contrib/fail2ban/`: they read the line behind the headless logger's prefix
(`2026-11-26 22:00:00,123 WARNING pbxtui.security: `), under journald's, and in the
console's `security.log`, and `tests/test_fail2ban.py` runs them through `fail2ban-regex`
against a real server's output. `FAIL2BAN_FAILREGEX` below is the core of that regex, which
the unit tests run against formatted lines.
"""  # noqa: E501 - a log line and a filter line are quoted whole

from __future__ import annotations

import re
import time
from collections.abc import Callable

from core.events import Event, SecurityEvent

FAIL2BAN_FAILREGEX = (
    r"^\s*pbxtui\[security\] action=(?:auth-failed|scanner-dropped|flood-banned|banned) "
    r"src=<HOST>(?= |$)"
)
LINE_TAG = "pbxtui[security]"
MAX_VALUE_CHARS = 256

_BARE_ADDRESS = re.compile(r"^[0-9A-Fa-f:.]+$")
_BARE_TOKEN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_value(text: str) -> str:
    """`text` in double quotes, escaped so that it stays one field on one line."""
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def _escape_char(char: str) -> str:
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def format_timestamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def format_log_line(event: Event) -> str | None:
    """The log line for a `SecurityEvent` (format in the module docstring), bans and unbans
    (`SourceBanned` / `SourceUnbanned`) included; None for any other event."""
    if not isinstance(event, SecurityEvent):
        return None
    action = event.action if _BARE_TOKEN.match(event.action) else quote_value(event.action)
    source = event.source if _BARE_ADDRESS.match(event.source) else quote_value(event.source)
    return (
        f"{format_timestamp(event.at)} {LINE_TAG} action={action} src={source} "
        f"user={quote_value(event.user)} ua={quote_value(event.user_agent)} "
        f"count={int(event.count)} detail={quote_value(event.detail)}"
    )


def security_log_listener(write: Callable[[str], None]) -> Callable[[Event], None]:
    """A bus listener that writes one line per `SecurityEvent` and ignores other events.

    `bus.subscribe(security_log_listener(logger.warning))`, or a file's `write` wrapped to add
    the newline. Every decision is one event, so it gets exactly one line.
    """

    def listener(event: Event) -> None:
        line = format_log_line(event)
        if line is not None:
            write(line)

    return listener
