"""The scanner verdict as one uncached search of the User-Agent, display name and From user
joined by newlines: what ScannerMatcher answered before it searched the places one by one and
remembered texts. The reference its cached, place-by-place answers are held to
(test_front_door.py, test_security.py)."""

from __future__ import annotations

from core.security.scanners import ScannerMatcher
from core.sip import Request, SipParseError


def joined_verdict(matcher: ScannerMatcher, request: Request) -> str | None:
    user_agent = request.user_agent or ""
    try:
        sender = request.from_addr
    except SipParseError:
        sender = None
    display = (sender.display_name or "") if sender else ""
    user = (sender.uri.user or "") if sender else ""
    pattern = matcher.match(f"{user_agent}\n{display}\n{user}")
    if pattern is None:
        return None
    where = "user-agent" if matcher.match(user_agent) == pattern else "from"
    return f'{where} "{pattern}"'
