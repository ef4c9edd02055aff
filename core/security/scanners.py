"""Recognising SIP scanners (SIPVicious's svmap/svwar/svcrack, sipcli, ...) by what they say.

Scanners announce themselves in the User-Agent (`friendly-scanner`, `sipcli/v1.8`,
`VaxSIPUserAgent/3.1`) and SIPVicious also in the From display name
(`From: "sipvicious"<sip:100@1.1.1.1>`), so both are checked against one list of patterns.

Patterns match case-insensitively as whole words: a pattern must not be glued to a letter or
digit on either side. `smap` matches `smap 0.6` but not `Bitsmapper`, `iwar` matches `iWar`
but not `Siwar Phone`. Plain substring matching (Kamailio's `$ua =~ "..."`) turns a short
pattern into a false positive against some legitimate product sooner or later, and a false
positive here means a silent drop and a ban of a paying customer's phone.

All patterns compile into one regex, so a text costs one `search` whatever the list length.
The three places are the User-Agent, the From display name and the From user, in that order:
the first pattern found, searching them in turn, is the verdict. Phones repeat the same texts
on every request, so what a text contains is remembered per text: a repeat costs a compare
with the last User-Agent (a fleet shares one) and one dict look-up for the From's display
name and user, not a lower-casing and a search.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from core.sip import Request, SipParseError
from core.sip.bounded import make_room

# Distinct texts (User-Agents, display names, From users) whose finding is remembered: a
# phone's display name and user (one text when the display name is the user), and the few
# User-Agents a fleet shares, so ~4,000 busy phones of the first kind, ~2,000 of the second
# (with fewer entries than that nearly every request searched again, core/sip/bounded.py).
# The texts are the peer's: past this many the oldest eighth goes, and texts longer than
# VERDICT_KEY_LENGTH are not kept, so a source inventing new ones costs bounded memory and
# the search it would have cost anyway.
VERDICT_CACHE_SIZE: Final = 4_096
VERDICT_KEY_LENGTH: Final = 256


class ScannerMatcher:
    __slots__ = ("_apart", "_last_agent", "_last_agent_found", "_regex", "_verdicts", "patterns")

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
        # Per text searched: the pattern it contains, "" for none (so one `get` tells a
        # remembered no from an unseen text).
        self._verdicts: dict[str, str] = {}
        # Places searched one by one (`match_request`): exact unless a pattern holds a
        # newline, the character the joint search puts between them.
        self._apart = all("\n" not in pattern for pattern in cleaned)
        # The last User-Agent searched (or remembered) and what it contains.
        self._last_agent = ""
        self._last_agent_found = ""

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
        if not self._apart:
            return self._joint_verdict(request, user_agent)
        # Searched place by place, each text's finding remembered by the text alone: with
        # no pattern holding a newline, the first match in the three joined by newlines (as
        # `_joint_verdict` searches them) is the first match of the first place having one.
        if user_agent:
            # A fleet's phones share one User-Agent: the last one seen is compared (a memcmp)
            # before any look-up, which would hash the text just cut from the request.
            if user_agent == self._last_agent:
                found = self._last_agent_found
            else:
                found = self._found(user_agent)
                self._last_agent = user_agent
                self._last_agent_found = found
            if found:
                return f'user-agent "{found}"'
        try:
            sender = request.from_addr  # parsed here or by the sanity check next: once
        except SipParseError:
            return None  # the sanity check answers a broken From
        if sender is None:
            return None
        display = sender.display_name or ""
        user = sender.uri.user or ""
        # Display name then user, as one text (one look-up): its first match is the display
        # name's, else the user's. Most phones give just one of them, or the same text twice.
        if not display or display == user:
            text = user
        elif not user:
            text = display
        else:
            text = f"{display}\n{user}"
        if not text:
            return None
        found = self._found(text)
        return f'from "{found}"' if found else None

    def _found(self, text: str) -> str:
        """The pattern `text` contains as a word, "" for none: remembered per text."""
        verdicts = self._verdicts
        known = verdicts.get(text)
        if known is not None:
            return known
        found = self.match(text) or ""
        if len(text) <= VERDICT_KEY_LENGTH:
            make_room(verdicts, VERDICT_CACHE_SIZE)
            verdicts[text] = found
        return found

    def _joint_verdict(self, request: Request, user_agent: str) -> str | None:
        """The three places joined by newlines and searched as one text (not remembered):
        for patterns holding a newline, which could match across places."""
        try:
            sender = request.from_addr
        except SipParseError:
            sender = None  # the sanity check answers a broken From
        display = (sender.display_name or "") if sender else ""
        user = (sender.uri.user or "") if sender else ""
        text = f"{user_agent}\n{display}\n{user}"
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
