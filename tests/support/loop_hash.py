"""The loop hash as written before issue 21, for the equivalence tests of core/proxy/routing.py:
hashlib's MD5 over the joined fields (what `loop_hash` must still give, byte for byte)."""

from __future__ import annotations

import hashlib

from core.sip.message import Request


def reference_loop_hash(request: Request, top_via: str) -> str:
    cseq = request.cseq
    material = "\x00".join(
        (
            str(request.uri),
            request.from_tag or "",
            request.to_tag or "",
            request.call_id or "",
            str(cseq.number) if cseq is not None else "",
            top_via,
        )
    )
    return hashlib.md5(
        material.encode("utf-8", "surrogateescape"), usedforsecurity=False
    ).hexdigest()[:20]
