"""An ordered, case-insensitive header store that keeps what it was given.

RFC 3261 §7.3: header names are case-insensitive, may use a compact form, may repeat, and a
list-valued header may be split over several lines or joined with commas — all equivalent.
A proxy must forward what it does not understand intact, so the store keeps each line's
original name and value and only normalises the lookup key. Typed views (Via, CSeq, ...) are
parsed on demand and cached per name until that header changes.
"""

from __future__ import annotations

import re
import sys
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
_NOT_A_SLOT: Final = object()
# What Headers._parts writes the names and values between.
_LINE_PARTS: Final[list[str]] = [
    "",
    ": ",
    "",
    "\r\n",
]  # Headers._slot of a key without a slot of its own
_KEY_CACHE_LIMIT: Final = 2_048


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact form expanded.

    Keys are interned, as compiled string literals are: a key a caller writes ("call-id")
    is then the very object the store holds, and comparing them stops at the identity check.
    header_key(key) == key for every key (lower() is idempotent and no full name is a
    compact form), which the store's look-ups by key rely on.
    """
    key = _KEY_CACHE.get(name)
    if key is not None:
        return key
    lowered = name.lower()
    key = sys.intern(COMPACT_FORMS.get(lowered, lowered))
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


# The lookup keys whose views have a slot of their own in every store (Headers.via_view,
# ...): the views every request reads, several times each, reached as an attribute rather
# than by a look-up keyed by name. Any other key's view goes in the store's dict.
SLOT_KEYS: Final[tuple[str, ...]] = ("via", "cseq", "from", "to", "max-forwards")


class Headers:
    """Header lines in order, each kept as lookup key, name as received and value.

    The three are parallel lists rather than one list of (key, name, value) tuples: a look-up
    walks the keys alone, comparing one string per line, where a compiled walk over tuples
    checked and counted references to all three items of each; and a parsed message costs
    three lists instead of a tuple per line. Every change keeps the three the same length.
    """

    __slots__ = (
        "_cache",
        "_keys",
        "_names",
        "_values",
        "cseq_view",
        "from_view",
        "max_forwards_view",
        "to_view",
        "via_view",
    )

    def __init__(
        self,
        lines: list[tuple[str, str]] | None = None,
        *,
        keys: list[str] | None = None,
        names: list[str] | None = None,
        values: list[str] | None = None,
    ) -> None:
        # keys/names/values: parallel lists already checked and keyed, taken as they are
        # (column_headers' way in), so a parsed message's store is not first given three
        # empty lists only to drop them.
        self._keys: list[str] = [] if keys is None else keys
        self._names: list[str] = [] if names is None else names
        self._values: list[str] = [] if values is None else values
        # The views of SLOT_KEYS, _MISSING until parsed (a header absent is kept as None):
        # core/sip/message.py reads and writes these attributes directly. Dropped (back to
        # _MISSING) by _forget, exactly where a line of that key changes.
        self.via_view: Any = _MISSING
        self.cseq_view: Any = _MISSING
        self.from_view: Any = _MISSING
        self.to_view: Any = _MISSING
        self.max_forwards_view: Any = _MISSING
        # The views of other keys parsed so far, by key; made on the first one, as most
        # stores (our own answers, copies) are never asked for one.
        self._cache: dict[str, Any] | None = None
        if lines:
            for name, value in lines:
                check_line(name, value)
                self._keys.append(header_key(name))
                self._names.append(name)
                self._values.append(value)

    @classmethod
    def _from_keyed(cls, lines: list[tuple[str, str, str]]) -> Headers:
        return keyed_headers(lines)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return zip(self._names, self._values, strict=True)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._find(name) >= 0

    def __repr__(self) -> str:
        return f"Headers({list(zip(self._names, self._values, strict=True))!r})"

    def _index(self, key: str) -> int:
        """Where the first line with this lookup key stands, or -1."""
        for index, line_key in enumerate(self._keys):
            if line_key == key:
                return index
        return -1

    def _find(self, name: str) -> int:
        """Where the first line with this name stands, or -1.

        The name is first compared with the keys as given: the route asks by key ("via",
        "call-id"), which then costs no header_key look-up. That is exact: a name equal to
        a stored key has that key (header_key(key) == key), and a name that is not its own
        key ("Call-ID", "i") equals no stored key, so it is keyed and looked for again.
        """
        keys = self._keys
        for index, line_key in enumerate(keys):
            if line_key == name:
                return index
        key = _KEY_CACHE.get(name) or header_key(name)
        if key == name:
            return -1
        for index, line_key in enumerate(keys):
            if line_key == key:
                return index
        return -1

    def name_of(self, name: str) -> str | None:
        """The name as received (`l`, `Content-Length`) of the first line with this name."""
        index = self._find(name)
        return None if index < 0 else self._names[index]

    def copy(self) -> Headers:
        return column_headers(self._keys.copy(), self._names.copy(), self._values.copy())

    def lookup_keys(self) -> list[str]:
        """The lookup key of every line, in order (compact forms expanded, lower case), so a
        caller walking all lines need not normalise each name again."""
        return self._keys.copy()

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first line with this name."""
        # _find written out: the route asks for a value a dozen times a message.
        keys = self._keys
        for index, line_key in enumerate(keys):
            if line_key == name:
                return self._values[index]
        key = _KEY_CACHE.get(name) or header_key(name)
        if key != name:
            for index, line_key in enumerate(keys):
                if line_key == key:
                    return self._values[index]
        return default

    def get_all(self, name: str) -> list[str]:
        """The value of every line with this name, in order."""
        first = self._find(name)
        if first < 0:
            return []
        keys = self._keys
        values = self._values
        key = keys[first]
        found = [values[first]]
        for index in range(first + 1, len(keys)):
            if keys[index] == key:
                found.append(values[index])
        return found

    def values(self, name: str) -> list[str]:
        """Every list element of a list-valued header, across lines and commas, in order."""
        first = self._find(name)
        if first < 0:
            return []
        keys = self._keys
        values = self._values
        key = keys[first]
        items = split_list(values[first])
        for index in range(first + 1, len(keys)):
            if keys[index] == key:
                items.extend(split_list(values[index]))
        return items

    def count(self, name: str) -> int:
        return self._keys.count(header_key(name))

    def cached_view(self, key: str) -> Any:
        """The view already parsed for this lookup key, or None (not parsed yet, or parsed
        to None): a hit costs a dict look-up, without building the parser `view` needs."""
        cached = self._slot(key)
        if cached is _NOT_A_SLOT:
            cache = self._cache
            if cache is None:
                return None
            cached = cache.get(key, _MISSING)
        return None if cached is _MISSING else cached

    def _slot(self, key: str) -> Any:
        """The slot of this lookup key as it stands (_MISSING if not parsed yet), or
        _NOT_A_SLOT for a key without a slot."""
        if key == "via":
            return self.via_view
        if key == "cseq":
            return self.cseq_view
        if key == "from":
            return self.from_view
        if key == "to":
            return self.to_view
        if key == "max-forwards":
            return self.max_forwards_view
        return _NOT_A_SLOT

    def keep_view(self, key: str, view: object) -> None:
        """Cache `view` as the parsed view of lookup key `key`, as `view` would after
        parsing. The typed views of core/sip/message.py write the slots of SLOT_KEYS
        directly; this is for every other key (and for callers outside this package)."""
        if key == "via":
            self.via_view = view
        elif key == "cseq":
            self.cseq_view = view
        elif key == "from":
            self.from_view = view
        elif key == "to":
            self.to_view = view
        elif key == "max-forwards":
            self.max_forwards_view = view
        else:
            cache = self._cache
            if cache is None:
                cache = self._cache = {}
            cache[key] = view

    def view(self, name: str, parse: Callable[[str], T]) -> T | None:
        """The first value parsed by `parse`, cached until a line with this name changes."""
        # Typed views ask by key ("via", "cseq"): a hit on the name as given skips
        # header_key. Only keys are ever cached and header_key(key) == key, so a hit here
        # is the hit header_key would find.
        cached = self._cached(name)
        if cached is not _MISSING:
            return cached  # type: ignore[no-any-return]
        index = self._find(name)
        key = header_key(name) if index < 0 else self._keys[index]
        if key != name:  # a key (as the views pass) was looked up just above
            cached = self._cached(key)
            if cached is not _MISSING:
                return cached  # type: ignore[no-any-return]
        result = None if index < 0 else parse(self._values[index])
        self.keep_view(key, result)
        return result

    def _cached(self, name: str) -> Any:
        """The view cached under `name` (slot or dict), or _MISSING."""
        cached = self._slot(name)
        if cached is _NOT_A_SLOT:
            cache = self._cache
            return _MISSING if cache is None else cache.get(name, _MISSING)
        return cached

    def replace_first_value(self, name: str, value: str, view: object = _MISSING) -> None:
        """Replace the first list element of a header where it stands (the top Via, stamped
        with received/rport on arrival). `view`, when given, becomes the cached parsed view,
        so the route does not parse again what it has just built."""
        key = header_key(name)
        index = self._index(key)
        if index < 0:
            check_line(name, value)
            self._keys.insert(0, key)
            self._names.insert(0, name)
            self._values.insert(0, value)
        else:
            # The name is not written (the line keeps its own): only the value is checked.
            if "\n" in value or "\r" in value:
                check_line(name, value)
            old = self._values[index]
            if "," in old:
                # Several elements on the line: the rest stay, rejoined as values() reads them.
                items = split_list(old)
                items[:1] = [value]
                self._values[index] = ", ".join(items)
            else:
                # One element (or none): what splitting and joining would give, without either.
                self._values[index] = value
        if view is _MISSING:
            self._forget(key)
        else:
            self.keep_view(key, view)

    def _forget(self, key: str) -> None:
        """Drop the cached view of this key: a line of it changed."""
        if key == "via":
            self.via_view = _MISSING
        elif key == "cseq":
            self.cseq_view = _MISSING
        elif key == "from":
            self.from_view = _MISSING
        elif key == "to":
            self.to_view = _MISSING
        elif key == "max-forwards":
            self.max_forwards_view = _MISSING
        else:
            cache = self._cache
            if cache is not None:
                cache.pop(key, None)

    def add(self, name: str, value: str) -> None:
        """Append a line at the end."""
        check_line(name, value)
        key = header_key(name)
        self._keys.append(key)
        self._names.append(name)
        self._values.append(value)
        self._forget(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert a line before the first line of this name (or at the top), as a Via push."""
        check_line(name, value)
        key = header_key(name)
        index = max(self._index(key), 0)
        self._keys.insert(index, key)
        self._names.insert(index, name)
        self._values.insert(index, value)
        self._forget(key)

    def set(self, name: str, value: str) -> None:
        """Replace every line of this name with one line, kept where the first one was."""
        check_line(name, value)
        key = header_key(name)
        keys = self._keys
        first = self._index(key)
        if first < 0:
            keys.append(key)
            self._names.append(name)
            self._values.append(value)
        else:
            # Replaced where it stands (the common case: a response's To given our tag);
            # any later line of this name goes.
            keys[first] = key
            self._names[first] = name
            self._values[first] = value
            if keys.count(key) > 1:
                self._drop(key, first + 1)
        self._forget(key)

    def remove(self, name: str) -> int:
        """Remove every line of this name; returns how many went."""
        key = header_key(name)
        self._forget(key)
        first = self._index(key)
        return 0 if first < 0 else self._drop(key, first)

    def _drop(self, key: str, start: int) -> int:
        """Remove the lines with this lookup key from `start` on; returns how many went."""
        keys = self._keys
        names = self._names
        values = self._values
        kept_keys = keys[:start]
        kept_names = names[:start]
        kept_values = values[:start]
        for index in range(start, len(keys)):
            line_key = keys[index]
            if line_key != key:
                kept_keys.append(line_key)
                kept_names.append(names[index])
                kept_values.append(values[index])
        gone = len(keys) - len(kept_keys)
        self._keys = kept_keys
        self._names = kept_names
        self._values = kept_values
        return gone

    def pop_first_value(self, name: str) -> str | None:
        """Remove the first list element of a header (the top Via, the first Route).

        If the first line holds several comma-joined values only the first is removed and the
        rest stay on that line, as RFC 3261 §7.3.1 makes the two forms equivalent.
        """
        key = header_key(name)
        index = self._index(key)
        if index < 0:
            return None
        self._forget(key)
        items = split_list(self._values[index])
        if len(items) <= 1:
            del self._keys[index]
            del self._names[index]
            del self._values[index]
            return items[0] if items else None
        self._values[index] = ", ".join(items[1:])
        return items[0]

    def serialise(self) -> str:
        """Every line as `Name: value` CRLF, in order."""
        return "".join(self._parts())

    def head(self, start_line: str) -> str:
        """A message head: `start_line`, every line, and the blank line that ends it, as
        start_line + CRLF + serialise() + CRLF, built by one join."""
        parts = self._parts()
        parts.insert(0, start_line + "\r\n")
        parts.append("\r\n")
        return "".join(parts)

    def _parts(self) -> list[str]:
        """The pieces of the lines, name, ": ", value, CRLF after one another, for one join.

        Made by repeating the separators and writing the names and values over every fourth
        item (two C loops), where building a `Name: value` string per line allocated (and
        then freed) one string per line only to copy it again into the join."""
        parts = _LINE_PARTS * len(self._names)
        parts[0::4] = self._names
        parts[2::4] = self._values
        return parts

    def state_length(self, length: str) -> None:
        """Make the store say Content-Length `length` once (§20.14), as `Message.to_bytes`
        sends it: a store already saying so exactly is left as it is (`l: 0` stays
        compact), one without the line gets `Content-Length` at the end, and any other has
        its lines replaced by one, under the first one's name, where the first one stood."""
        keys = self._keys
        index = self._index("content-length")
        if index < 0:
            keys.append("content-length")
            self._names.append("Content-Length")
            self._values.append(length)
            self._forget("content-length")
        elif self._values[index] != length or keys.count("content-length") > 1:
            self.set(self._names[index], length)


def column_headers(keys: list[str], names: list[str], values: list[str]) -> Headers:
    """A store holding these lines, given as parallel lists of lookup keys (as header_key
    gives them), names and values, already checked (the parser's, a copy's): taken, not
    copied. A plain function, so a compiled caller reaches it by a direct call."""
    return Headers(keys=keys, names=names, values=values)


def keyed_headers(lines: list[tuple[str, str, str]]) -> Headers:
    """A store holding `lines`, already checked and keyed as (key, name, value)."""
    return column_headers(
        [line[0] for line in lines], [line[1] for line in lines], [line[2] for line in lines]
    )
