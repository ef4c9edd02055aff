"""`cdr_for` builds the CDR row positionally (core/accounting/cdrs.py): every field must land
where its name says, for answered, failed, refused and forked calls alike."""

from __future__ import annotations

import dataclasses
import random

from core.accounting.cdrs import MAX_CONTACT_CHARS, cdr_for
from core.accounting.disposition import (
    CALLEE_HUNG_UP,
    CALLER_HUNG_UP,
    MEDIA_TIMEOUT_REASON,
    disposition_of,
    side_of,
)
from core.proxy.calls import Call
from core.store.rows import CdrRow

REASONS = (CALLER_HUNG_UP, CALLEE_HUNG_UP, MEDIA_TIMEOUT_REASON, "", "max duration", "CANCEL")
STATUSES = (200, 408, 480, 486, 487, 503, 600, 0)
CONTACTS = (
    "",
    '"Bob" <sip:bob@192.0.2.7:5060;transport=udp>;expires=60',
    "sip:bob@192.0.2.7;ob",
    "<sip:" + "b" * 400 + "@x>",
    "<sip:unclosed@192.0.2.7",
)


def _random_call(rng: random.Random, index: int) -> Call:
    started = rng.uniform(1e9, 2e9)
    answered = rng.random() < 0.6
    call = Call(
        f"call-{index}@bench",
        rng.choice(["alice", "bob", "+15551234"]),
        rng.choice(["carol", "0044207", "dave"]),
        (rng.choice(["192.0.2.10", "2001:db8::5"]), rng.randrange(1, 65536)),
        started,
        direction=rng.choice(["internal", "inbound", "outbound"]),
        carrier=rng.choice(["", "telco"]),
        gateway=rng.choice(["", "198.51.100.1:5060"]),
        dialled=rng.choice(["", "0044207"]),
        number=rng.choice(["", "44207"]),
        callee_contact=rng.choice(CONTACTS),
    )
    call.answered_at = started + rng.uniform(0, 30) if answered else None
    call.ended_at = rng.choice([None, started + rng.uniform(0, 4000)])
    call.status = rng.choice(STATUSES)
    call.reason = rng.choice(REASONS)
    call.refused = rng.random() < 0.1
    return call


def _expected(call: Call) -> CdrRow:
    """The row as the keywords name it (how cdr_for built it before it went positional)."""
    duration = 0.0
    if call.answered_at is not None and call.ended_at is not None:
        duration = max(0.0, call.ended_at - call.answered_at)
    disposition = disposition_of(
        call.answered_at is not None, call.status, call.reason, call.refused
    )
    contact = ""
    if call.answered_at is not None:
        value = call.callee_contact
        start = value.find("<")
        if start >= 0:
            end = value.find(">", start)
            value = value[start + 1 : end if end > 0 else len(value)]
        else:
            value = value.split(";", 1)[0]
        contact = value.strip()[:MAX_CONTACT_CHARS]
    return CdrRow(
        call_id=call.call_id,
        caller=call.caller,
        callee=call.callee,
        source_ip=call.source[0],
        direction=call.direction,
        started_at=call.started_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        status=call.status,
        reason=call.reason,
        duration=round(duration, 3),
        disposition=disposition,
        hangup_side=side_of(disposition, call.reason),
        carrier=call.carrier,
        gateway=call.gateway,
        dialled=call.dialled,
        number=call.number,
        contact=contact,
    )


def test_every_field_of_the_cdr_is_the_one_its_name_says() -> None:
    rng = random.Random(21)
    for index in range(2_000):
        call = _random_call(rng, index)
        row = cdr_for(call)
        expected = _expected(call)
        for field in dataclasses.fields(CdrRow):
            assert getattr(row, field.name) == getattr(expected, field.name), (
                field.name,
                call,
            )
        assert row.id is None and row.cost == 0 and row.currency == ""
