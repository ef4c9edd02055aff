"""core/sip/entropy.py: random bytes cut from blocks, never the same twice, not across fork."""

from __future__ import annotations

import os
import re

import pytest

from core.sip import new_branch, new_tag
from core.sip.digest import NonceFactory
from core.sip.entropy import BLOCK_BYTES, random_bytes, random_hex


def test_values_have_the_lengths_and_shapes_asked_for() -> None:
    for count in (0, 1, 6, 8, 100, BLOCK_BYTES, BLOCK_BYTES + 1):
        assert len(random_bytes(count)) == count
        text = random_hex(count)
        assert len(text) == 2 * count
        assert re.fullmatch("[0-9a-f]*", text)
    assert re.fullmatch("[0-9a-f]{12}", new_tag())
    assert re.fullmatch("z9hG4bK[0-9a-f]{16}", new_branch())


def test_no_value_repeats_across_many_blocks() -> None:
    """Each byte is handed out once: values cut from one block and across refills differ."""
    count = 3 * BLOCK_BYTES // 6
    assert len({random_bytes(6) for _ in range(count)}) == count
    assert len({random_hex(8) for _ in range(count)}) == count
    tags = {new_tag() for _ in range(count)}
    assert len(tags) == count


def _child_values(make: object) -> tuple[list[str], list[str]]:
    """Values made in a forked child and then in the parent, from the same inherited pool."""
    assert callable(make)
    make()  # the parent's pool holds a partly used block when it forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read)
            os.write(write, "\n".join(str(make()) for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = b"".join(chunks).decode().split("\n")
    parent = [str(make()) for _ in range(50)]
    return child, parent


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize(
    "make",
    [new_tag, new_branch, lambda: random_bytes(6).hex(), lambda: random_hex(8)],
    ids=["tag", "branch", "bytes", "hex"],
)
def test_a_forked_child_hands_out_none_of_its_parents_bytes(make: object) -> None:
    child, parent = _child_values(make)
    assert len(child) == 50
    assert not set(child) & set(parent)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_nonces_made_in_a_forked_worker_differ_from_the_parents() -> None:
    """Workers fork from one process: the same millisecond must not give the same nonce."""
    factory = NonceFactory(b"s" * 32, 300.0, issuer=1)
    child, parent = _child_values(lambda: factory.make(1000.0))
    assert not set(child) & set(parent)
    assert len(set(parent)) == 50
