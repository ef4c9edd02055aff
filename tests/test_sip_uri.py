"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118 for IPv6)."""

from __future__ import annotations

import time

import pytest

from core.sip import OtherUri, SipParseError, SipUri, TelUri, parse_uri
from core.sip.hostport import format_host, parse_host, parse_hostport
from core.sip.uri import format_params, parse_params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:pbx.example.com", SipUri(host="pbx.example.com")),
        ("sip:1001@192.0.2.1:5060", SipUri(user="1001", host="192.0.2.1", port=5060)),
        (
            "sips:alice:secret@example.com;transport=tls;lr",
            SipUri(
                "sips", "alice", "secret", "example.com", None, {"transport": "tls", "lr": None}
            ),
        ),
        (
            "sip:bob@biloxi.com?subject=project%20x&priority=urgent",
            SipUri(user="bob", host="biloxi.com", headers="subject=project%20x&priority=urgent"),
        ),
        ("sip:alice@[2001:db8::1]:5070", SipUri(user="alice", host="2001:db8::1", port=5070)),
        ("sip:[::ffff:192.0.2.10]", SipUri(host="::ffff:192.0.2.10")),
        ("sip:[2001:db8::10:5070]", SipUri(host="2001:db8::10:5070")),  # RFC 5118 §4.5
        ("sip:[fe80::1%25eth0]", SipUri(host="fe80::1%25eth0")),
        ("sip:example.com.", SipUri(host="example.com.")),
        ("SIP:Bob@HOST;Maddr=X", SipUri(user="Bob", host="HOST", params={"maddr": "X"})),
        # RFC 4475 §3.1.1.3: the user part unescapes.
        (
            "sip:sips%3Auser%40example.com@example.net",
            SipUri(user="sips:user@example.com", host="example.net"),
        ),
        ("sip:I%20have%20spaces@example.net", SipUri(user="I have spaces", host="example.net")),
        ("sip:null-%00-null@example.com", SipUri(user="null-\x00-null", host="example.com")),
        # RFC 4475 §3.1.1.10: `;` belongs to the user when it comes before the `@`.
        (
            "sip:user;par=u%40example.net@example.com",
            SipUri(user="user;par=u@example.net", host="example.com"),
        ),
        # Replaces in a Refer-To URI often carries a raw `@`: the first `@` ends the userinfo.
        (
            "sip:bob@example.com?Replaces=12345@192.0.2.3%3Bto-tag%3D1",
            SipUri(user="bob", host="example.com", headers="Replaces=12345@192.0.2.3%3Bto-tag%3D1"),
        ),
    ],
)
def test_parse_sip_uri(text: str, expected: SipUri) -> None:
    uri = parse_uri(text)
    assert uri == expected
    assert str(uri) == text  # printed back exactly as received


def test_rfc4475_intmeth_user_and_password() -> None:
    text = (
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too."
        "(doesn't-it)@example.com"
    )
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com" and uri.params == {} and uri.headers is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "Bad URI"),
        ("pbx.example.com", "Bad URI"),
        ("<sip:a@b>", "Bad URI"),
        ("1sip:a@b", "Bad URI"),
        ("sip:", "Bad SIP URI"),
        ("sip:a@b c", "Bad SIP URI"),
        ("sip:a@b\tc", "Bad SIP URI"),
        ('sip:"a"@b', "Bad SIP URI"),
        ('sip:a@b;p="x"', "Bad SIP URI"),  # DQUOTE is no paramchar
        ("sip:a@b>", "Bad SIP URI"),
        ("sip:@host", "Bad SIP URI user"),
        ("sip:a@", "Empty host"),
        ("sip:a@:5060", "Empty host"),
        ("sip:a@bad_host", "Bad host"),
        ("sip:a@-bad.example.com", "Bad host"),
        ("sip:a@bad-.example.com", "Bad host"),
        ("sip:a@bad..example.com", "Bad host"),
        ("sip:a@b:0", "Bad port"),
        ("sip:a@b:65536", "Bad port"),
        ("sip:a@b:5o60", "Bad port"),
        ("sip:a@b:5\u00b2", "Bad port"),  # superscript two: isdigit() but not int()
        ("sip:a@b:\u0665\u0660\u0666\u0660", "Bad port"),  # Arabic-Indic 5060
        ("sip:a@b:", "Bad port"),
        ("sip:2001:db8::10", "Bad port"),  # IPv6 without brackets (RFC 5118 §4.7)
        ("sip:[2001:db8:::192.0.2.1]", "Bad IPv6 reference"),  # RFC 5118 §4.4
        ("sip:[2001:db8::1", "Bad IPv6 reference"),
        ("sip:[not-ipv6]", "Bad IPv6 reference"),
        ("sip:[::1%]", "Bad IPv6 reference"),
        ("sip:[::1]5060", "Bad host:port"),
        ("sip:a@b;;lr", "Empty parameter"),
        ("sip:a@b;", "Empty parameter"),
        ("sip:a@b;=x", "Bad parameter"),
        ("tel:", "Bad tel URI"),
        ("tel:;x=1", "Bad tel URI"),
        ("tel:+1555;", "Empty parameter"),
        ("tel:+1 555", "Bad tel URI"),
        ("mailto:", "Bad URI"),
        ("http:a b", "Bad URI"),
    ],
)
def test_malformed_uris_raise_sip_parse_error(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert (caught.value.status, caught.value.reason) == (400, reason)


def test_long_host_is_rejected_in_linear_time() -> None:
    """A backtracking hostname regex takes seconds on this; the possessive one microseconds."""
    started = time.perf_counter()
    for host in ("a" * 200_000 + "!", "a-" * 100_000 + "!", "a." * 100_000 + "-"):
        with pytest.raises(SipParseError, match="Bad host"):
            parse_uri(f"sip:{host}")
    assert time.perf_counter() - started < 0.5


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com;ext=22")
    assert uri == TelUri("+1-201-555-0123", {"phone-context": "example.com", "ext": "22"})
    assert isinstance(uri, TelUri) and uri.user == uri.number and uri.scheme == "tel"
    assert str(uri) == "tel:+1-201-555-0123;phone-context=example.com;ext=22"
    assert str(TelUri("+15551230001", {"npdi": None})) == "tel:+15551230001;npdi"
    assert str(parse_uri("TEL:+1555")) == "TEL:+1555"


def test_other_uri_keeps_its_text() -> None:
    uri = parse_uri("MAILTO:watson@example.org")
    assert isinstance(uri, OtherUri) and uri.scheme == "mailto"
    assert uri.rest == "watson@example.org" and uri.user is None
    assert str(uri) == "MAILTO:watson@example.org"
    assert uri == OtherUri("mailto", "watson@example.org")
    assert str(OtherUri("urn", "service:sos")) == "urn:service:sos"


def test_printing_from_parts_escapes() -> None:
    uri = SipUri(user="alice smith@home", password="p@ss;word", host="2001:db8::1", port=5061)
    assert str(uri) == "sip:alice%20smith%40home:p%40ss%3Bword@[2001:db8::1]:5061"
    again = parse_uri(str(uri))
    assert again == uri
    assert str(SipUri(user="user;par=x/y?z", host="h")) == "sip:user;par=x/y?z@h"
    # A lone surrogate (a byte that was not UTF-8) goes out as that byte, escaped, and an
    # escaped octet that is not UTF-8 comes back as that surrogate: `%FF` and a raw 0xFF agree.
    assert str(SipUri(user="a\udcff", host="h")) == "sip:a%FF@h"
    assert parse_uri("sip:a%ff@h") == parse_uri("sip:a\udcff@h") == SipUri(user="a\udcff", host="h")


def test_replace_prints_from_parts() -> None:
    uri = parse_uri("SIP:Alice@Example.COM:5060;Transport=UDP")
    assert isinstance(uri, SipUri)
    moved = uri.replace(host="192.0.2.9", port=None)
    assert str(moved) == "sip:Alice@192.0.2.9;transport=UDP"
    assert moved.params is not uri.params
    assert uri.replace() == uri and str(uri.replace()) == "sip:Alice@Example.COM:5060;transport=UDP"


def test_properties() -> None:
    uri = parse_uri("sips:Bob@PBX.Example.com:5061;Transport=TLS;lr")
    assert isinstance(uri, SipUri)
    assert uri.secure and uri.transport == "tls"
    assert uri.hostport == "PBX.Example.com:5061"
    assert uri.param("TRANSPORT") == "TLS" and uri.has_param("LR") and not uri.has_param("x")
    assert uri.aor == "sip:Bob@pbx.example.com"
    assert parse_uri("sip:[2001:DB8::1]").aor == "sip:[2001:db8::1]"  # type: ignore[union-attr]
    assert parse_uri("sip:a%20b@h").aor == "sip:a%20b@h"  # type: ignore[union-attr]
    assert SipUri(host="h").transport is None and SipUri(host="::1").hostport == "[::1]"


def test_equality_and_hash() -> None:
    first = parse_uri("sip:alice@example.com;transport=udp;lr")
    second = parse_uri("sip:alice@example.com;lr;transport=udp")
    assert first == second and hash(first) == hash(second)
    assert len({first, second, parse_uri("sip:bob@example.com")}) == 2
    assert hash(parse_uri("tel:+1555;a=b")) == hash(TelUri("+1555", {"a": "b"}))
    assert first != parse_uri("sip:alice@example.com")


def test_host_helpers() -> None:
    assert parse_host("[::1]") == "::1" and format_host("::1") == "[::1]"
    assert format_host("example.com") == "example.com"
    assert parse_hostport("example.com:5060") == ("example.com", 5060)
    assert parse_hostport("[::1]") == ("::1", None)
    assert parse_hostport("[::1]:5070") == ("::1", 5070)


def test_params() -> None:
    assert parse_params("") == {}
    assert parse_params(" A = 1 ; B ;c=") == {"a": "1", "b": None, "c": ""}
    assert parse_params('x="a;b";y="c\\";d";z') == {"x": '"a;b"', "y": '"c\\";d"', "z": None}
    assert parse_params('x="<urn:uuid:1>";reg-id=1') == {"x": '"<urn:uuid:1>"', "reg-id": "1"}
    assert format_params({"lr": None, "transport": "tcp"}) == ";lr;transport=tcp"
    for bad in (
        ";",
        ";a",
        "a;",
        "a;;b",
        "a; ;b",
        "=1",
        '"a=1',
        'a"=1',
        'a=x"y',
        'a="x;b=1',
        'a="x"y',
    ):
        with pytest.raises(SipParseError):
            parse_params(bad)


# -- the cache of parsed URIs ------------------------------------------------------------
def test_a_uri_seen_again_is_the_same_object() -> None:
    first = parse_uri("sip:cache-alice@pbx.test;transport=tcp")
    again = parse_uri("sip:cache-alice@pbx.test;transport=tcp")
    assert again is first
    assert parse_uri("sip:cache-alice@pbx.test") is not first


def test_the_cache_stays_within_its_bound_and_forgets_the_oldest() -> None:
    from core.sip import uri as uri_module

    oldest = parse_uri("sip:cache-oldest@pbx.test")
    for number in range(uri_module._PARSED_URIS_LIMIT + 10):
        parse_uri(f"sip:cache-{number}@pbx.test")
    assert len(uri_module._PARSED_URIS) <= uri_module._PARSED_URIS_LIMIT
    assert "sip:cache-oldest@pbx.test" not in uri_module._PARSED_URIS
    assert parse_uri("sip:cache-oldest@pbx.test") == oldest  # parsed afresh, same value


def test_long_uris_are_not_kept() -> None:
    from core.sip import uri as uri_module

    text = "sip:" + "a" * 300 + "@pbx.test"
    assert parse_uri(text).user == "a" * 300
    assert text not in uri_module._PARSED_URIS


def test_a_malformed_uri_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_uri("sip:alice@")
