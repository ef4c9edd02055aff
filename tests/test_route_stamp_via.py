"""stamp_via: received= and rport on the top Via (RFC 3261 §18.2.1, RFC 3581 §4).

The stamp edits the top Via's text when that text is as str() prints it; whatever the path,
the header line and the cached view must be what printing the element with the parameters
replaced gives (the way stamp_via always worked, written out here as the reference).
"""

from __future__ import annotations

import pytest

from core.net.flow import Flow
from core.route import stamp_via
from core.sip.message import Request
from core.sip.parser import parse_message


def _request(via_lines: list[str]) -> Request:
    vias = "".join(f"Via: {line}\r\n" for line in via_lines)
    text = (
        f"OPTIONS sip:pbx.test SIP/2.0\r\n{vias}Max-Forwards: 70\r\n"
        "From: <sip:alice@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\n"
        "Call-ID: stamp-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


def _reference(request: Request, flow: Flow) -> tuple[list[tuple[str, str]], list[str]]:
    """What stamp_via did before it learnt to edit text: the header lines and printed Vias."""
    vias = request.vias
    via = vias[0]
    ip, port = flow.remote
    params: dict[str, str | None] = {}
    if via.host != ip or via.received not in (None, ip):
        params["received"] = ip
    if via.wants_rport and via.params.get("rport") != str(port):
        params["rport"] = str(port)
        params.setdefault("received", ip)
    if params:
        stamped = via.with_params(**params)
        vias[0] = stamped
        request.headers.replace_first_value("Via", str(stamped), view=vias)
    return list(request.headers), [str(v) for v in request.vias]


_TOPS = [
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=5060",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=1234;received=198.51.100.66",
    "SIP/2.0/UDP 192.0.2.1:5060;received=198.51.100.66;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 192.0.2.1:5060;received=203.0.113.7;branch=z9hG4bK1;rport=5062",
    "SIP/2.0/UDP 192.0.2.1:5060;received;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rportx=1;xrport;rport",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;x-received=1;receivedx",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=;received=",
    "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1",
    "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1;rport=5062",
    "SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK1;rport=5062;received=203.0.113.7",
    "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK1;rport;received=2001:db8::66",
    "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1;rport",
    # Not as str() prints them: the general path, the same result.
    "SIP / 2.0 / udp 192.0.2.1 : 5060 ; BRANCH = z9hG4bK1 ; RPort",
    "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport;rport=99",
    'SIP/2.0/UDP 192.0.2.1;branch="z9hG4bK;1";rport',
    "SIP/2.0/UDP 192.0.2.1:05060;branch=z9hG4bK1;rport",
    "SIP/2.0/UDP 192.0.2.1;Received=198.51.100.66;branch=z9hG4bK1;rport",
]
_BELOW = [[], ["SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK0"]]
_FLOWS = [
    Flow("udp", ("203.0.113.7", 5062), ("192.0.2.10", 5060)),
    Flow("udp", ("192.0.2.1", 5060), ("192.0.2.10", 5060)),
    Flow("tcp", ("2001:db8::66", 40000), ("2001:db8::10", 5060), connection_id=3),
]


@pytest.mark.parametrize("top", _TOPS)
@pytest.mark.parametrize("below", _BELOW)
@pytest.mark.parametrize("flow", _FLOWS)
@pytest.mark.parametrize("one_line", [False, True])
def test_stamp_via_gives_what_printing_the_stamped_via_gave(
    top: str, below: list[str], flow: Flow, one_line: bool
) -> None:
    lines = [" ,  ".join([top, *below])] if one_line else [top, *below]
    request, expected = _request(lines), _request(lines)
    stamp_via(request, flow)
    wanted_lines, wanted_vias = _reference(expected, flow)
    assert list(request.headers) == wanted_lines
    assert [str(via) for via in request.vias] == wanted_vias
    assert request.vias == expected.vias
    # The cached view is what parsing the stamped lines gives.
    again = _request([value for name, value in request.headers if name == "Via"])
    assert request.vias == again.vias


def test_stamp_via_overwrites_what_the_client_claims() -> None:
    claimed = "SIP/2.0/UDP 192.0.2.1:5060;rport=1;received=198.51.100.66;branch=z9hG4bK1"
    request = _request([claimed])
    stamp_via(request, Flow("udp", ("203.0.113.7", 5062), ("192.0.2.10", 5060)))
    assert request.headers.get("via") == (
        "SIP/2.0/UDP 192.0.2.1:5060;rport=5062;received=203.0.113.7;branch=z9hG4bK1"
    )
    top = request.top_via
    assert top is not None and (top.received, top.rport) == ("203.0.113.7", 5062)
    assert str(top) == request.headers.get("via")
    assert top.text is not None  # edited as text, not printed again
