"""The one error the SIP layer raises for bad input.

Like h11's `error_status_hint`, the error carries the answer: the status code and a reason
phrase the route can put straight into the response ("400 Bad CSeq method"). Anything the
parser or a header view rejects surfaces as `SipParseError`, never as a bare ValueError or
IndexError, so the route needs exactly one `except`.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """Malformed SIP. `status` and `reason` are what to answer with when an answer is possible.

    `partial` holds the message (a `core.sip.message.Request` or `Response`) when its start
    line and headers parsed, so a request whose body or a header value is broken can still be
    answered (the response needs its Via, From, To, Call-ID and CSeq). It is typed `object`
    because every module of the SIP layer raises this error, the message model included: the
    error names no type above it, and the route checks what it got with `isinstance`.
    """

    def __init__(self, reason: str, status: int = 400, partial: object | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
