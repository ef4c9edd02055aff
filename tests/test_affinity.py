"""Which process owns a message: found from the raw bytes, the same for every message of a
call, and main's own keep-alives come back to main."""

from __future__ import annotations

from collections import Counter

import pytest
from support.client import request_text

from core.cluster.affinity import MAIN, MAIN_CALL_ID_PREFIX, call_id_of, owner_of

LOCAL = ("127.0.0.1", 5062)


def test_the_call_id_is_found_in_every_spelling() -> None:
    request = request_text("INVITE", "sip:bob@pbx.test", local=LOCAL, call_id="abc@host")
    assert call_id_of(request.encode()) == b"abc@host"
    for header in ("call-id:  abc@host ", "CALL-ID : abc@host", "i: abc@host", "I:abc@host"):
        data = request.replace("Call-ID: abc@host", header).encode()
        assert call_id_of(data) == b"abc@host", header


def test_a_call_id_in_the_body_does_not_count() -> None:
    text = request_text("MESSAGE", "sip:bob@pbx.test", local=LOCAL, body="x\r\nCall-ID: other\r\n")
    data = text.replace("Call-ID: ", "X-Not-Call-ID: ").encode()
    assert call_id_of(data) is None
    assert owner_of(data, 4) == 1  # no Call-ID: one worker takes it, and answers 400


def test_every_message_of_a_call_has_one_owner_and_calls_spread() -> None:
    owners = Counter()
    for number in range(2_000):
        call_id = f"{number}-call@phone"
        invite = request_text("INVITE", "sip:bob@pbx.test", local=LOCAL, call_id=call_id)
        response = f"SIP/2.0 180 Ringing\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\r\n"
        bye = request_text("BYE", "sip:alice@192.0.2.1", local=LOCAL, call_id=call_id, cseq=2)
        owner = owner_of(invite.encode(), 3)
        assert owner_of(response.encode(), 3) == owner == owner_of(bye.encode(), 3)
        owners[owner] += 1
    assert set(owners) == {1, 2, 3}
    assert min(owners.values()) > 2_000 / 3 * 0.8  # even enough to share the load


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_main_owns_its_own_keepalives(workers: int) -> None:
    call_id = f"{MAIN_CALL_ID_PREFIX}0123456789@pbx.test"
    answer = f"SIP/2.0 200 OK\r\nCall-ID: {call_id}\r\nCSeq: 7 OPTIONS\r\n\r\n".encode()
    assert owner_of(answer, workers) == MAIN
