"""An ordered, case-insensitive header store that keeps what it was given.

RFC 3261 §7.3: header names are case-insensitive, may use a compact form, may repeat, and a
list-valued header may be split over several lines or joined with commas — all equivalent.
A proxy must forward what it does not understand intact, so the store keeps each line's
original name and value and only normalises the lookup key. Typed views (Via, CSeq, ...) are
parsed on demand and cached per name until that header changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

T = TypeVar("T")

# RFC 3261 §7.3.3 and the IANA registry of compact forms.
COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "c": "content-type",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}


# Keys of the names seen so far, so the hot path skips lower() and the compact-form lookup.
# Bounded: a peer inventing header names must not grow it without limit.
# Final, here and below: compiled, a C static rather than a module-dict look-up on every use.
_KEY_CACHE: Final[dict[str, str]] = {}
_MISSING: Final = object()  # a cache miss, as distinct from a cached None
_KEY_CACHE_LIMIT: Final = 2_048


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded."""
    key = _KEY_CACHE.get(name)
    if key is not None:
        return key
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    if len(_KEY_CACHE) < _KEY_CACHE_LIMIT:
        _KEY_CACHE[name] = key
    return key


def check_line(name: str, value: str) -> None:
    """Refuse a header that would not serialise as one line (header injection, §7.3.1).

    A parsed value never holds CR or LF; this guards values that code builds from other
    sources (a display name from the database, text from the console).
    """
    if "\n" in value or "\r" in value or "\n" in name or "\r" in name or ":" in name or not name:
        raise ValueError(f"header {name!r} would not serialise as one line")


def readable(text: str) -> str:
    """Header text with every byte that was not UTF-8 turned into U+FFFD.

    The parser keeps such bytes as lone surrogates so they go back out unchanged, but SQLite,
    log files and the console refuse lone surrogates: store and show `readable(text)`.
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def split_list(value: str) -> list[str]:
    """Split a comma-joined header value, respecting quoted strings and <URIs> (§7.3.1).

    Only the characters that change state are visited (a regex jumps between them), so a
    long value costs little more than `str.split`.
    """
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    if '"' not in value and "<" not in value:
        return [item for item in (part.strip() for part in value.split(",")) if item]
    items: list[str] = []
    for part in split_outside_quotes(value, _LIST_SPECIALS, ","):
        item = part.strip()
        if item:
            items.append(item)
    return items


def split_outside_quotes(text: str, specials: re.Pattern[str], separator: str) -> list[str]:
    """Split `text` at `separator` where it stands outside a quoted-string (§25.1), and outside
    a <URI> (§7.3.1) when `specials` matches `<` and `>`; an unterminated quote runs to the end.

    Only what `specials` matches is visited: it must match `"`, `\\` and `separator`, and
    matches `<` and `>` only where angle brackets protect a separator. Parts are not stripped.
    """
    parts: list[str] = []
    in_angle = False
    in_quote = False
    escaped_at = -1
    start = 0
    for match in specials.finditer(text):
        index = match.start()
        char = text[index]
        if in_quote:
            if index == escaped_at:
                continue
            if char == "\\":
                escaped_at = index + 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == "<":
            in_angle = True
        elif char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


_LIST_SPECIALS: Final = re.compile(r'[",<>\\]')


class Headers:
    """Header lines in order, each kept as (lookup key, name as received, value)."""

    __slots__ = ("_cache", "_lines")

    def __init__(self, lines: list[tuple[str, str]] | None = None) -> None:
        self._lines: list[tuple[str, str, str]] = []
        self._cache: dict[str, Any] = {}
        if lines:
            for name, value in lines:
                check_line(name, value)
                self._lines.append((header_key(name), name, value))

    @classmethod
    def _from_keyed(cls, lines: list[tuple[str, str, str]]) -> Headers:
        return keyed_headers(lines)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for _key, name, value in self._lines:
            yield name, value

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(line[0] == key for line in self._lines)

    def __repr__(self) -> str:
        return f"Headers({[(name, value) for _k, name, value in self._lines]!r})"

    def name_of(self, name: str) -> str | None:
        """The name as received (`l`, `Content-Length`) of the first line with this name."""
        key = header_key(name)
        for line in self._lines:
            if line[0] == key:
                return line[1]
        return None

    def copy(self) -> Headers:
        return Headers._from_keyed(list(self._lines))

    def lookup_keys(self) -> list[str]:
        """The lookup key of every line, in order (compact forms expanded, lower case), so a
        caller walking all lines need not normalise each name again."""
        return [line[0] for line in self._lines]

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first line with this name."""
        # The key cache read here first: a hit (nearly every call) skips a function call.
        key = _KEY_CACHE.get(name) or header_key(name)
        for line in self._lines:
            if line[0] == key:
                return line[2]
        return default

    def get_all(self, name: str) -> list[str]:
        """The value of every line with this name, in order."""
        key = _KEY_CACHE.get(name) or header_key(name)
        return [line[2] for line in self._lines if line[0] == key]

    def values(self, name: str) -> list[str]:
        """Every list element of a list-valued header, across lines and commas, in order."""
        key = _KEY_CACHE.get(name) or header_key(name)
        items: list[str] = []
        for line in self._lines:
            if line[0] == key:
                items.extend(split_list(line[2]))
        return items

    def count(self, name: str) -> int:
        key = header_key(name)
        return sum(1 for line in self._lines if line[0] == key)

    def cached_view(self, key: str) -> Any:
        """The view already parsed for this lookup key, or None (not parsed yet, or parsed
        to None): a hit costs a dict look-up, without building the parser `view` needs."""
        return self._cache.get(key)

    def view(self, name: str, parse: Callable[[str], T]) -> T | None:
        """The first value parsed by `parse`, cached until a line with this name changes."""
        # Typed views ask by key ("via", "cseq"), and the route asks each several times per
        # request: a hit on the name as given skips header_key. Only keys are ever cached
        # and header_key(key) == key, so a hit here is the hit header_key would find.
        cached = self._cache.get(name, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        key = header_key(name)
        if key != name:  # a key (as the views pass) was looked up just above
            cached = self._cache.get(key, _MISSING)
            if cached is not _MISSING:
                return cached  # type: ignore[no-any-return]
        # The first line's value, found here rather than by `get`, which would key it again.
        raw = next((line[2] for line in self._lines if line[0] == key), None)
        result = None if raw is None else parse(raw)
        self._cache[key] = result
        return result

    def replace_first_value(self, name: str, value: str, view: object = _MISSING) -> None:
        """Replace the first list element of a header where it stands (the top Via, stamped
        with received/rport on arrival). `view`, when given, becomes the cached parsed view,
        so the route does not parse again what it has just built."""
        check_line(name, value)
        key = header_key(name)
        for index, (line_key, line_name, line_value) in enumerate(self._lines):
            if line_key == key:
                items = split_list(line_value)
                items[:1] = [value]
                self._lines[index] = (key, line_name, ", ".join(items))
                break
        else:
            self._lines.insert(0, (key, name, value))
        if view is _MISSING:
            self._cache.pop(key, None)
        else:
            self._cache[key] = view

    def add(self, name: str, value: str) -> None:
        """Append a line at the end."""
        check_line(name, value)
        key = header_key(name)
        self._lines.append((key, name, value))
        self._cache.pop(key, None)

    def prepend(self, name: str, value: str) -> None:
        """Insert a line before the first line of this name (or at the top), as a Via push."""
        check_line(name, value)
        key = header_key(name)
        for index, line in enumerate(self._lines):
            if line[0] == key:
                self._lines.insert(index, (key, name, value))
                break
        else:
            self._lines.insert(0, (key, name, value))
        self._cache.pop(key, None)

    def set(self, name: str, value: str) -> None:
        """Replace every line of this name with one line, kept where the first one was."""
        check_line(name, value)
        key = header_key(name)
        lines = self._lines
        found = [index for index, line in enumerate(lines) if line[0] == key]
        if len(found) == 1:
            # The common case (a response's To given our tag): replaced where it stands,
            # without rebuilding the list.
            lines[found[0]] = (key, name, value)
            self._cache.pop(key, None)
            return
        new_lines: list[tuple[str, str, str]] = []
        placed = False
        for line in lines:
            if line[0] == key:
                if not placed:
                    new_lines.append((key, name, value))
                    placed = True
            else:
                new_lines.append(line)
        if not placed:
            new_lines.append((key, name, value))
        self._lines = new_lines
        self._cache.pop(key, None)

    def remove(self, name: str) -> int:
        """Remove every line of this name; returns how many went."""
        key = header_key(name)
        before = len(self._lines)
        self._lines = [line for line in self._lines if line[0] != key]
        self._cache.pop(key, None)
        return before - len(self._lines)

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first list element of a header (the top Via, the first Route).

        If the first line holds several comma-joined values only the first is removed and the
        rest stay on that line, as RFC 3261 §7.3.1 makes the two forms equivalent.
        """
        key = header_key(name)
        for index, (line_key, line_name, value) in enumerate(self._lines):
            if line_key != key:
                continue
            items = split_list(value)
            if not items:
                del self._lines[index]
                self._cache.pop(key, None)
                return None
            if len(items) == 1:
                del self._lines[index]
            else:
                self._lines[index] = (key, line_name, ", ".join(items[1:]))
            self._cache.pop(key, None)
            return items[0]
        return None

    def serialise(self) -> str:
        return "".join(f"{name}: {value}\r\n" for _key, name, value in self._lines)


def keyed_headers(lines: list[tuple[str, str, str]]) -> Headers:
    """A store holding `lines`, already keyed (the parser's, a copy's): a plain function, so a
    compiled caller reaches it by a direct call rather than a class attribute look-up."""
    headers = Headers()
    headers._lines = lines
    return headers
