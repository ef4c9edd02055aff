"""What a route step decided: carry on, drop silently, or answer with this response.

Kamailio's request_route reads top to bottom because each step either falls through or
`exit`s, having sent a reply or not. Here a step returns one of three values instead and the
route does the sending, so no step hides I/O:

    verdict = security.reqinit(request, flow, now)
    if verdict is not CONTINUE:
        return verdict          # Drop → nothing sent; Reply → send verdict.response

`Drop` and `Reply` carry why, for the traffic view and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from core.sip import Response


@dataclass(frozen=True, slots=True)
class Continue:
    """The step passed: go on to the next one. Use the `CONTINUE` singleton."""


CONTINUE: Final = Continue()


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing (an ACK, a scanner, a message no response could reach)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer statelessly with `response` and stop."""

    response: Response


Verdict = Continue | Drop | Reply
