"""The ordered, case-insensitive header store (RFC 3261 §7.3)."""

from __future__ import annotations

import pytest

from core.sip import Headers, parse_message, readable
from core.sip.headers import COMPACT_FORMS, header_key, split_list

# RFC 3261 §7.3.3 and the IANA registry: every compact form the brief names.
EXPECTED_COMPACT = {
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


def sample() -> Headers:
    return Headers(
        [
            ("Via", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"),
            ("From", "<sip:alice@example.com>;tag=1"),
            ("v", "SIP/2.0/UDP b.example.com;branch=z9hG4bK2, SIP/2.0/UDP c.example.com"),
            ("X-Unknown", ""),
            ("CALL-ID", "abc@host"),
        ]
    )


def test_compact_forms_are_complete() -> None:
    assert COMPACT_FORMS == EXPECTED_COMPACT


@pytest.mark.parametrize(("compact", "full"), sorted(EXPECTED_COMPACT.items()))
def test_compact_and_full_names_are_the_same_header(compact: str, full: str) -> None:
    headers = Headers([(compact.upper(), "one")])
    headers.add(full.title(), "two")
    assert header_key(compact) == header_key(full.upper()) == full
    assert headers.get_all(full) == ["one", "two"]
    assert headers.get_all(compact) == ["one", "two"]
    assert headers.count(compact) == 2


def test_lookup_is_case_insensitive_and_keeps_names_as_received() -> None:
    headers = sample()
    assert headers.get("call-id") == headers.get("i") == "abc@host"
    assert "CaLl-Id" in headers and "Route" not in headers and 42 not in headers
    assert [name for name, _ in headers] == ["Via", "From", "v", "X-Unknown", "CALL-ID"]
    assert headers.name_of("call-id") == "CALL-ID"
    assert headers.name_of("route") is None


def test_empty_and_unknown_headers_are_kept() -> None:
    headers = sample()
    assert headers.get("x-unknown") == ""
    assert headers.get("x-missing") is None
    assert headers.get("x-missing", "default") == "default"
    assert "X-Unknown: \r\n" in headers.serialise()


def test_values_splits_across_lines_and_commas_in_order() -> None:
    assert sample().values("via") == [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/UDP b.example.com;branch=z9hG4bK2",
        "SIP/2.0/UDP c.example.com",
    ]
    assert sample().values("route") == []


def test_add_prepend_set_remove() -> None:
    headers = sample()
    headers.prepend("Via", "SIP/2.0/TCP top.example.com;branch=z9hG4bK0")
    assert next(iter(headers)) == ("Via", "SIP/2.0/TCP top.example.com;branch=z9hG4bK0")
    headers.prepend("Route", "<sip:p.example.com;lr>")
    assert next(iter(headers))[0] == "Route"
    headers.set("v", "SIP/2.0/UDP only.example.com")
    assert headers.get_all("via") == ["SIP/2.0/UDP only.example.com"]
    assert [name for name, _ in headers][:3] == ["Route", "v", "From"]  # kept the first's place
    headers.set("Max-Forwards", "70")
    assert list(headers)[-1] == ("Max-Forwards", "70")
    assert headers.remove("VIA") == 1 and headers.remove("via") == 0
    headers.add("Route", "<sip:q.example.com;lr>")
    assert headers.get_all("route") == ["<sip:p.example.com;lr>", "<sip:q.example.com;lr>"]


def test_pop_first_value() -> None:
    headers = sample()
    assert headers.pop_first_value("via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert headers.pop_first_value("via") == "SIP/2.0/UDP b.example.com;branch=z9hG4bK2"
    assert headers.get_all("via") == ["SIP/2.0/UDP c.example.com"]
    assert headers.pop_first_value("via") == "SIP/2.0/UDP c.example.com"
    assert headers.pop_first_value("via") is None
    empty = Headers([("Route", " "), ("Route", "<sip:x>")])
    assert empty.pop_first_value("route") is None and empty.get_all("route") == ["<sip:x>"]


def test_copy_is_independent() -> None:
    headers = sample()
    copied = headers.copy()
    copied.add("X-New", "1")
    copied.remove("from")
    assert "X-New" not in headers and "From" in headers
    assert len(headers) == 5 and len(copied) == 5


def test_serialise_in_order_with_names_as_received() -> None:
    assert Headers([("v", "x"), ("Call-ID", "y")]).serialise() == "v: x\r\nCall-ID: y\r\n"
    assert repr(Headers([("a", "b")])) == "Headers([('a', 'b')])"


def test_view_is_cached_until_that_header_changes() -> None:
    headers = sample()
    calls: list[str] = []

    def parse(value: str) -> str:
        calls.append(value)
        return value.upper()

    assert headers.view("i", parse) == "ABC@HOST"
    assert headers.view("Call-ID", parse) == "ABC@HOST"
    assert calls == ["abc@host"]
    headers.add("From", "<sip:other@example.com>")  # a different header: cache stays
    assert headers.view("call-id", parse) == "ABC@HOST" and len(calls) == 1
    for change in (
        lambda: headers.set("call-id", "new@host"),
        lambda: headers.prepend("i", "top@host"),
        lambda: headers.remove("call-id") and headers.add("Call-ID", "again@host"),
    ):
        change()
        assert headers.view("call-id", parse) == (headers.get("call-id") or "").upper()
    assert len(calls) == 4
    assert headers.view("x-missing", parse) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Evil", "a\r\nInjected: yes"),
        ("X-Evil", "a\nb"),
        ("X-Evil", "a\rb"),
        ("X-Evil\r\nInjected", "yes"),
        ("X:Evil", "yes"),
        ("", "empty name"),
    ],
)
def test_lines_that_would_not_serialise_as_one_line_are_refused(name: str, value: str) -> None:
    headers = Headers()
    for write in (headers.add, headers.prepend, headers.set):
        with pytest.raises(ValueError):
            write(name, value)
    with pytest.raises(ValueError):
        Headers([(name, value)])
    assert len(headers) == 0


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("", []),
        ("  ", []),
        ("a", ["a"]),
        ("a, b ,c", ["a", "b", "c"]),
        ("a,,b,", ["a", "b"]),
        ('"Doe, John" <sip:j@x>, <sip:k@x>', ['"Doe, John" <sip:j@x>', "<sip:k@x>"]),
        ("<sip:a@x;p=1,2>, <sip:b@x>", ["<sip:a@x;p=1,2>", "<sip:b@x>"]),
        ('"a \\", b" <sip:a@x>, c', ['"a \\", b" <sip:a@x>', "c"]),
        ('"a \\\\", b', ['"a \\\\"', "b"]),
        ('<sip:a@x>;m="INVITE,ACK", <sip:b@x>', ['<sip:a@x>;m="INVITE,ACK"', "<sip:b@x>"]),
        ('"unterminated, quote', ['"unterminated, quote']),
    ],
)
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


def test_readable_turns_undecodable_bytes_into_replacement_characters() -> None:
    """What SQLite and the console accept, from header text that was not UTF-8."""
    message = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nUser-Agent: M\xfcller \xc3\xa9\r\n\r\n")
    user_agent = message.user_agent or ""
    assert user_agent == "M\udcfcller é"
    with pytest.raises(UnicodeEncodeError):
        user_agent.encode("utf-8")
    assert readable(user_agent) == "M\ufffdller é"
    assert readable(user_agent).encode("utf-8") == b"M\xef\xbf\xbdller \xc3\xa9"
    assert readable("plain ascii") == "plain ascii"


def test_replace_first_value_keeps_position_and_rest_of_line() -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("Via", "SIP/2.0/UDP c;branch=z9hG4bK3"),
        ]
    )
    headers.replace_first_value("via", "SIP/2.0/UDP a;branch=z9hG4bK1;received=1.2.3.4")
    assert headers.values("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1;received=1.2.3.4",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]


def test_replace_first_value_sets_the_cached_view() -> None:
    headers = Headers([("Via", "SIP/2.0/UDP a;branch=z9hG4bK1")])
    assert headers.view("via", len) == len("SIP/2.0/UDP a;branch=z9hG4bK1")
    headers.replace_first_value("Via", "SIP/2.0/UDP b;branch=z9hG4bK1", view="parsed")
    assert headers.view("via", len) == "parsed"
    headers.replace_first_value("Via", "SIP/2.0/UDP c;branch=z9hG4bK1")
    assert headers.view("via", len) == len("SIP/2.0/UDP c;branch=z9hG4bK1")
