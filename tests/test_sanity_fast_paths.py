"""The request-initial checks' short cuts answer exactly as the plain readings they skip.

`check_request` walks the header names once instead of building a set of them, and the
From/To tag and display-name checks decide the common shapes without copying the value.
Each is compared here with the reading it replaced (kept below as the reference), over
generated inputs, malformed ones included: a difference would change a 400's reason, let a
bad request through, or refuse a good one.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.security import sanity
from core.security.sanity import SanityFailure, check_request
from core.sip import OtherUri, Request, SipParseError, parse_message
from core.sip.address import NameAddr, parse_name_addr
from core.sip.fields import is_token
from core.sip.uri import parse_uri

EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the references: the readings as they were before the short cuts ---------------------------
def reference_has_duplicate_tag(address: str) -> bool:
    if address.lower().count("tag") < 2:
        return False
    end_of_uri = address.rfind(">")
    if end_of_uri >= 0:
        header_params = address[end_of_uri + 1 :]
    else:
        header_params = address.partition(";")[2]
        header_params = ";" + header_params if header_params else ""
    tags = sum(
        1
        for param in header_params.split(";")[1:]
        if param.partition("=")[0].strip().lower() == "tag"
    )
    return tags > 1


def reference_display_name_ok(address: NameAddr) -> bool:
    raw = address.raw or ""
    cut = raw.find("<")
    if cut <= 0:
        return True
    display = raw[:cut].strip()
    if not display or display.startswith('"'):
        return True
    return all(is_token(word) or not word.isascii() for word in display.split())


_REFERENCE_SINGLE = {
    "call-id": "Call-ID",
    "i": "Call-ID",
    "cseq": "CSeq",
    "from": "From",
    "f": "From",
    "to": "To",
    "t": "To",
    "max-forwards": "Max-Forwards",
    "expires": "Expires",
}


def reference_single_valued(keys: list[str]) -> SanityFailure | None:
    seen: set[str] = set()
    for key in keys:
        single = _REFERENCE_SINGLE.get(key)
        if single is not None:
            if single in seen:
                return SanityFailure(400, f"Duplicate {single} header")
            seen.add(single)
    return None


def reference_addresses(request: Request) -> SanityFailure | None:
    """_addresses as it was: Contact always read through the parsed view."""
    try:
        sender = request.from_addr
    except SipParseError:
        return SanityFailure(400, "Bad From header")
    if sender is None:
        return SanityFailure(400, "Missing From")
    try:
        recipient = request.to_addr
    except SipParseError:
        return SanityFailure(400, "Bad To header")
    if recipient is None:
        return SanityFailure(400, "Missing To")
    if not reference_display_name_ok(sender):
        return SanityFailure(400, "Bad From header")
    if not reference_display_name_ok(recipient):
        return SanityFailure(400, "Bad To header")
    if not sender.tag:
        return SanityFailure(400, "Missing From tag")
    if reference_has_duplicate_tag(sender.raw or ""):
        return SanityFailure(400, "Duplicate From tag")
    if reference_has_duplicate_tag(recipient.raw or ""):
        return SanityFailure(400, "Duplicate To tag")
    try:
        contacts = request.contacts
    except SipParseError:
        return SanityFailure(400, "Bad Contact")
    if contacts is None and request.method != "REGISTER":
        return SanityFailure(400, "Bad Contact")
    return None


def reference_max_forwards(request: Request) -> SanityFailure | None:
    try:
        hops = request.max_forwards
    except SipParseError:
        return SanityFailure(400, "Bad Max-Forwards")
    if hops is None:
        request.headers.add("Max-Forwards", str(sanity.DEFAULT_MAX_FORWARDS))
        return None
    if hops == 0:
        return SanityFailure(483, "Too Many Hops")
    return None


def reference_check_request(request: Request, *, reliable: bool) -> SanityFailure | None:
    """check_request as it was: a set of names, Contact always parsed (the other sub-checks
    are shared)."""
    if isinstance(request.uri, OtherUri):
        return SanityFailure(416, "Unsupported URI Scheme")
    keys = request.headers.lookup_keys()
    present = set(keys)
    failure = (
        sanity._request_uri(request)
        or sanity._vias(request)
        or reference_addresses(request)
        or (sanity._routes(request) if "route" in present else None)
        or sanity._call_id(request)
        or sanity._cseq(request)
        or (reference_single_valued(keys) if len(present) < len(keys) else None)
        or (sanity._expires(request) if "expires" in present else None)
    )
    if failure is not None:
        return failure
    if reliable and "content-length" not in present:
        return SanityFailure(400, "Missing Content-Length")
    return sanity._proxy_require(request) if "proxy-require" in present else None


# -- generated From/To values ---------------------------------------------------------------------
# Pieces chosen to hit every branch of the short cuts: quotes, brackets, `;`, `tag` in any case
# and place (URI parameter, header parameter, display name, user), blanks, separators.
_DISPLAYS = st.sampled_from(
    ["", '"Alice" ', '"Alice"', '"A;tag=1" ', "Alice ", "Al,ice ", "tag ", "M\xfcller ", " ", '"']
)
_URIS = st.sampled_from(
    [
        "sip:alice@pbx.test",
        "sip:tag@pbx.test",
        "sip:a@pbx.test;tag=9",
        "sip:a@pbx.test;TAG=9;tag=8",
        "sips:a@[2001:db8::1]:5061",
        "tel:+4930123;tag=1",
        'sip:a@pbx.test;p="<x>"',
    ]
)
_PARAMS = st.lists(
    st.sampled_from(
        [
            ";tag=1",
            ";TAG=2",
            ";Tag = 3",
            "; tag=4",
            ";tag",
            ";tagx=5",
            ";xtag=6",
            ";;",
            ";",
            ">",
            ";expires=60",
            '";tag=7"',
            " ",
            "x",
        ]
    ),
    max_size=4,
)
_BRACKETS = st.sampled_from([("<", ">"), ("", ""), ("<", ""), ("< ", " >")])


@st.composite
def from_values(draw: st.DrawFn) -> str:
    opening, closing = draw(_BRACKETS)
    return draw(_DISPLAYS) + opening + draw(_URIS) + closing + "".join(draw(_PARAMS))


@EXAMPLES
@given(from_values() | st.text(alphabet=';<>"tTaAgG= x', max_size=24))
def test_duplicate_tag_short_cut_answers_as_the_full_reading(text: str) -> None:
    assert sanity._has_duplicate_tag(text) == reference_has_duplicate_tag(text)


@EXAMPLES
@given(from_values() | st.text(alphabet=' "<>;,aZ\xfc\t', max_size=16))
def test_display_name_short_cut_answers_as_the_full_reading(text: str) -> None:
    address = NameAddr(parse_uri("sip:a@pbx.test"), raw=text)
    assert sanity._display_name_ok(address) == reference_display_name_ok(address)


@pytest.mark.parametrize("raw", [None, "", "<sip:a@b>", '"A" <sip:a@b>', "A <sip:a@b>", "A,B <x>"])
def test_display_name_short_cut_on_edges(raw: str | None) -> None:
    address = NameAddr(parse_uri("sip:a@pbx.test"), raw=raw)
    assert sanity._display_name_ok(address) == reference_display_name_ok(address)


def test_the_short_cuts_still_refuse() -> None:
    """The references agree on these too, but a broken short cut that always passed would
    agree with a broken reference: what the checks must conclude, said plainly."""
    assert sanity._has_duplicate_tag("<sip:a@b>;tag=1;TAG=2")
    assert sanity._has_duplicate_tag("sip:a@b;tag=1; tag =2")
    assert not sanity._has_duplicate_tag("<sip:a@b;tag=1>;tag=2")
    assert not sanity._has_duplicate_tag("<sip:a@b>;tag=1;expires=2")
    bad = NameAddr(parse_uri("sip:a@pbx.test"), raw="Al,ice <sip:a@pbx.test>")
    assert not sanity._display_name_ok(bad)


# -- generated requests ---------------------------------------------------------------------------
_HEADER_LINES = st.sampled_from(
    [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"),
        ("v", "SIP/2.0/UDP 192.0.2.11:5060;branch=z9hG4bKother"),
        ("Via", "SIP/2.0/UDP 192.0.2.12"),
        ("Max-Forwards", "70"),
        ("Max-Forwards", "0"),
        ("From", '"Alice" <sip:alice@pbx.test>;tag=1928301774'),
        ("f", "<sip:alice@pbx.test>;tag=1;tag=2"),
        ("From", "Al,ice <sip:alice@pbx.test>;tag=1"),
        ("From", "<sip:alice@pbx.test>"),
        ("To", "Bob <sip:bob@pbx.test>"),
        ("t", "<sip:bob@pbx.test>;tag=a;TAG=b"),
        ("To", "<sip:bob@pbx.test"),
        ("Call-ID", "a84b4c76e66710@192.0.2.10"),
        ("i", "other@192.0.2.10"),
        ("Call-ID", "two words"),
        ("CSeq", "314159 INVITE"),
        ("CSeq", "1 OPTIONS"),
        ("CSeq", "x INVITE"),
        ("Contact", "<sip:alice@192.0.2.10:5060>"),
        ("m", "*"),
        ("Contact", "*, <sip:a@192.0.2.10>"),
        ("Contact", "<sip:alice@192.0.2.10:5060"),
        ("Contact", "<sip:a@192.0.2.10>, <sip:b@192.0.2.10>"),
        ("Contact", '"A, B" <sip:a@192.0.2.10>'),
        ("Contact", '"A" <sip:a@192.0.2.10>;expires=60'),
        ("Contact", "<sip:a@192.0.2.10>;tag=1"),
        ("Contact", '<sip:a@192.0.2.10>;tag="1"'),
        ("Contact", "sip:a@192.0.2.10;expires=60"),
        ("Contact", "<sip:a b@192.0.2.10>"),
        ("Contact", "<http://x>"),
        ("Contact", "<sip:a@192.0.2.10>x"),
        ("Contact", ","),
        ("Contact", "<sip:a@192.0.2.10>;tag=x,y"),
        ("Contact", "<sip:a@192.0.2.10>;tag=x, <sip:b@192.0.2.10>"),
        ("Max-Forwards", "070"),
        ("Max-Forwards", "256"),
        ("Max-Forwards", "seventy"),
        ("Route", "<sip:pbx.test;lr>"),
        ("Route", "<sip:broken"),
        ("Expires", "3600"),
        ("Expires", "soon"),
        ("Proxy-Require", "foo"),
        ("Proxy-Require", ""),
        ("Content-Length", "0"),
        ("User-Agent", "Yealink SIP-T46S 66.86.0.15"),
    ]
)
_BASE_LINES = [
    ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"),
    ("Max-Forwards", "70"),
    ("From", '"Alice" <sip:alice@pbx.test>;tag=1928301774'),
    ("To", "<sip:bob@pbx.test>"),
    ("Call-ID", "a84b4c76e66710@192.0.2.10"),
    ("CSeq", "314159 {method}"),
    ("Contact", "<sip:alice@192.0.2.10:5060>"),
    ("User-Agent", "Yealink SIP-T46S 66.86.0.15"),
    ("Content-Length", "0"),
]
_METHODS = st.sampled_from(["INVITE", "OPTIONS", "REGISTER", "ACK", "CANCEL", "BYE"])
_REQUEST_URIS = st.sampled_from(
    ["sip:bob@pbx.test"] * 6
    + ["sip:pbx.test", "sip:b%zz@pbx.test", "sip:b@pbx.test?h=1", "http://x"]
)


@st.composite
def header_lines(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A well-formed request's lines, each kept 9 times in 10, with generated lines put in
    anywhere: most requests come out whole but for one or two faults, as on the wire."""
    lines = [line for line in _BASE_LINES if draw(st.integers(0, 9))]
    for extra in draw(st.lists(_HEADER_LINES, max_size=4)):
        lines.insert(draw(st.integers(0, len(lines))), extra)
    return lines


def _parsed(method: str, uri: str, lines: list[tuple[str, str]], stream: bool) -> Request | None:
    text = f"{method} {uri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines) + "\r\n"
    text = text.replace("{method}", method)
    try:
        message = parse_message(text.encode(), stream=stream)
    except SipParseError:
        return None  # the parser's own refusal: not the sanity checks' business
    assert isinstance(message, Request)
    return message


def _verdict(check: object, request: Request, reliable: bool) -> object:
    try:
        return check(request, reliable=reliable)  # type: ignore[operator]
    except SipParseError as error:  # neither should raise; if one does, both must alike
        return ("raised", error.reason)


@EXAMPLES
@given(_METHODS, _REQUEST_URIS, header_lines(), st.booleans())
def test_check_request_answers_as_with_a_set_of_names(
    method: str, uri: str, lines: list[tuple[str, str]], stream: bool
) -> None:
    # Parsed twice, so that neither reading sees views the other one cached.
    ours = _parsed(method, uri, lines, stream)
    theirs = _parsed(method, uri, lines, stream)
    if ours is None or theirs is None:
        assert ours is theirs
        return
    assert _verdict(check_request, ours, stream) == _verdict(
        reference_check_request, theirs, stream
    )


def _max_forwards_outcome(check: object, request: Request | None) -> object:
    if request is None:
        return None
    try:
        verdict = check(request)  # type: ignore[operator]
    except SipParseError as error:
        verdict = ("raised", error.reason)
    return verdict, request.headers.get_all("max-forwards")


@EXAMPLES
@given(_METHODS, header_lines())
def test_check_max_forwards_answers_as_the_parsed_reading(
    method: str, lines: list[tuple[str, str]]
) -> None:
    ours = _parsed(method, "sip:bob@pbx.test", lines, False)
    theirs = _parsed(method, "sip:bob@pbx.test", lines, False)
    assert _max_forwards_outcome(sanity.check_max_forwards, ours) == _max_forwards_outcome(
        reference_max_forwards, theirs
    )
    if ours is not None and theirs is not None:  # and the forwarder reads the same number
        assert _max_forwards_read(ours) == _max_forwards_read(theirs)


def _max_forwards_read(request: Request) -> object:
    try:
        return request.max_forwards
    except SipParseError as error:
        return ("raised", error.reason)


@pytest.mark.parametrize("method", ["OPTIONS", "BYE", "INVITE", "REGISTER"])
def test_contacts_read_after_the_check_are_the_parsed_ones(method: str) -> None:
    """Whether or not the check built the list, the route reads the same addresses."""
    lines = [(name, value.replace("{method}", method)) for name, value in _BASE_LINES]
    request = _parsed(method, "sip:bob@pbx.test", lines, False)
    assert request is not None
    assert check_request(request, reliable=False) is None
    contacts = request.contacts
    assert contacts == [parse_name_addr("<sip:alice@192.0.2.10:5060>")]
    assert contacts[0] is request.contacts[0]  # cached: parsed once, whoever asked first


@pytest.mark.parametrize(
    ("method", "contact", "reason"),
    [
        ("OPTIONS", "*", "Bad Contact"),
        ("BYE", "<sip:a b@192.0.2.10>", "Bad Contact"),
        ("OPTIONS", "<sip:a@192.0.2.10", "Bad Contact"),
        ("REGISTER", "*, <sip:a@192.0.2.10>", "Bad Contact"),
        ("REGISTER", "*", None),
        ("OPTIONS", "<sip:a@192.0.2.10>, <sip:b@192.0.2.10>", None),
        ("OPTIONS", "<sip:a@192.0.2.10>;tag=x,y", "Bad Contact"),  # `y` is an address
        ("OPTIONS", '"A, B" <sip:a@192.0.2.10>', None),
    ],
)
def test_contact_refusals(method: str, contact: str, reason: str | None) -> None:
    lines = [
        (name, contact if name == "Contact" else value.replace("{method}", method))
        for name, value in _BASE_LINES
    ]
    request = _parsed(method, "sip:bob@pbx.test", lines, False)
    assert request is not None
    failure = check_request(request, reliable=False)
    assert (failure.reason if failure else None) == reason


def test_a_repeated_single_valued_header_is_still_named() -> None:
    lines = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"),
        ("From", '"Alice" <sip:alice@pbx.test>;tag=1928301774'),
        ("To", "<sip:bob@pbx.test>"),
        ("Call-ID", "a84b4c76e66710@192.0.2.10"),
        ("CSeq", "1 OPTIONS"),
        ("Contact", "<sip:alice@192.0.2.10:5060>"),
        ("Expires", "60"),
        ("Expires", "60"),
    ]
    request = _parsed("OPTIONS", "sip:bob@pbx.test", lines, False)
    assert request is not None
    assert check_request(request, reliable=False) == SanityFailure(400, "Duplicate Expires header")
    request = _parsed("OPTIONS", "sip:bob@pbx.test", lines[:-1], True)
    assert request is not None
    assert check_request(request, reliable=True) == SanityFailure(400, "Missing Content-Length")


# -- From/To parsing: the in-place tail reading of the common shapes ------------------------------
@EXAMPLES
@given(from_values() | st.text(alphabet='<>"; =tagsip:@x\\', max_size=30))
def test_common_name_addr_answers_as_the_general_reading(text: str) -> None:
    from core.sip.address import _any_name_addr

    def outcome(parse: object) -> tuple[object, ...]:
        try:
            address = parse(text)  # type: ignore[operator]
        except SipParseError as error:
            return ("error", error.reason, error.status)
        return ("ok", address, address.raw, address.display_name, address.params, str(address))

    def general(value: str) -> NameAddr:
        raw = value.strip()
        if not raw:
            raise SipParseError("Empty address")
        return _any_name_addr(raw)

    assert outcome(parse_name_addr) == outcome(general)
