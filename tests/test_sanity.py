"""REQINIT's Max-Forwards and sanity checks, one test per check, through `Security.reqinit`.

Requests are real bytes through the real parser; only the header under test is changed.
"""

from __future__ import annotations

import pytest

from core.events import EventBus, SecurityEvent
from core.net.flow import Flow
from core.security.guard import Security
from core.security.sanity import check_request
from core.security.verdict import CONTINUE, Drop, Reply
from core.settings import SecuritySettings
from core.sip import Request, parse_message

UDP = Flow("udp", ("192.0.2.10", 5060), ("192.0.2.1", 5060))
TCP = Flow("tcp", ("192.0.2.10", 40312), ("192.0.2.1", 5060), connection_id=7)

BASE_HEADERS: list[tuple[str, str]] = [
    ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"),
    ("Max-Forwards", "70"),
    ("To", "Bob <sip:bob@pbx.test>"),
    ("From", '"Alice" <sip:alice@pbx.test>;tag=1928301774'),
    ("Call-ID", "a84b4c76e66710@192.0.2.10"),
    ("CSeq", "314159 INVITE"),
    ("Contact", "<sip:alice@192.0.2.10:5060>"),
    ("User-Agent", "Yealink SIP-T46S 66.86.0.15"),
    ("Content-Length", "0"),
]


def sip_request(
    method: str = "INVITE",
    uri: str = "sip:bob@pbx.test",
    *,
    replace: dict[str, str | None] | None = None,
    add: list[tuple[str, str]] | None = None,
    stream: bool = False,
) -> Request:
    """The base request with headers replaced (None removes one) or added, parsed."""
    replace = dict(replace or {})
    lines: list[tuple[str, str]] = []
    for name, value in BASE_HEADERS:
        if name == "CSeq" and "CSeq" not in replace:
            value = f"314159 {method}"
        if name in replace:
            new_value = replace.pop(name)
            if new_value is None:
                continue
            value = new_value
        lines.append((name, value))
    lines.extend(add or [])
    text = f"{method} {uri} SIP/2.0\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines) + "\r\n"
    message = parse_message(text.encode(), stream=stream)
    assert isinstance(message, Request)
    return message


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


@pytest.fixture
def security(bus: EventBus) -> Security:
    return Security(SecuritySettings(), bus)


def refused(verdict: object) -> tuple[int, str]:
    assert isinstance(verdict, Reply), verdict
    return verdict.response.status, verdict.response.reason


def test_valid_requests_continue(security: Security) -> None:
    assert security.reqinit(sip_request(), UDP, 0.0) is CONTINUE
    assert security.reqinit(sip_request("ACK"), UDP, 0.0) is CONTINUE
    assert security.reqinit(sip_request("CANCEL"), UDP, 0.0) is CONTINUE
    register = sip_request(
        "REGISTER", "sip:pbx.test", replace={"Contact": "*"}, add=[("Expires", "0")]
    )
    assert security.reqinit(register, UDP, 0.0) is CONTINUE
    assert security.reqinit(sip_request("OPTIONS", "tel:+15551234"), UDP, 0.0) is CONTINUE
    tagged_words = sip_request(replace={"From": '"Vintage tag" <sip:tag@pbx.test;tag>;tag=1'})
    assert security.reqinit(tagged_words, UDP, 0.0) is CONTINUE


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"From": None}, 400, "Missing From"),
        ({"To": None}, 400, "Missing To"),
        ({"Call-ID": None}, 400, "Missing Call-ID"),
        ({"CSeq": None}, 400, "Missing CSeq"),
        ({"Call-ID": ""}, 400, "Bad Call-ID"),
        ({"Call-ID": "a84b 4c76"}, 400, "Bad Call-ID"),
        ({"CSeq": "314159 BYE"}, 400, "Bad CSeq method"),
        ({"CSeq": "314159 invite"}, 400, "Bad CSeq method"),
        ({"CSeq": "314159"}, 400, "Bad CSeq"),
        ({"CSeq": "x1 INVITE"}, 400, "Bad CSeq number"),
        ({"CSeq": "4294967296 INVITE"}, 400, "Bad CSeq number"),
        ({"CSeq": "99999999999 INVITE"}, 400, "Bad CSeq number"),
        ({"Via": "SIP/2.0/UDP 192.0.2.10:5060;rport"}, 400, "Missing Via branch"),
        ({"Via": "SIP/3.0/UDP 192.0.2.10;branch=z9hG4bK1"}, 400, "Bad Via protocol"),
        ({"Via": "nonsense"}, 400, "Bad Via"),
        ({"From": "<sip:alice@pbx.test>"}, 400, "Missing From tag"),
        ({"From": "<sip:alice@pbx.test;tag=1"}, 400, "Bad From header"),
        ({"To": "<sip:bob@bad_host!>"}, 400, "Bad To header"),
        ({"From": "<sip:alice@pbx.test>;tag=1;tag=2"}, 400, "Duplicate From tag"),
        ({"From": "sip:alice@pbx.test;tag=1;TAG=2"}, 400, "Duplicate From tag"),
        ({"To": "<sip:bob@pbx.test>;tag=a;tag=b"}, 400, "Duplicate To tag"),
        ({"Contact": "<sip:alice@192.0.2.10 :5060>"}, 400, "Bad Contact"),
        ({"Contact": "*"}, 400, "Bad Contact"),
        ({"Max-Forwards": "many"}, 400, "Bad Max-Forwards"),
        ({"Max-Forwards": "0"}, 483, "Too Many Hops"),
    ],
)
def test_each_sanity_failure_is_answered_with_its_reason(
    security: Security, change: dict[str, str | None], status: int, reason: str
) -> None:
    request = sip_request(replace=change)
    assert refused(security.reqinit(request, UDP, 0.0)) == (status, reason)


def test_the_answer_is_built_from_the_request(security: Security) -> None:
    verdict = security.reqinit(sip_request(replace={"CSeq": "7 BYE"}), UDP, 0.0)
    assert isinstance(verdict, Reply)
    response = verdict.response
    assert response.call_id == "a84b4c76e66710@192.0.2.10"
    assert response.headers.get("cseq") == "7 BYE"
    assert response.top_via is not None and response.top_via.branch == "z9hG4bK776asdhds"
    assert response.to_bytes().startswith(b"SIP/2.0 400 Bad CSeq method\r\n")


def test_bad_expires(security: Security) -> None:
    request = sip_request("REGISTER", "sip:pbx.test", add=[("Expires", "soon")])
    assert refused(security.reqinit(request, UDP, 0.0)) == (400, "Bad Expires")


def test_duplicate_single_valued_header(security: Security) -> None:
    request = sip_request(add=[("f", "<sip:mallory@pbx.test>;tag=9")])  # compact form of From
    assert refused(security.reqinit(request, UDP, 0.0)) == (400, "Duplicate From header")


@pytest.mark.parametrize(
    ("replace", "add", "stream", "expected"),
    [({}, [("ROUTE", "<sip:p1@pbx.test;lr>, <sip:bad")], False, (400, "Bad Route header")),
     ({}, [("route", "<sip:p1@pbx.test;lr>")], False, None),
     ({}, [("EXPIRES", "soon")], False, (400, "Bad Expires")),
     ({}, [("expires", "60")], False, None),
     ({}, [("proxy-REQUIRE", "foo")], False, (420, "Bad Extension")),
     ({"Content-Length": None}, [("l", "0")], True, None),
     ({"Content-Length": None}, [], True, (400, "Missing Content-Length")),
     ({}, [("Route", "<sip:p1@pbx.test;lr>"), ("Route", "<sip:p2@pbx.test;lr>")], False, None),
     ({}, [("Route", "<sip:p1@pbx.test;lr>"), ("i", "again")], False,
      (400, "Duplicate Call-ID header")),
     ({}, [("v", "SIP/2.0/TCP 192.0.2.9;branch=z9hG4bKx"), ("Expires", "x")], False,
      (400, "Bad Expires"))],
)  # fmt: skip
def test_checks_of_headers_by_any_spelling(
    security: Security,
    replace: dict[str, str | None],
    add: list[tuple[str, str]],
    stream: bool,
    expected: tuple[int, str] | None,
) -> None:
    """A header is found under any spelling (case, compact form) whether it is checked or
    skipped as absent; repeated list headers are fine, a repeated single-valued one is not."""
    request = sip_request(replace=replace, add=add, stream=stream)
    verdict = security.reqinit(request, TCP if stream else UDP, 0.0)
    assert (verdict is CONTINUE) if expected is None else refused(verdict) == expected


def test_unsupported_request_uri_scheme_gets_416(security: Security) -> None:
    request = sip_request(uri="mailto:bob@pbx.test")
    assert refused(security.reqinit(request, UDP, 0.0)) == (416, "Unsupported URI Scheme")


def test_proxy_require_gets_420_listing_the_unsupported_tags(security: Security) -> None:
    request = sip_request(add=[("Proxy-Require", "foo, sec-agree")])
    verdict = security.reqinit(request, UDP, 0.0)
    assert refused(verdict) == (420, "Bad Extension")
    assert isinstance(verdict, Reply)
    assert verdict.response.headers.get("unsupported") == "foo, sec-agree"


def test_proxy_require_is_ignored_in_cancel_and_ack(security: Security) -> None:
    # RFC 3261 §8.2.2.3: these header fields MUST be ignored in CANCEL and non-2xx ACK.
    for method in ("CANCEL", "ACK"):
        request = sip_request(method, add=[("Proxy-Require", "foo")])
        assert security.reqinit(request, UDP, 0.0) is CONTINUE


def test_missing_content_length_refused_on_tcp_only(security: Security) -> None:
    assert security.reqinit(sip_request(replace={"Content-Length": None}), UDP, 0.0) is CONTINUE
    request = sip_request(replace={"Content-Length": None}, stream=True)
    assert refused(security.reqinit(request, TCP, 0.0)) == (400, "Missing Content-Length")
    with_length = sip_request(stream=True)
    assert security.reqinit(with_length, TCP, 0.0) is CONTINUE


def test_missing_via_is_dropped_because_no_response_could_be_routed(security: Security) -> None:
    verdict = security.reqinit(sip_request(replace={"Via": None}), UDP, 0.0)
    assert verdict == Drop("400 Missing Via")
    no_via_no_hops = sip_request(replace={"Via": None, "Max-Forwards": "0"})
    assert security.reqinit(no_via_no_hops, UDP, 0.0) == Drop("483 Too Many Hops")


@pytest.mark.parametrize(
    "change",
    [{"CSeq": "1 INVITE"}, {"Call-ID": None}, {"Max-Forwards": "0"}, {"From": "<sip:a@b>"}],
)
def test_a_bad_ack_is_never_answered(security: Security, change: dict[str, str | None]) -> None:
    verdict = security.reqinit(sip_request("ACK", replace=change), UDP, 0.0)
    assert isinstance(verdict, Drop)


def test_max_forwards_is_added_when_missing(security: Security) -> None:
    request = sip_request(replace={"Max-Forwards": None})
    assert security.reqinit(request, UDP, 0.0) is CONTINUE
    assert request.headers.get_all("max-forwards") == ["70"]
    assert request.max_forwards == 70


def test_max_forwards_zero_gets_483_even_for_options_to_us(security: Security) -> None:
    # RFC 3261 §16.3 step 3 lets a proxy answer OPTIONS itself instead (MAY); we say 483.
    for uri in ("sip:pbx.test", "sip:alice@pbx.test"):
        request = sip_request("OPTIONS", uri, replace={"Max-Forwards": "0"})
        assert refused(security.reqinit(request, UDP, 0.0)) == (483, "Too Many Hops")
    assert security.reqinit(sip_request(replace={"Max-Forwards": "1"}), UDP, 0.0) is CONTINUE


def test_refusals_are_counted_and_published(security: Security, bus: EventBus) -> None:
    security.reqinit(sip_request(replace={"CSeq": "1 BYE"}), UDP, 0.0)
    security.reqinit(sip_request(replace={"Max-Forwards": "0"}), UDP, 0.0)
    events, _, _ = bus.feed.read_since(0)
    actions = [(e.action, e.source, e.detail) for e in events if isinstance(e, SecurityEvent)]
    assert actions == [
        ("sanity-rejected", "192.0.2.10", "INVITE: 400 Bad CSeq method"),
        ("max-forwards", "192.0.2.10", "INVITE: 483 Too Many Hops"),
    ]
    assert security.stats.sanity_rejects == 1
    assert security.stats.max_forwards_rejects == 1


def test_check_request_alone_passes_a_good_request() -> None:
    assert check_request(sip_request(), reliable=False) is None
