"""Recognising SIP scanners (SIPVicious's svmap/svwar/svcrack, sipcli, ...) by what they say.

Scanners announce themselves in the User-Agent (`friendly-scanner`, `sipcli/v1.8`,
`VaxSIPUserAgent/3.1`) and SIPVicious also in the From display name
(`From: "sipvicious"<sip:100@1.1.1.1>`), so both are checked against one list of patterns.

Patterns match case-insensitively as whole words: a pattern must not be glued to a letter or
digit on either side. `smap` matches `smap 0.6` but not `Bitsmapper`, `iwar` matches `iWar`
but not `Siwar Phone`. Plain substring matching (Kamailio's `$ua =~ "..."`) turns a short
pattern into a false positive against some legitimate product sooner or later, and a false
positive here means a silent drop and a ban of a paying customer's phone.

All patterns compile into one regex, and the three places are searched together, so a
request costs one `search` whatever the list length. Phones repeat the same User-Agent and
From on every request, so the verdict is remembered per distinct (User-Agent, display name,
From user): a repeat costs one dict look-up, not a lower-casing and a search.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from core.sip import Request, SipParseError
from core.sip.bounded import make_room

# Distinct (User-Agent, display name, From user) verdicts remembered: one per phone, so sized
# for ~4,000 busy ones (with fewer entries than that nearly every request searched again,
# core/sip/bounded.py). The texts are the peer's: past this many the oldest eighth goes, and
# keys longer than VERDICT_KEY_LENGTH are not kept, so a source inventing new ones costs
# bounded memory and the search it would have cost anyway.
VERDICT_CACHE_SIZE: Final = 4_096
VERDICT_KEY_LENGTH: Final = 256


class ScannerMatcher:
    __slots__ = ("_regex", "_verdicts", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        cleaned = sorted({p.strip().lower() for p in patterns if p.strip()})
        self.patterns: tuple[str, ...] = tuple(cleaned)
        # Text is lower-cased before the search, which is cheaper than IGNORECASE, and the
        # alternatives are factored by common prefix, so the engine tries few at each place.
        self._regex = (
            re.compile(rf"(?<![a-z0-9])(?:{_prefix_tree(cleaned)})(?![a-z0-9])")
            if cleaned
            else None
        )
        # "" for "not a scanner", so one `get` tells a remembered no from an unseen key.
        self._verdicts: dict[str, str] = {}

    def match(self, text: str | None) -> str | None:
        """The pattern `text` contains as a word (lower case), or None."""
        if not text or self._regex is None:
            return None
        found = self._regex.search(text.lower())
        return found.group(0) if found else None

    def match_request(self, request: Request) -> str | None:
        """What gave `request` away as a scanner, e.g. `user-agent "friendly-scanner"`."""
        if self._regex is None:
            return None
        user_agent = request.user_agent or ""
        try:
            sender = request.from_addr
        except SipParseError:
            sender = None  # the sanity check answers a broken From
        display = (sender.display_name or "") if sender else ""
        user = (sender.uri.user or "") if sender else ""
        # The text searched is the key: one string to build, hash and compare instead of a
        # tuple of three. The verdict depends on it and on the User-Agent alone, which is the
        # text before the first newline unless the User-Agent holds one (never kept then).
        text = f"{user_agent}\n{display}\n{user}"
        verdicts = self._verdicts
        known = verdicts.get(text)
        if known is not None:
            return known or None
        verdict = self._search(text, user_agent)
        if len(text) <= VERDICT_KEY_LENGTH + 2 and "\n" not in user_agent:
            make_room(verdicts, VERDICT_CACHE_SIZE)
            verdicts[text] = verdict or ""
        return verdict

    def _search(self, text: str, user_agent: str) -> str | None:
        """The verdict on `text`, the User-Agent, display name and From user joined by
        newlines: one search over the three, kept apart by a character never in a word."""
        pattern = self.match(text)
        if pattern is None:
            return None
        where = "user-agent" if self.match(user_agent) == pattern else "from"
        return f'{where} "{pattern}"'


def _prefix_tree(words: list[str]) -> str:
    """A regex alternation of `words` factored by shared prefixes (`s(?:ipcli|map)`)."""
    tree: dict[str, dict] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _alternation(tree)


def _alternation(node: dict[str, dict]) -> str:
    branches = [re.escape(char) + _alternation(child) for char, child in node.items() if char]
    if not branches:
        return ""
    if "" in node:  # a word ends here and longer ones continue
        return "(?:" + "|".join(branches) + ")?"
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"
