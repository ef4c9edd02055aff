"""The typed views kept in the store's own attributes, and the one-join serialisation.

The views every request reads (Via, CSeq, From, To, Max-Forwards) are cached in attributes
of the header store rather than a dict keyed by name, dropped wherever a line of that
header changes. After any sequence of writes, every view must equal the view of a fresh
parse of the message as it now stands, errors included. And `to_bytes` must give exactly
the bytes the per-line f-string serialisation gave, over generated messages with compact
forms, repeated and comma-joined headers, bodies and non-UTF-8 bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.sip import Headers, Request, Response, SipParseError, parse_message, parse_uri
from core.sip.headers import header_key
from core.sip.message import Message, answer_tail, keyed_lines

CHECKS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = [
    "Via", "v", "VIA", "CSeq", "cseq", "From", "f", "To", "t", "Max-Forwards", "max-forwards",
    "Call-ID", "i", "Contact", "m", "Expires", "Route", "Content-Length", "l", "X-Foo",
    "Subject", "s", "X-Ünïcode",
]  # fmt: skip
VALUES = {
    "via": [
        "SIP/2.0/UDP a.example;branch=z9hG4bK1",
        "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK2;rport, SIP/2.0/TCP b;branch=z9hG4bK3",
        "garbage",
    ],
    "cseq": ["1 INVITE", "314159 REGISTER", "x INVITE"],
    "from": ['"Ä Doe" <sip:a@x>;tag=1', "<sip:b@y>", "sip:c@z;tag=9", "<sip:broken"],
    "to": ["<sip:b@y>;tag=abc", "Bob <sip:bob@b>", "sip:x@y"],
    "max-forwards": ["70", "0", "abc"],
}
OTHER_VALUES = ["", "a", "a, b", '"Doe, J" <sip:j@x>, c', "x\udcff", "70", "Jörg"]

names = st.sampled_from(NAMES)


def _values_for(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(VALUES.get(header_key(name), OTHER_VALUES))


lines = names.flatmap(lambda name: st.tuples(st.just(name), _values_for(name)))
writes = st.tuples(
    st.sampled_from(["add", "prepend", "set", "remove", "pop", "replace", "replace_view"]),
    lines,
)


def _views(message: Message) -> dict[str, Any]:
    """Every hot view of `message`, or the error it raises."""
    out: dict[str, Any] = {}
    for view in ("vias", "top_via", "cseq", "from_addr", "to_addr", "from_tag", "to_tag"):
        try:
            out[view] = getattr(message, view)
        except SipParseError as error:
            out[view] = ("error", error.reason)
    for view in ("max_forwards", "call_id", "expires"):
        try:
            out[view] = getattr(message, view)
        except SipParseError as error:
            out[view] = ("error", error.reason)
    return out


def _fresh(message: Request) -> Request:
    """The message as it now stands, parsed again from a new store of its lines."""
    return Request(message.method, message.uri, Headers(list(message.headers)), message.body)


def _write(headers: Headers, operation: str, name: str, value: str) -> None:
    if operation == "add":
        headers.add(name, value)
    elif operation == "prepend":
        headers.prepend(name, value)
    elif operation == "set":
        headers.set(name, value)
    elif operation == "remove":
        headers.remove(name)
    elif operation == "pop":
        headers.pop_first_value(name)
    elif operation == "replace":
        headers.replace_first_value(name, value)
    else:
        # The route's way (stamp_via): the Via list built for the value written, handed to
        # the store as its view; here the list a fresh parse of the result gives.
        after = headers.copy()
        after.replace_first_value(name, value)
        try:
            view: object = Request("OPTIONS", parse_uri("sip:x"), after).vias
        except SipParseError:
            headers.replace_first_value(name, value)
            return
        if header_key(name) == "via":
            headers.replace_first_value(name, value, view=view)
        else:
            headers.replace_first_value(name, value)


@CHECKS
@given(st.lists(lines, max_size=10), st.lists(writes, max_size=12))
def test_views_after_every_write_equal_a_fresh_parse(
    start: list[tuple[str, str]], steps: list[tuple[str, tuple[str, str]]]
) -> None:
    request = Request("OPTIONS", parse_uri("sip:a@pbx.test"), Headers(start))
    assert _views(request) == _views(_fresh(request))
    for operation, (name, value) in steps:
        _views(request)  # every view cached (or failing) before the write
        _write(request.headers, operation, name, value)
        assert _views(request) == _views(_fresh(request)), (operation, name, value)
        assert _views(request) == _views(_fresh(request))  # and again, from the cache


def test_a_view_of_an_absent_header_is_cached_until_the_header_arrives() -> None:
    request = Request("OPTIONS", parse_uri("sip:x"), Headers())
    assert request.cseq is None and request.max_forwards is None and request.top_via is None
    assert request.headers.cseq_view is None  # cached as absent
    request.headers.add("CSeq", "2 OPTIONS")
    request.headers.add("Max-Forwards", "69")
    request.headers.add("v", "SIP/2.0/UDP h;branch=z9hG4bK9")
    assert request.cseq is not None and request.cseq.number == 2
    assert request.max_forwards == 69
    assert request.top_via is not None and request.top_via.branch == "z9hG4bK9"


def test_generic_view_calls_share_the_slots() -> None:
    """Headers.view/keep_view/cached_view of a slot key read and write the same slot the
    typed views use; other keys use the dict, by key whatever the spelling asked."""
    headers = Headers([("Via", "SIP/2.0/UDP h;branch=z9hG4bK1"), ("X-Foo", "a")])
    request = Request("OPTIONS", parse_uri("sip:x"), headers)
    marker: list[object] = []
    assert headers.view("via", lambda _value: marker) is marker
    assert request._cached_vias() is marker and headers.cached_view("via") is marker
    headers.keep_view("cseq", "kept")
    assert headers.cseq_view == "kept" and headers.view("cseq", len) == "kept"
    assert headers.view("X-FOO", str.upper) == "A" and headers.cached_view("x-foo") == "A"
    headers.set("x-foo", "b")
    assert headers.cached_view("x-foo") is None and headers.view("x-foo", str.upper) == "B"
    headers.prepend("v", "SIP/2.0/UDP top;branch=z9hG4bK0")
    assert headers.cached_view("via") is None
    assert [via.host for via in request.vias] == ["top", "h"]


def _old_to_bytes(message: Message) -> bytes:
    """to_bytes as it was written before: Content-Length stated by get_all/add/set, then a
    `Name: value` f-string per line, joined, between the start line and the blank line."""
    headers = message.headers
    length = str(len(message.body))
    present = headers.get_all("content-length")
    if not present:
        headers.add("Content-Length", length)
    elif present != [length]:
        headers.set(headers.name_of("content-length") or "Content-Length", length)
    text = "".join(f"{name}: {value}\r\n" for name, value in headers)
    head = message.start_line() + "\r\n" + text + "\r\n"
    return head.encode("utf-8", "surrogateescape") + message.body


bodies = st.sampled_from([b"", b"v=0\r\n", b"\xff\xfe binary \x00", "Grüße".encode()])
length_lines = st.lists(
    st.tuples(
        st.sampled_from(["Content-Length", "l", "content-length"]),
        st.sampled_from(["0", "5", "12", " 7"]),
    ),
    max_size=3,
)


@CHECKS
@given(st.lists(lines, max_size=12), length_lines, bodies, st.booleans(), st.integers(0, 20))
def test_to_bytes_equals_the_old_serialisation(
    start: list[tuple[str, str]],
    lengths: list[tuple[str, str]],
    body: bytes,
    response: bool,
    at: int,
) -> None:
    mixed = list(start)
    for line in lengths:
        mixed.insert(min(at, len(mixed)), line)
    message: Message
    twin: Message
    if response:
        message = Response(200, "OK ü", Headers(mixed), body)
        twin = Response(200, "OK ü", Headers(mixed), body)
    else:
        message = Request("MESSAGE", parse_uri("sip:ü@x"), Headers(mixed), body)
        twin = Request("MESSAGE", parse_uri("sip:ü@x"), Headers(mixed), body)
    assert message.to_bytes() == _old_to_bytes(twin)
    assert list(message.headers) == list(twin.headers)  # the same Content-Length left
    assert message.headers.serialise() == "".join(f"{n}: {v}\r\n" for n, v in twin.headers)
    # And a parsed message sent on as it came (the relay's case), twice.
    wire = message.to_bytes()
    try:
        parsed = parse_message(wire)
    except SipParseError:
        return  # a name the parser refuses (not a token: X-Ünïcode)
    again = parse_message(wire)
    assert parsed.to_bytes() == _old_to_bytes(again) == wire


def test_answer_tail_is_what_the_old_serialisation_wrote() -> None:
    keyed = keyed_lines([("Server", "pbxtui"), ("Allow", "INVITE, ACK"), ("l", "3")])
    old = Headers([("Server", "pbxtui"), ("Allow", "INVITE, ACK"), ("l", "0")])
    assert answer_tail(keyed) == "".join(f"{n}: {v}\r\n" for n, v in old) + "\r\n"
    assert answer_tail([]) == "Content-Length: 0\r\n\r\n"


def test_an_empty_store_serialises_to_nothing() -> None:
    assert Headers().serialise() == ""
    assert Headers().head("SIP/2.0 200 OK") == "SIP/2.0 200 OK\r\n\r\n"
