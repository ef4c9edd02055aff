"""rtpengine's `query` answer read as the console's media figures; sans-I/O.

The Calls pane shows the same figures whichever engine relays a call (core/media/relay.py
`MediaStats`), so rtpengine's per-call dictionary is folded into that shape:

    tags -> {tag: {medias: [{index, flags, streams: [{stats: {packets, bytes, errors},
                                                      last packet, SSRC}, ...]}]}}
    SSRC -> {"<ssrc>": {"average MOS": {"packet loss": %, "jitter": ms}}}

A tag's streams are the ports facing that party: their `stats` count what the party sent,
so the caller's streams give "caller → callee" and the callee's the way back. `errors`
stands in for the embedded relay's dropped count. A stream is on hold when either side's
`flags` lack `send` or `recv` (an rtpengine that writes neither says nothing of hold). Loss
and jitter come from the phones' RTCP reports, which rtpengine files under the SSRC they
report on: what the caller hears is the report on the callee's SSRC. rtpengine lists them
only once it could match a report with a sender report (it needs the round trip for its
MOS); until then they are None, as with a phone that sends no RTCP through the embedded
relay.

The dictionary is wire input: any field may be missing or of another type, and anything
unreadable is simply not counted; `media_stats` never raises.
"""

from __future__ import annotations

from core.media.bencode import Value
from core.media.relay import MediaStats, StreamStats

MAX_STREAMS = 16  # media sections read per party (the SDP parser's own bound is lower)


def media_stats(reply: dict[bytes, Value], caller_tag: str, now: float) -> MediaStats | None:
    """The figures in a `query` reply; `caller_tag` is the From tag of the call's INVITE,
    `now` the wall clock (rtpengine's `last packet` is in UNIX seconds). None when the reply
    names no party at all."""
    tags = _dict(reply.get(b"tags"))
    if not tags:
        return None
    caller_key = caller_tag.encode("utf-8", "replace")
    caller = _dict(tags.get(caller_key))
    callee: dict[bytes, Value] = {}
    for key, value in tags.items():
        if key != caller_key and (not callee or key):  # a named tag beats the "" placeholder
            callee = _dict(value)
    reports = _dict(reply.get(b"SSRC"))
    caller_medias = _medias(caller)
    callee_medias = _medias(callee)
    last = _int(reply.get(b"last signal"))
    streams = []
    for index in sorted(set(caller_medias) | set(callee_medias))[:MAX_STREAMS]:
        mine = caller_medias.get(index, {})
        theirs = callee_medias.get(index, {})
        sent, sent_bytes, sent_errors, sent_last, sent_ssrc = _counters(mine)
        back, back_bytes, back_errors, back_last, back_ssrc = _counters(theirs)
        last = max(last, sent_last, back_last)
        caller_loss, caller_jitter = _report(reports, back_ssrc)  # the caller hears the callee
        callee_loss, callee_jitter = _report(reports, sent_ssrc)
        streams.append(
            StreamStats(
                sent, sent_bytes, back, back_bytes, sent_errors + back_errors,
                _on_hold(mine, theirs),
                caller_loss, caller_jitter, callee_loss, callee_jitter,
            )
        )  # fmt: skip
    idle = max(0.0, now - last) if last else 0.0
    return MediaStats(tuple(streams), idle)


def _dict(value: Value | None) -> dict[bytes, Value]:
    return value if isinstance(value, dict) else {}


def _list(value: Value | None) -> list[Value]:
    return value if isinstance(value, list) else []


def _int(value: Value | None) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _medias(party: dict[bytes, Value]) -> dict[int, dict[bytes, Value]]:
    """A party's media sections by their `index` (1, 2, ... as in the SDP)."""
    medias: dict[int, dict[bytes, Value]] = {}
    for position, item in enumerate(_list(party.get(b"medias"))[:MAX_STREAMS]):
        media = _dict(item)
        index = media.get(b"index")
        medias[index if isinstance(index, int) else position + 1] = media
    return medias


def _counters(media: dict[bytes, Value]) -> tuple[int, int, int, int, int]:
    """(packets, bytes, errors, last packet, RTP SSRC) over a media section's streams."""
    packets = octets = errors = last = ssrc = 0
    for item in _list(media.get(b"streams"))[:4]:  # RTP and RTCP; more is not rtpengine's
        stream = _dict(item)
        stats = _dict(stream.get(b"stats"))
        packets += _int(stats.get(b"packets"))
        octets += _int(stats.get(b"bytes"))
        errors += _int(stats.get(b"errors"))
        last = max(last, _int(stream.get(b"last packet")))
        if not ssrc and b"RTCP" not in _list(stream.get(b"flags")):
            ssrc = _int(stream.get(b"SSRC"))
    return packets, octets, errors, last, ssrc


def _on_hold(*medias: dict[bytes, Value]) -> bool:
    """Whether a side sends or receives only (or neither). An rtpengine that writes no
    direction flags at all says nothing of hold: the stream is taken as active."""
    flags = [_list(media.get(b"flags")) for media in medias if media]
    if not any(b"send" in each or b"recv" in each for each in flags):
        return False
    return not all(b"send" in each and b"recv" in each for each in flags)


def _report(reports: dict[bytes, Value], ssrc: int) -> tuple[float | None, float | None]:
    """(loss %, jitter ms) the receiver of `ssrc` reported, averaged by rtpengine."""
    if not ssrc:
        return None, None
    average = _dict(_dict(reports.get(str(ssrc).encode("ascii"))).get(b"average MOS"))
    loss, jitter = average.get(b"packet loss"), average.get(b"jitter")
    if not isinstance(loss, int) or not isinstance(jitter, int):
        return None, None
    return float(loss), float(jitter)
