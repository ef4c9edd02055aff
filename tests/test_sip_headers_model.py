"""The header store against a plain model of it: a list of (name, value) pairs.

Headers keeps parallel lists of keys, names and values and looks names up by comparing them
with the keys as given before keying them; the model below is the obvious reading of RFC
3261 §7.3 (case-insensitive names, compact forms, repeats, comma lists) with every operation
written out the slow way. Random sequences of writes and reads, on stores built by hand and
by the parser, must agree with it after every step, errors included; and every vector's
bytes out must be the ones the tuple-based store wrote (`tests/vectors/serialised.json`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.sip import Headers, Request, SipParseError, make_response, parse_message
from core.sip.headers import COMPACT_FORMS, split_list

VECTORS = Path(__file__).parent / "vectors"
GOLDEN = VECTORS / "serialised.json"
MODEL = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Full names, compact forms and case variants of the same headers, names the store has never
# seen, and names no line may have.
GOOD_NAMES = [
    "Via", "v", "VIA", "via", "Call-ID", "i", "call-id", "CALL-ID", "To", "t", "From", "f",
    "Contact", "m", "CSeq", "cseq", "Route", "route", "Max-Forwards", "Expires", "X-Foo",
    "x-foo", "Record-Route", "Content-Length", "l", "Supported", "k", "X-Ünïcode",
]  # fmt: skip
BAD_NAMES = ["", "X:Bad", "Via\r\nX-Injected", "A\nB", "C\rD"]
GOOD_VALUES = [
    "", " ", "a", "SIP/2.0/UDP h;branch=z9hG4bK1", "a, b", " a ,, b , ", '"Doe, J" <sip:j@x>, c',
    "<sip:a@x;p=1,2>, <sip:b@x>", "1 INVITE", "70", "x\udcff",
]  # fmt: skip
BAD_VALUES = ["a\r\nInjected: 1", "a\nb", "a\rb"]

names = st.sampled_from(GOOD_NAMES + BAD_NAMES)
good_names = st.sampled_from(GOOD_NAMES)
values = st.sampled_from(GOOD_VALUES + BAD_VALUES)
good_values = st.sampled_from(GOOD_VALUES)


def model_key(name: str) -> str:
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def refused(name: str, value: str) -> bool:
    return not name or any(char in name for char in "\r\n:") or "\r" in value or "\n" in value


class Model:
    """What a header store means, written the slow way, with the view cache's rules."""

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        self.lines = list(lines)
        self.views: dict[str, Any] = {}

    def _first(self, name: str) -> int:
        key = model_key(name)
        return next((i for i, (n, _) in enumerate(self.lines) if model_key(n) == key), -1)

    def _changed(self, name: str) -> None:
        self.views.pop(model_key(name), None)

    def add(self, name: str, value: str) -> None:
        self.lines.append((name, value))
        self._changed(name)

    def prepend(self, name: str, value: str) -> None:
        self.lines.insert(max(self._first(name), 0), (name, value))
        self._changed(name)

    def set(self, name: str, value: str) -> None:
        first = self._first(name)
        key = model_key(name)
        if first < 0:
            self.lines.append((name, value))
        else:
            self.lines = [
                (name, value) if i == first else line
                for i, line in enumerate(self.lines)
                if i <= first or model_key(line[0]) != key
            ]
        self._changed(name)

    def remove(self, name: str) -> int:
        key = model_key(name)
        kept = [line for line in self.lines if model_key(line[0]) != key]
        gone = len(self.lines) - len(kept)
        self.lines = kept
        self._changed(name)
        return gone

    def pop_first_value(self, name: str) -> str | None:
        first = self._first(name)
        if first < 0:
            return None
        self._changed(name)
        line_name, value = self.lines[first]
        items = split_list(value)
        if len(items) <= 1:
            del self.lines[first]
            return items[0] if items else None
        self.lines[first] = (line_name, ", ".join(items[1:]))
        return items[0]

    def replace_first_value(self, name: str, value: str, view: object) -> None:
        first = self._first(name)
        if first < 0:
            self.lines.insert(0, (name, value))
        else:
            line_name, old = self.lines[first]
            items = split_list(old)
            items[:1] = [value]
            self.lines[first] = (line_name, ", ".join(items))
        if view is None:
            self._changed(name)
        else:
            self.views[model_key(name)] = view

    def get_all(self, name: str) -> list[str]:
        key = model_key(name)
        return [value for n, value in self.lines if model_key(n) == key]

    def view(self, name: str, parse: Callable[[str], Any]) -> Any:
        key = model_key(name)
        if key not in self.views:
            first = self._first(name)
            self.views[key] = None if first < 0 else parse(self.lines[first][1])
        return self.views[key]


def check_reads(headers: Headers, model: Model) -> None:
    """Every read of the store agrees with the model, for every name in the pools."""
    assert list(headers) == model.lines
    assert len(headers) == len(model.lines)
    assert headers.lookup_keys() == [model_key(name) for name, _ in model.lines]
    assert headers.serialise() == "".join(f"{n}: {v}\r\n" for n, v in model.lines)
    assert repr(headers) == f"Headers({model.lines!r})"
    for name in GOOD_NAMES + BAD_NAMES:
        everything = model.get_all(name)
        assert headers.get_all(name) == everything, name
        assert headers.get(name) == (everything[0] if everything else None), name
        assert headers.get(name, "default") == (everything[0] if everything else "default")
        assert headers.values(name) == [item for v in everything for item in split_list(v)]
        assert headers.count(name) == len(everything)
        assert (name in headers) == bool(everything)
        first = model._first(name)
        assert headers.name_of(name) == (model.lines[first][0] if first >= 0 else None)


def check_view(
    headers: Headers, model: Model, name: str, parse: Callable[[str], str], parsed: list[str]
) -> None:
    """The view agrees with the model's, and was parsed exactly when the model parsed it
    (so a cached view is kept, and a stale one is not)."""
    model_parsed: list[str] = []
    expected = model.view(name, lambda v: (model_parsed.append(v), v.upper())[1])
    before = len(parsed)
    assert headers.view(name, parse) == expected, name
    assert parsed[before:] == model_parsed, name
    key = model_key(name)
    assert headers.cached_view(key) == model.views.get(key), key


# One write: (operation, name, value, view given to replace_first_value).
writes = st.tuples(
    st.sampled_from(["add", "prepend", "set", "remove", "pop", "replace", "copy", "view"]),
    names,
    values,
    st.sampled_from([None, "given view"]),
)


def run_writes(headers: Headers, model: Model, steps: list[tuple[str, str, str, Any]]) -> None:
    parsed: list[str] = []

    def parse(value: str) -> str:
        parsed.append(value)
        return value.upper()

    for operation, name, value, view in steps:
        if operation == "copy":
            # Continue on a copy; the original must not see what follows.
            before = list(headers)
            original = headers
            headers = headers.copy()
            model = Model(model.lines)  # a copy carries no parsed views
            headers.add("X-Copy", "1")
            model.add("X-Copy", "1")
            assert list(original) == before
        elif operation == "view":
            check_view(headers, model, name, parse, parsed)
        elif operation in ("add", "prepend", "set") or (
            operation == "replace" and refused(name, value)
        ):
            write = getattr(headers, "replace_first_value" if operation == "replace" else operation)
            if refused(name, value):
                before = list(headers)
                with pytest.raises(ValueError):
                    write(name, value)
                assert list(headers) == before
                continue
            write(name, value)
            getattr(model, operation)(name, value)
        elif operation == "replace":
            if view is None:
                headers.replace_first_value(name, value)
            else:
                headers.replace_first_value(name, value, view=view)
            model.replace_first_value(name, value, view)
        elif operation == "remove":
            assert headers.remove(name) == model.remove(name)
        else:
            assert headers.pop_first_value(name) == model.pop_first_value(name)
        check_reads(headers, model)
        # Views of a few names after every step, so a write that leaves a stale view shows.
        for probe in ("via", "To", "call-id", "x-foo", "Route", "max-forwards"):
            check_view(headers, model, probe, parse, parsed)


start_lines = st.lists(st.tuples(good_names, good_values), max_size=8)


@MODEL
@given(start_lines, st.lists(writes, max_size=25))
def test_store_built_by_hand_agrees_with_the_model(
    lines: list[tuple[str, str]], steps: list[tuple[str, str, str, Any]]
) -> None:
    headers = Headers(lines)
    model = Model(lines)
    check_reads(headers, model)
    run_writes(headers, model, steps)


# What the parser reads: names it validates (a space before the colon allowed), values it
# strips of spaces and tabs, and continuation lines joined to the line before.
parsed_names = st.sampled_from([name for name in GOOD_NAMES if name.isascii()]).filter(
    lambda name: model_key(name) != "content-length"
)
parsed_values = st.sampled_from([v for v in GOOD_VALUES if v.strip(" \t") == v and v.isascii()])
parsed_lines = st.lists(
    st.tuples(
        parsed_names,
        st.sampled_from(["", " "]),
        st.sampled_from(["", " ", "  ", "\t"]),
        parsed_values,
        st.sampled_from([None, None, None, "folded on"]),
    ),
    min_size=1,
    max_size=10,
)


@MODEL
@given(parsed_lines, st.lists(writes, max_size=15))
def test_store_built_by_the_parser_agrees_with_the_model(
    lines: list[tuple[str, str, str, str, str | None]], steps: list[tuple[str, str, str, Any]]
) -> None:
    text = "OPTIONS sip:a@pbx.test SIP/2.0\r\n"
    expected: list[tuple[str, str]] = []
    for name, before_colon, after_colon, value, folded in lines:
        text += f"{name}{before_colon}:{after_colon}{value}\r\n"
        expected.append((name, value))
        if folded is not None:
            text += f"  {folded}\r\n"
            expected[-1] = (name, f"{value} {folded}".strip())
    # Twice: the second time the parser keys the lines by the names it saw in each place.
    for _ in range(2):
        message = parse_message((text + "\r\n").encode("utf-8", "surrogateescape"))
        check_reads(message.headers, Model(expected))
    run_writes(message.headers, Model(expected), steps)


def test_lookups_by_key_and_by_other_spellings_agree() -> None:
    """A name that is its own key is compared as given; any other spelling is keyed first."""
    headers = Headers([("v", "a"), ("VIA", "b"), ("X-Foo", "c"), ("i", "d")])
    for spelling in ("via", "Via", "V", "v", "VIA"):
        assert headers.get_all(spelling) == ["a", "b"]
    assert headers.get("x-foo") == headers.get("X-FOO") == "c"
    assert headers.get("call-id") == headers.get("I") == "d"
    assert headers.get("x-missing") is None and "X-Missing" not in headers


def _serialisations(data: bytes) -> dict[str, str]:
    """Digests of the bytes a vector becomes: as parsed, and the answers built from it."""
    message = parse_message(data)
    out = {"to_bytes": hashlib.sha256(message.to_bytes()).hexdigest()}
    copied = message.headers.copy()
    copied.pop_first_value("via")
    copied.set("Max-Forwards", "69")
    copied.prepend("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKcopy")
    copied.replace_first_value("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKcopy;rport=1")
    copied.remove("contact")
    out["copy"] = hashlib.sha256(copied.serialise().encode("utf-8", "surrogateescape")).hexdigest()
    if isinstance(message, Request):
        response = make_response(message, 200, to_tag="t1", extra=[("Server", "pbxtui")])
        out["response"] = hashlib.sha256(response.to_bytes()).hexdigest()
    return out


def _vectors() -> list[Path]:
    return sorted(VECTORS.glob("*/*.sip"))


@pytest.mark.parametrize("path", _vectors(), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_vector_bytes_are_the_ones_the_tuple_store_wrote(path: Path) -> None:
    """Byte-identical output: digests written by the store before it kept parallel lists."""
    golden = json.loads(GOLDEN.read_text())
    name = f"{path.parent.name}/{path.name}"
    try:
        got = _serialisations(path.read_bytes())
    except (SipParseError, ValueError) as error:
        got = {"error": type(error).__name__}
    assert got == golden[name]


def test_every_vector_has_golden_bytes() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert sorted(golden) == [f"{p.parent.name}/{p.name}" for p in _vectors()]
    assert sum("to_bytes" in entry for entry in golden.values()) > 40
