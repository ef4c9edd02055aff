"""Room in the bounded caches that remember what a peer's text parsed to.

Several hot-path caches are keyed by text a peer chooses (a Via's sent-by, a URI, a
User-Agent with a display name), so each is bounded. Two ways of bounding them made the
route's cost grow with the number of phones: emptying the whole cache when full drops every
entry each time the number of distinct keys passes the limit, so with more phones than
entries nearly every message misses; and dropping the oldest entry with
`del cache[next(iter(cache))]` walks over every slot deleted since the dict was last
compacted, thousands of them per eviction once a cache churns.

`make_room` drops the oldest eighth in one pass instead: the walk over deleted slots is paid
once per eighth (amortised constant per insertion), and seven eighths of what was remembered
stay. The caches are sized for the phones a server serves (core/sip/fields.py,
core/sip/uri.py, core/security/scanners.py, core/security/destinations.py).
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Final

# One eighth of the entries go per pass: few enough that the cache keeps its use, many
# enough that the passes over deleted slots stay rare.
_DROP_SHIFT: Final = 3


def make_room(cache: dict[Any, Any], limit: int) -> None:
    """Before an insertion into `cache`: when it holds `limit` entries or more, drop the
    oldest (first inserted) eighth of them, at least one, so it stays within `limit`."""
    size = len(cache)
    if size < limit:
        return
    drop = size - limit + 1 + (limit >> _DROP_SHIFT)
    for key in list(islice(cache, drop)):
        del cache[key]
