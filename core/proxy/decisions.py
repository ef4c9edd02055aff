"""What the carrier trunks decide, and the proxy or the route carries out.

The trunks (core/trunks/trunks.py) know carriers, DIDs, gateways and the toll-fraud limits;
the proxy knows transactions and branches. The trunks never send: asked about a request, they
answer with a decision, and the part that asked acts on it:

    Refuse(status, reason)   the asker replies with that status (and publishes nothing: the
                             trunks reported what needs reporting)
    ToUser(uri)              the request is for a local user after all (a DID): its
                             Request-URI becomes `uri` and it is routed as to any user
    Dial(target, callee)     an outbound call: the proxy forks it to the gateway `target`

While a call to a gateway is under way the proxy asks again for each copy it sends
(`rewrite`: CSeq shift, caller ID, credentials) and for each attempt that fails (`reroute`:
the gateway's challenge answered, or the next gateway). `NoCarriers` is the answer of a PBX
without trunks: 404 for our own domain, 403 for any other (no open relay).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from core.net.flow import Flow
from core.proxy.forking import Branch
from core.registrar.location import Target
from core.sip.headers import Headers, header_key
from core.sip.message import Request, Response
from core.sip.uri import SipUri

# Identity headers a phone may send and a carrier would believe (RFC 3325 §9.1): removed from
# every call to a gateway, so a user cannot choose whom to pose as.
IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID")
_IDENTITY_KEYS = frozenset(header_key(name) for name in IDENTITY_HEADERS)


def remove_identity_headers(headers: Headers) -> None:
    """Remove every identity header (RFC 3325 §9.1). Nearly no request carries one: a single
    look over the header names, where removing each by name would rebuild the list thrice."""
    if not _IDENTITY_KEYS.isdisjoint(headers.lookup_keys()):
        for name in IDENTITY_HEADERS:
            headers.remove(name)


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the request with `status` (and `extra` headers, e.g. Retry-After)."""

    status: int
    reason: str | None = None
    extra: list[tuple[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class ToUser:
    """Route the request to a local user: its Request-URI becomes `uri`."""

    uri: SipUri


@dataclass(frozen=True, slots=True)
class Dial:
    """Fork the request to the gateway `target`; `callee` is the number as the call shows it.
    The rest is for the call's CDR: the carrier and gateway address of the attempt, and the
    number as dialled and in canonical form (what the carrier's rates match)."""

    target: Target
    callee: str
    carrier: str = ""
    gateway: str = ""
    dialled: str = ""
    number: str = ""


Decision = Refuse | ToUser | Dial


@dataclass(slots=True)
class Rewrite:
    """How a copy of the caller's request changes on its way to a gateway (RFC 3261 §22.2:
    a challenge answered is a new transaction, so the gateway's CSeqs run ahead of the
    caller's by `cseq_shift`; RFC 3325: the caller ID is ours to set)."""

    cseq_shift: int
    from_value: str | None  # From as carriers see it; None: unchanged
    initial: bool  # the initial INVITE: no route set or identity of the phone's own
    identity_value: str | None = None  # P-Asserted-Identity of an initial INVITE
    authorization: tuple[str, str] | None = None  # (header, value) answering a challenge


def apply_rewrite(rewrite: Rewrite, request: Request, headers: Headers) -> None:
    """Carry out `rewrite` on `headers`, the copy of `request` about to go out."""
    shift = rewrite.cseq_shift
    if shift:
        cseq = request.cseq
        if cseq is not None:
            headers.set("CSeq", f"{cseq.number + shift} {cseq.method}")
    if rewrite.from_value is not None:
        headers.set("From", rewrite.from_value)
    if rewrite.initial:
        # The call goes to the gateway and nowhere else: no route set of the phone's (our own
        # entries were consumed), no identity of its choosing.
        headers.remove("route")
        remove_identity_headers(headers)
        if rewrite.identity_value is not None:
            headers.add("P-Asserted-Identity", rewrite.identity_value)
        if rewrite.authorization is not None:
            headers.add(*rewrite.authorization)


class Carriers(Protocol):
    """What the proxy asks of the trunks (core/trunks/trunks.py `Trunks`)."""

    def outbound(
        self, request: Request, caller: str | None, flow: Flow, now: float, *, ours: bool
    ) -> Decision: ...

    def not_dialled(self, call_id: str, now: float) -> None: ...

    def reroute(
        self, branch: Branch, status: int, response: Response | None, now: float
    ) -> Target | None: ...

    def rewrite(self, request: Request) -> Rewrite | None: ...

    def trusts(self, flow: Flow) -> bool: ...


class NoCarriers:
    """No trunks: requests for numbers and other domains are refused, nothing is rewritten."""

    def outbound(
        self, request: Request, caller: str | None, flow: Flow, now: float, *, ours: bool
    ) -> Decision:
        if ours:
            return Refuse(404)
        return Refuse(403, "Outbound calls not allowed")

    def not_dialled(self, call_id: str, now: float) -> None:
        return None

    def reroute(
        self, branch: Branch, status: int, response: Response | None, now: float
    ) -> Target | None:
        return None

    def rewrite(self, request: Request) -> Rewrite | None:
        return None

    def trusts(self, flow: Flow) -> bool:
        return False
