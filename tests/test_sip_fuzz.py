"""Nothing but SipParseError may come out of the SIP layer, whatever bytes arrive.

The route has exactly one `except SipParseError` around parsing and around every typed view;
any other exception would escape into the transport and drop the datagram or the connection
silently. These properties mutate the real-world vectors (byte flips, truncations, insertions,
header duplication, random unicode) and also throw arbitrary bytes and text at every entry
point, then call every typed view on whatever parsed. A message that parses must also survive
serialisation: parse → to_bytes → parse gives the same start line, headers and body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.sip import (
    NameAddr,
    Request,
    Response,
    SipParseError,
    SipUri,
    Via,
    make_response,
    parse_auth,
    parse_contacts,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from core.sip.fields import (
    parse_content_length,
    parse_cseq,
    parse_expires,
    parse_max_forwards,
)
from core.sip.framing import KeepAlive, StreamFramer
from core.sip.hostport import parse_hostport
from core.sip.uri import parse_params

VECTORS = Path(__file__).parent / "vectors"
CORPUS = sorted(path.read_bytes() for path in VECTORS.rglob("*.sip"))
FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T = TypeVar("T")
AUTH_HEADERS = ("authorization", "proxy-authorization", "www-authenticate", "proxy-authenticate")
ADDRESS_HEADERS = ("route", "record-route", "p-asserted-identity", "diversion", "reply-to")


def exercise_address(address: NameAddr) -> None:
    """Touch everything a NameAddr and its URI offer; only `expires` may raise."""
    assert isinstance(str(address), str) and isinstance(hash(address), int)
    assert address.tag is None or isinstance(address.tag, str)
    assert address.display_name is None or isinstance(address.display_name, str)
    assert address.param("EXPIRES") == address.params.get("expires")
    with contextlib.suppress(SipParseError):
        expires = address.expires
        assert expires is None or 0 <= expires < 2**32
    uri = address.uri
    assert isinstance(str(uri), str) and isinstance(hash(uri), int)
    assert uri.user is None or isinstance(uri.user, str)
    if isinstance(uri, SipUri):
        assert uri.aor.startswith("sip:")
        assert uri.aor.encode("utf-8")  # every string must encode cleanly
        assert uri.hostport and uri.secure == (uri.scheme == "sips")
        assert uri.transport is None or uri.transport == uri.transport.lower()
        moved = uri.replace(port=5070)
        assert parse_uri(str(moved)).port == 5070  # type: ignore[union-attr]


def exercise_via(via: Via) -> None:
    assert isinstance(str(via), str) and isinstance(hash(via), int)
    assert parse_via(str(via)) == via
    assert via.rport is None or 0 < via.rport < 65536
    assert via.ttl is None or 0 <= via.ttl <= 255
    assert via.wants_rport == ("rport" in via.params)
    assert via.sent_by == (via.host, via.port)
    assert via.is_rfc3261_branch == (via.branch or "").startswith("z9hG4bK")
    assert (via.received, via.maddr) == (via.params.get("received"), via.params.get("maddr"))
    filled = via.with_params(received="192.0.2.1", rport="5060")
    assert parse_via(str(filled)).rport == 5060


def exercise_views(message: Request | Response, *, partial: bool = False) -> None:
    """Call every typed view; each may raise SipParseError and nothing else.

    Only the view itself sits inside the `except`: what it returned is then checked outside
    it, so a printed-from-parts value that fails to parse again is a failure, not masked.
    """

    def view(read: Callable[[], T]) -> T | None:
        try:
            return read()
        except SipParseError as error:
            assert isinstance(error.status, int) and isinstance(error.reason, str)
            return None

    view(lambda: message.call_id)
    view(lambda: message.cseq)
    view(lambda: message.expires)
    view(lambda: message.max_forwards)
    view(lambda: message.user_agent)
    for via in view(lambda: message.vias) or []:
        exercise_via(via)
    view(lambda: message.top_via)
    for address in (view(lambda: message.from_addr), view(lambda: message.to_addr)):
        if address is not None:
            exercise_address(address)
    view(lambda: message.from_tag)
    view(lambda: message.to_tag)
    for contact in view(lambda: message.contacts) or []:
        exercise_address(contact)
    for name in AUTH_HEADERS:
        for value in message.headers.get_all(name):
            auth = view(lambda value=value: parse_auth(value))
            if auth is not None:
                assert auth.get("realm") == auth.params.get("realm")
    for name in ADDRESS_HEADERS:
        for value in message.headers.values(name):
            address = view(lambda value=value: parse_name_addr(value))
            if address is not None:
                exercise_address(address)
    if isinstance(message, Request):
        if not partial:  # a partial request's Request-URI may be the one that failed
            assert parse_uri(str(message.uri)) == message.uri
        initial = view(lambda: message.is_initial)
        assert initial is None or initial == (message.to_tag is None)
        request_to = view(lambda: message.to_addr)
        for status, tag in ((100, None), (200, "abc123"), (400, "x")):
            response = make_response(message, status, to_tag=tag)
            reparsed = parse_message(response.to_bytes())
            assert isinstance(reparsed, Response)
            assert reparsed.status == status
            # §8.2.6.2: the Vias as they came, in order; a To-tag added only when missing.
            assert reparsed.headers.get_all("via") == message.headers.get_all("via")
            assert reparsed.call_id == message.call_id
            if request_to is not None:
                assert reparsed.to_tag == (request_to.tag or tag)
    else:
        assert message.is_final != message.is_provisional


def headers_without_length(message: Request | Response) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in message.headers
        if name.lower() not in ("content-length", "l")
    ]


def assert_round_trip(message: Request | Response) -> None:
    """parse → to_bytes → parse keeps start line, headers and body; Content-Length is rewritten."""
    start_line = message.start_line()
    headers = headers_without_length(message)
    body = message.body
    wire = message.to_bytes()
    again = parse_message(wire)
    assert again.start_line() == start_line
    assert headers_without_length(again) == headers
    assert again.body == body
    assert again.headers.get("content-length") == str(len(body))
    assert parse_message(wire, stream=True).body == body
    assert again.to_bytes() == wire


def check_message_bytes(data: bytes) -> None:
    """Parse as a datagram and as a framed stream message; views and round trip on success."""
    for stream in (False, True):
        try:
            message = parse_message(data, stream=stream)
        except SipParseError as error:
            assert isinstance(error.status, int) and 400 <= error.status < 600
            assert error.reason
            if error.partial is not None:
                exercise_views(error.partial, partial=True)
            continue
        exercise_views(message)
        assert_round_trip(message)


# Hypothesis leans towards the first entries: the in-line mutations come first.
MUTATIONS = ("flip", "insert", "unicode", "delete", "duplicate", "swap", "anywhere", "truncate")


@st.composite
def mutated_vector(draw: st.DrawFn) -> bytes:
    """A real message with 1-4 mutations, most of them inside one header line.

    Mutating inside a line (rather than anywhere) keeps most results parseable, so the typed
    views see the damage instead of the parser rejecting the whole message up front.
    """
    vector = draw(st.sampled_from(CORPUS))
    head, sep, body = vector.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(MUTATIONS))
        # Mostly header lines; the start line gets its share through "anywhere" and "flip".
        index = draw(
            st.integers(0, len(lines) - 1)
            if kind == "flip"
            else st.integers(min(1, len(lines) - 1), len(lines) - 1)
        )
        line = bytearray(lines[index])
        at = draw(st.integers(0, len(line)))
        if kind == "flip" and line:
            line[min(at, len(line) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            line[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del line[at : at + draw(st.integers(1, 16))]
        elif kind == "unicode":
            line[at:at] = draw(st.text(min_size=1, max_size=8)).encode("utf-8", "surrogatepass")
        elif kind == "duplicate":
            lines.insert(index, bytes(line))
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
            continue
        elif kind == "truncate":
            whole = b"\r\n".join(lines) + sep + body
            return whole[: draw(st.integers(0, len(whole)))]
        else:
            whole = bytearray(b"\r\n".join(lines) + sep + body)
            spot = draw(st.integers(0, len(whole)))
            whole[spot:spot] = draw(st.binary(min_size=1, max_size=4))
            return bytes(whole)
        lines[index] = bytes(line)
    return b"\r\n".join(lines) + sep + body


SIP_ALPHABET = st.sampled_from(
    [*b'sip:SIP/2.0 <>;=,"\\@[]:%?&\r\n\t 0123456789abcdefz', 0, 0x7F, 0xB2, 0xC3, 0xFF]
)
sip_ish_bytes = st.lists(SIP_ALPHABET, max_size=200).map(bytes)
# Text with lone surrogates too: the field parsers are public, and code may hand them anything.
any_text = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=120).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    sip_ish_bytes.map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)


@FUZZ
@given(mutated_vector())
def test_mutated_vectors_raise_only_sip_parse_error(data: bytes) -> None:
    check_message_bytes(data)


@FUZZ
@given(st.one_of(st.binary(max_size=600), sip_ish_bytes))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    check_message_bytes(data)


@FUZZ
@given(
    st.sampled_from(CORPUS),
    st.sampled_from(["Via", "From", "To", "Contact", "CSeq", "Max-Forwards", "Expires", "m"]),
    any_text,
)
def test_random_header_values_raise_only_sip_parse_error(
    vector: bytes, name: str, value: str
) -> None:
    """A real message with one header given a random (single-line) value."""
    line = value.replace("\r", " ").replace("\n", " ").encode("utf-8", "surrogateescape")
    head, sep, body = vector.partition(b"\r\n\r\n")
    if not sep:
        return
    check_message_bytes(head + b"\r\n" + name.encode() + b": " + line + sep + body)


@FUZZ
@given(any_text)
def test_field_parsers_raise_only_sip_parse_error(text: str) -> None:
    parsers = (
        parse_uri,
        parse_name_addr,
        parse_via,
        parse_cseq,
        parse_auth,
        parse_max_forwards,
        parse_expires,
        parse_content_length,
        parse_hostport,
        parse_params,
        lambda value: parse_contacts([value]),
        lambda value: parse_contacts(value.split(",")),
    )
    for parse in parsers:
        try:
            result = parse(text)
        except SipParseError as error:
            assert error.status == 400 and error.reason
            continue
        if isinstance(result, NameAddr):
            exercise_address(result)
        elif isinstance(result, Via):
            exercise_via(result)
        elif isinstance(result, list):
            for address in result:
                exercise_address(address)
        elif result is not None and not isinstance(result, int | dict | tuple):
            str(result)
            hash(result)


@FUZZ
@given(st.lists(st.sampled_from(CORPUS), min_size=1, max_size=4), st.data())
def test_framer_reassembles_any_chunking(messages: list[bytes], data: st.DataObject) -> None:
    """Whatever the chunk boundaries, the framer yields the same messages as a whole feed."""
    stream = b"".join(parse_message(message).to_bytes() for message in messages if _parses(message))
    stream = b"\r\n\r\n" + stream  # a keep-alive first
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = StreamFramer()
    pieces: list[bytes | KeepAlive] = []
    previous = 0
    for cut in [*cuts, len(stream)]:
        pieces.extend(framer.feed(stream[previous:cut]))
        previous = cut
    assert framer.pending == 0
    whole = StreamFramer().feed(stream)
    assert pieces == whole
    assert isinstance(pieces[0], KeepAlive)
    for piece in pieces[1:]:
        assert isinstance(piece, bytes)
        parse_message(piece, stream=True)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), mutated_vector()), min_size=1, max_size=5))
def test_framer_raises_only_sip_parse_error(chunks: list[bytes]) -> None:
    framer = StreamFramer(max_message=4_096, max_buffer=8_192)
    for chunk in chunks:
        try:
            pieces = framer.feed(chunk)
        except SipParseError as error:
            assert error.status in (400, 413)
            return
        for piece in pieces:
            if isinstance(piece, bytes):
                check_message_bytes(piece)


def _parses(data: bytes) -> bool:
    try:
        parse_message(data)
    except SipParseError:
        return False
    return True
