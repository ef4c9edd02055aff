"""An outbound call's attempts at the carriers' gateways: which to try, when to move on,
and the digest answer to a gateway's challenge (RFC 3261 §22.2, as a client)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from core.net.flow import Flow
from core.sip.digest import DigestChallengeError, build_authorization, pick_challenge
from core.sip.errors import SipParseError
from core.sip.fields import parse_auth
from core.sip.message import Request, Response
from core.trunks.dialplan import DialledNumber
from core.trunks.gateways import Gateway, GatewayTarget

FAILOVER_STATUSES = frozenset({408, 500, 502, 503, 504})  # and any other 5xx


def address_text(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def fails_over(status: int) -> bool:
    """RFC 3263 §4.3: try the next server on a transport failure / timeout (we see 503 or
    408 from the transaction layer) or a 5xx; a 4xx or 6xx is the callee's answer."""
    return status in FAILOVER_STATUSES or 500 <= status < 600


@dataclass(slots=True, eq=False)
class OutboundCall:
    """One call on its way out: the attempts it may make and how its requests are rewritten."""

    call_id: str
    caller: str
    caller_tag: str
    number: DialledNumber
    targets: list[GatewayTarget]
    arrived: Flow  # the caller's flow: our local address for each attempt's flow
    from_value: str | None = None  # From as carriers see it (caller ID); None: unchanged
    identity_value: str | None = None  # P-Asserted-Identity; None: none sent
    attempt: int = 0  # index in `targets` of the attempt under way
    challenged: bool = False  # this attempt's challenge was answered already
    cseq_shift: int = 0  # how much higher the gateway's CSeqs are than the caller's
    authorization: tuple[str, str] | None = None  # for the next INVITE copy only
    finished_at: float | None = None

    @property
    def target(self) -> GatewayTarget:
        return self.targets[self.attempt]


def gateway_authorization(
    gateway: Gateway, sent: Request, response: Response, status: int
) -> tuple[str, str] | None:
    """The Authorization (401) or Proxy-Authorization (407) for the carrier's challenge."""
    if not gateway.has_credentials:
        return None
    header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    challenges = []
    for value in response.headers.get_all(header):
        with contextlib.suppress(SipParseError):
            challenges.append(parse_auth(value))
    challenge = pick_challenge(challenges)
    if challenge is None:
        return None
    try:
        value = build_authorization(
            challenge,
            gateway.username or "",
            gateway.password or "",
            sent.method,
            str(sent.uri),
            body=sent.body,
        )
    except DigestChallengeError:
        return None
    return ("Authorization" if status == 401 else "Proxy-Authorization"), value
