"""How a call ended, in the words a bill or a carrier report uses.

Every CDR gets one disposition, decided from what the proxy saw (the answer time, the final
SIP status, the reason the call was ended) rather than stored as a guess at the time:

    answered            a 2xx was relayed (whatever ended the call afterwards)
    media timeout       answered, then ended by us because no media flowed
    busy                486 Busy Here, 600 Busy Everywhere (RFC 3261 §21.4.24, §21.6.1)
    no answer           408: nobody answered before the ringing timeout (§21.4.9)
    cancelled           487: the caller gave up (CANCEL, §9.1)
    refused by policy   we refused the call: outbound policy, call or spend limits
    failed              anything else (4xx/5xx/6xx from the callee or the carrier, 480 ...)

and one side that hung up: `caller`, `callee`, or `pbx` when we ended it (maximum duration,
spend limit, media timeout) or refused it.
"""

from __future__ import annotations

ANSWERED = "answered"
BUSY = "busy"
NO_ANSWER = "no answer"
CANCELLED = "cancelled"
FAILED = "failed"
REFUSED = "refused by policy"
MEDIA_TIMEOUT = "media timeout"
DISPOSITIONS = (ANSWERED, BUSY, NO_ANSWER, CANCELLED, FAILED, REFUSED, MEDIA_TIMEOUT)

CALLER = "caller"
CALLEE = "callee"
PBX = "pbx"
SIDES = (CALLER, CALLEE, PBX)

# The reasons the proxy records when a side's BYE ends a call (core/proxy/dialogs.py).
CALLER_HUNG_UP = "caller hung up"
CALLEE_HUNG_UP = "callee hung up"
MEDIA_TIMEOUT_REASON = "media timeout"

_BUSY_STATUSES = frozenset({486, 600})


def disposition_of(answered: bool, status: int, reason: str, refused: bool = False) -> str:
    """The disposition of a finished call (see the table above)."""
    if answered:
        return MEDIA_TIMEOUT if reason == MEDIA_TIMEOUT_REASON else ANSWERED
    if refused:
        return REFUSED
    if status in _BUSY_STATUSES:
        return BUSY
    if status == 408:
        return NO_ANSWER
    if status == 487:
        return CANCELLED
    return FAILED


def side_of(disposition: str, reason: str) -> str:
    """Which side ended the call: the one whose BYE did, the caller for a CANCEL, the callee
    for an answer that refused, and the PBX for whatever it ended or refused itself."""
    if reason == CALLER_HUNG_UP:
        return CALLER
    if reason == CALLEE_HUNG_UP:
        return CALLEE
    if disposition == CANCELLED:
        return CALLER
    if disposition in (BUSY, FAILED):
        return CALLEE
    return PBX
