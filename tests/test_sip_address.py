"""name-addr and addr-spec: From, To, Contact, Route (RFC 3261 §20.10, §25.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.sip import NameAddr, SipParseError, SipUri, TelUri, parse_contacts, parse_name_addr


@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        (
            '"Alice" <sip:alice@example.com>;tag=1928',
            "Alice",
            SipUri(user="alice", host="example.com"),
            {"tag": "1928"},
        ),
        ("<sip:alice@example.com>", None, SipUri(user="alice", host="example.com"), {}),
        ("Alice Smith <sip:a@x>", "Alice Smith", SipUri(user="a", host="x"), {}),
        (
            "caller<sip:caller@example.com>;tag=323",
            "caller",
            SipUri(user="caller", host="example.com"),
            {"tag": "323"},
        ),
        ('""<sip:a@x>', "", SipUri(user="a", host="x"), {}),
        ('"Dave \\\\ the \\"Q\\"" <sip:d@x>', 'Dave \\ the "Q"', SipUri(user="d", host="x"), {}),
        (
            '"<sip:evil@x>, \\"y\\"" <sip:real@x>',
            '<sip:evil@x>, "y"',
            SipUri(user="real", host="x"),
            {},
        ),
        ('"Jürgen Müller" <sip:jm@x>', "Jürgen Müller", SipUri(user="jm", host="x"), {}),
        ("< sip:a@x > ; tag = 9 ", None, SipUri(user="a", host="x"), {"tag": "9"}),
        ("<tel:+15551230001>", None, TelUri("+15551230001"), {}),
        # URI params inside the brackets, header params outside.
        (
            "<sip:a@x;transport=tcp>;expires=60",
            None,
            SipUri(user="a", host="x", params={"transport": "tcp"}),
            {"expires": "60"},
        ),
        # addr-spec: every ';' parameter belongs to the header, not the URI (§20).
        (
            "sip:alice@example.com;tag=1928",
            None,
            SipUri(user="alice", host="example.com"),
            {"tag": "1928"},
        ),
        (" sip:a@x ", None, SipUri(user="a", host="x"), {}),
        # addr-spec whose quoted parameter value holds '<': not a display name.
        (
            'sip:a@192.0.2.1;+sip.instance="<urn:uuid:1>";reg-id=1',
            None,
            SipUri(user="a", host="192.0.2.1"),
            {"+sip.instance": '"<urn:uuid:1>"', "reg-id": "1"},
        ),
        (
            '<sip:a@x>;+sip.instance="<urn:uuid:2>";methods="INVITE, BYE"',
            None,
            SipUri(user="a", host="x"),
            {"+sip.instance": '"<urn:uuid:2>"', "methods": '"INVITE, BYE"'},
        ),
    ],
)
def test_parse_name_addr(
    text: str, display: str | None, uri: SipUri | TelUri, params: dict[str, str | None]
) -> None:
    address = parse_name_addr(text)
    assert address.display_name == display
    assert address.uri == uri
    assert address.params == params
    assert str(address) == text.strip()  # printed back as received


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Empty address"),
        ("   ", "Empty address"),
        ('"Mr. J. User <sip:j.user@example.com>', "Unterminated quoted string"),
        ('"Alice" sip:alice@example.com', "Bad name-addr"),
        ("<sip:alice@example.com", "Missing '>' in address"),
        ("<sip:a@x> tag=1", "Bad address parameters"),
        ("<sip:a@x>;;tag=1", "Empty parameter"),
        ("<sip:a@x>;", "Empty parameter"),
        ("sip:a@x;tag=1;", "Empty parameter"),
        ("sip:a@x ; ", "Empty parameter"),
        ("<>", "Bad URI"),
        ("<sip:a@bad host>", "Bad SIP URI"),
        ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "Bad addr-spec"),
        ("sip:a@x, sip:b@x", "Bad addr-spec"),
        ("Alice", "Bad URI"),
    ],
)
def test_malformed_addresses(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_name_addr(text)
    assert (caught.value.status, caught.value.reason) == (400, reason)


def test_tag_param_and_with_params() -> None:
    address = parse_name_addr('"Bob" <sip:bob@x>;TAG=abc;Q=0.5')
    assert address.tag == "abc" and address.param("q") == "0.5" and address.param("Q") == "0.5"
    tagged = parse_name_addr("sip:bob@x").with_params(tag="t1")
    assert tagged.tag == "t1" and str(tagged) == "<sip:bob@x>;tag=t1"
    named = parse_name_addr('"Bob \\"B\\"" <sip:bob@x>').with_params(tag="t2")
    assert str(named) == '"Bob \\"B\\"" <sip:bob@x>;tag=t2'
    assert parse_name_addr(str(named)) == named


def test_printing_from_parts() -> None:
    address = NameAddr(SipUri(user="a", host="x"), "A \\ B", {"expires": "60", "ob": None})
    assert str(address) == '"A \\\\ B" <sip:a@x>;expires=60;ob'
    assert str(NameAddr(TelUri("+1555"))) == "<tel:+1555>"


@pytest.mark.parametrize(
    ("text", "expires"),
    [
        ("<sip:a@x>", None),
        ("<sip:a@x>;expires=3600", 3600),
        ("<sip:a@x>;expires=0", 0),
        ("<sip:a@x>;expires=007", 7),
        ("<sip:a@x>;expires=4294967296", 2**32 - 1),
        ("<sip:a@x>;expires=" + "9" * 5000, 2**32 - 1),
    ],
)
def test_contact_expires(text: str, expires: int | None) -> None:
    assert parse_name_addr(text).expires == expires


@pytest.mark.parametrize("value", ["", "-1", "60s", "\u00b2", "1.5"])
def test_bad_contact_expires(value: str) -> None:
    with pytest.raises(SipParseError, match="Bad Contact expires"):
        parse_name_addr(f"<sip:a@x>;expires={value}").expires  # noqa: B018


def test_equality_and_hash() -> None:
    first = parse_name_addr('"A" <sip:a@x>;tag=1;q=1')
    second = parse_name_addr('"A"<sip:a@x> ;q=1;tag=1')
    assert first == second and hash(first) == hash(second)
    assert len({first, second}) == 1


def test_parse_contacts() -> None:
    assert parse_contacts(["*"]) is None
    assert parse_contacts([" * "]) is None
    assert parse_contacts([]) == []
    contacts = parse_contacts(["<sip:a@x>;expires=60", "sip:b@y"])
    assert contacts is not None and [c.uri.user for c in contacts] == ["a", "b"]
    with pytest.raises(SipParseError, match="Contact '\\*' mixed with addresses"):
        parse_contacts(["*", "<sip:a@x>"])
    with pytest.raises(SipParseError, match="Bad addr-spec"):
        parse_contacts(["sip:a@x?Route=y"])


# The common shapes are read by a short path (`common_name_addr`); every input here must come
# out of parse_name_addr exactly as the general reading makes it, error reasons included.
SAME_AS_GENERAL = [
    '"Alice" <sip:alice@pbx.test>;tag=1928',
    '"Alice"<sip:alice@pbx.test>;tag=1928',
    '"Alice"  <sip:alice@pbx.test>;tag=1928',
    '"Alice"\t<sip:alice@pbx.test>;tag=1928',
    '"Alice" \t<sip:alice@pbx.test>',
    '"Al\\"ice" <sip:a@pbx.test>;tag=1',
    '"A\\\\" <sip:a@pbx.test>',
    '"A, B" <sip:a@pbx.test>;tag=x',
    '"Ali>ce" <sip:a@pbx.test>;tag=1',
    '"Ali<ce" <sip:a@pbx.test>;tag=1',
    '"Ali;ce" <sip:a@pbx.test>;tag=1',
    '"" <sip:a@pbx.test>',
    '"M\xfcller" <sip:m@pbx.test>;tag=7',
    '"M\udcfcller" <sip:m@pbx.test>;tag=7',
    '"unterminated <sip:a@pbx.test>',
    '"Alice" sip:a@pbx.test',
    '"Alice" x <sip:a@pbx.test>',
    "<sip:alice@pbx.test>",
    "<sip:alice@pbx.test>;tag=abc",
    "  <sip:alice@pbx.test>;tag=abc  ",
    "<SIP:Alice@PBX.test>;tag=abc",
    "<sips:alice@pbx.test:5061>;tag=abc",
    "<sip:alice@pbx.test>;TAG=abc",
    "<sip:alice@pbx.test>;Tag=abc",
    "<sip:alice@[2001:db8::1]:5060;transport=tcp>;tag=z",
    "<sip:alice@[2001:db8::1]>",
    "<sip:alice@[2001:db8::1>",
    "<sip:%61lice@pbx.test>;tag=1",
    "<sip:a@pbx.test>;tag=1;tag=2",
    "<sip:a@pbx.test>;tag=1;expires=60",
    "<sip:a@pbx.test>;expires=60",
    "<sip:a@pbx.test>;tag=",
    "<sip:a@pbx.test>;tag= x",
    "<sip:a@pbx.test>;tag=x y",
    "<sip:a@pbx.test>;tag=x\t",
    '<sip:a@pbx.test>;tag="x"',
    '<sip:a@pbx.test>;tag=x"',
    "<sip:a@pbx.test>;tag=a=b",
    "<sip:a@pbx.test>;tag=a,b",
    "<sip:a@pbx.test>;tag",
    "<sip:a@pbx.test>;",
    "<sip:a@pbx.test>;;tag=1",
    "<sip:a@pbx.test>;tag=1;",
    "<sip:a@pbx.test> ;tag=1",
    "<sip:a@pbx.test>x",
    "<sip:a@pbx.test>>;tag=1",
    "<sip:a@pbx.test",
    "< sip:a@pbx.test >;tag=1",
    "<sip:a b@pbx.test>",
    "<sip:a@pbx.test;tag=2>;tag=1",
    "<>",
    "<:>",
    "<tel:+4930123>;tag=1",
    "<mailto:a@pbx.test>;tag=1",
    "<urn:uuid:1234>",
    "Alice <sip:a@pbx.test>;tag=1",
    "caller<sip:a@pbx.test>",
    "sip:alice@pbx.test;tag=1928",
    "SIP:alice@pbx.test;tag=1928",
    "sip:alice@pbx.test",
    'sip:a@pbx.test;p="<x>"',
    "sip:a@pbx.test?x=1",
    "*",
]


def _outcome(parse: object, text: str) -> tuple[object, ...]:
    try:
        address = parse(text)  # type: ignore[operator]
    except SipParseError as error:
        return ("error", error.reason, error.status)
    return ("ok", address, address.raw, address.display_name, address.params, str(address))


@pytest.mark.parametrize("text", SAME_AS_GENERAL)
def test_parse_name_addr_common_shapes_match_general_reading(text: str) -> None:
    from core.sip.address import _any_name_addr

    def general(value: str) -> NameAddr:
        raw = value.strip()
        if not raw:
            raise SipParseError("Empty address")
        return _any_name_addr(raw)

    assert _outcome(parse_name_addr, text) == _outcome(general, text)


@pytest.mark.parametrize(
    "text",
    [
        '"Alice" <sip:alice@pbx.test>;tag=1928',
        '"Alice"<sip:alice@pbx.test>',
        "<sip:alice@[2001:db8::1]:5060>;tag=x",
        "<sip:alice@pbx.test>",
    ],
)
def test_common_shapes_take_the_short_path(text: str) -> None:
    from core.sip.address import common_name_addr

    assert common_name_addr(text) is not None


# -- the known `<uri>` parts: a value read again, or another tag on a part already read -----------
def _general(value: str) -> NameAddr:
    from core.sip.address import _any_name_addr

    raw = value.strip()
    if not raw:
        raise SipParseError("Empty address")
    return _any_name_addr(raw)


def _warm_outcomes(text: str) -> list[tuple[object, ...]]:
    """`text` read cold, then again, then after its `<uri>` part (up to the first `>`) and
    other tags on it were read: every reading, each to be the general one's."""
    from core.sip import address

    address._KNOWN_PARTS.clear()
    outcomes = [_outcome(parse_name_addr, text), _outcome(parse_name_addr, text)]
    stripped = text.strip()
    first = stripped.find(">")
    if first >= 0:
        part = stripped[: first + 1]
        for other in (part, part + ";tag=zz", part + ";tag=1;tag=2", part + "x"):
            _outcome(parse_name_addr, other)
        outcomes.append(_outcome(parse_name_addr, text))
    return outcomes


_PART_SHAPES = st.sampled_from(
    ['"Alice" ', '"Alice"', '"A>b" ', '"A\\"b" ', '"" ', "Alice ", '"M\xfcller" ', "", ' "x" ']
)
_PART_URIS = st.sampled_from(
    ["sip:a@pbx.test", "sips:a@pbx.test:5061", "sip:a b@x", "tel:+4930", "urn:x", "", "sip:a@[::1"]
)
_PART_TAILS = st.sampled_from(
    ["", ";tag=1", ";tag=", ";TAG=1", ";tag=1;tag=2", ";tag=a b", ';tag="x"', " ;tag=1", "x", ";"]
)


@settings(max_examples=400, deadline=None)
@given(
    _PART_SHAPES,
    st.sampled_from(["<", ""]),
    _PART_URIS,
    st.sampled_from([">", ">>", ""]),
    _PART_TAILS,
)
def test_known_parts_answer_as_the_general_reading(
    display: str, opening: str, uri: str, closing: str, tail: str
) -> None:
    text = display + opening + uri + closing + tail
    expected = _outcome(_general, text)
    outcomes = _warm_outcomes(text)
    assert outcomes == [expected] * len(outcomes)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='<>"; =tagsip:@x\\\xfc', max_size=30))
def test_known_parts_answer_as_the_general_reading_on_any_text(text: str) -> None:
    expected = _outcome(_general, text)
    outcomes = _warm_outcomes(text)
    assert outcomes == [expected] * len(outcomes)


@pytest.mark.parametrize("text", SAME_AS_GENERAL)
def test_known_parts_on_the_listed_shapes(text: str) -> None:
    expected = _outcome(_general, text)
    outcomes = _warm_outcomes(text)
    assert outcomes == [expected] * len(outcomes)


def test_a_known_part_is_kept_and_reused() -> None:
    """The short cut is taken (not only harmless): a part read once is kept, a value that is
    the part alone comes back as the kept address, a new tag on it reuses its URI."""
    from core.sip import address

    address._KNOWN_PARTS.clear()
    first = parse_name_addr('"Alice" <sip:alice@pbx.test>;tag=1')
    assert '"Alice" <sip:alice@pbx.test>' in address._KNOWN_PARTS
    second = parse_name_addr('"Alice" <sip:alice@pbx.test>;tag=2')
    assert second.uri is first.uri and second.tag == "2" and second.display_name == "Alice"
    bare = parse_name_addr('"Alice" <sip:alice@pbx.test>')
    assert bare is address._KNOWN_PARTS['"Alice" <sip:alice@pbx.test>']
    assert bare.params == {} and str(bare) == '"Alice" <sip:alice@pbx.test>'
    with pytest.raises(SipParseError):
        parse_name_addr('"Alice" <sip:alice@pbx.test>;tag=1;;')
    assert parse_name_addr('"A>b" <sip:a@pbx.test>').display_name == "A>b"
    assert '"A>b" <sip:a@pbx.test>' not in address._KNOWN_PARTS  # `>` in the name: not kept


def test_known_parts_stay_bounded() -> None:
    from core.sip import address

    address._KNOWN_PARTS.clear()
    for number in range(address._KNOWN_PARTS_LIMIT + 50):
        parse_name_addr(f"<sip:u{number}@pbx.test>;tag=1")
    assert len(address._KNOWN_PARTS) <= address._KNOWN_PARTS_LIMIT
    assert f"<sip:u{address._KNOWN_PARTS_LIMIT + 49}@pbx.test>" in address._KNOWN_PARTS
    long = "<sip:" + "u" * address._KNOWN_PART_LENGTH + "@pbx.test>"
    assert parse_name_addr(long) == _general(long)
    assert long not in address._KNOWN_PARTS
