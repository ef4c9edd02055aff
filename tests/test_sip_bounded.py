"""core/sip/bounded.py: room in the bounded caches, and the caches it sizes.

The route's cost once grew with the number of phones because these caches, keyed per phone,
were smaller than the population (bench/route: challenge 16.5 µs at 40 users, 21.6 at 2,000,
33.4 at 10,000): each test below fails on the old sizes or eviction.
"""

from __future__ import annotations

import random

import pytest

from core.security import scanners
from core.security.scanners import ScannerMatcher
from core.sip import fields
from core.sip import uri as uri_module
from core.sip.bounded import make_room
from core.sip.fields import _parse_via_general, parse_via
from core.sip.parser import parse_message
from core.sip.uri import parse_uri


class FifoModel:
    """The reference: a list in insertion order, the oldest eighth dropped when full. An
    eighth at once, not one entry: dropping the oldest one by one walked every slot deleted
    since the dict's last compaction (about 4 µs per eviction at 4,096 entries)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.keys: list[int] = []

    def insert(self, key: int) -> None:
        if key in self.keys:
            return  # a hit: a remembered key is not inserted again
        if len(self.keys) >= self.limit:
            drop = len(self.keys) - self.limit + 1 + self.limit // 8
            del self.keys[:drop]
        self.keys.append(key)

    def forget(self, key: int) -> None:
        if key in self.keys:
            self.keys.remove(key)


@pytest.mark.parametrize("seed", range(20))
def test_make_room_keeps_the_newest_as_a_fifo_model_does(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([1, 2, 3, 7, 8, 9, 16, 63, 100])
    cache: dict[int, str] = {}
    model = FifoModel(limit)
    for _ in range(2_000):
        key = rng.randrange(3 * limit + 2)
        if rng.random() < 0.1:  # entries also leave by other means (a test, a reload)
            cache.pop(key, None)
            model.forget(key)
            continue
        if key not in cache:
            make_room(cache, limit)
            cache[key] = str(key)
        model.insert(key)
        assert list(cache) == model.keys
        assert len(cache) <= limit
        assert all(cache[k] == str(k) for k in cache)


def test_make_room_leaves_a_cache_under_its_limit_alone() -> None:
    cache = {n: n for n in range(10)}
    make_room(cache, 11)
    assert list(cache) == list(range(10))
    make_room(cache, 10)  # full: the oldest eighth (at least one) goes
    assert list(cache) == list(range(2, 10))
    oversize = {n: n for n in range(20)}  # over the limit already (a limit lowered)
    make_room(oversize, 8)
    assert list(oversize) == list(range(14, 20))


# -- the caches, sized for the phones a server serves -------------------------------------
# More than the old limits (1,024 heads, 4,096 URIs at two per phone), fewer than now.
BUSY_PHONES = 3_500


def _address(index: int) -> str:
    return f"10.{1 + index // 62_500}.{index // 250 % 250}.{index % 250 + 1}"


def test_every_phones_via_head_stays_remembered() -> None:
    fields._HEADS.clear()
    heads = [f"SIP/2.0/UDP {_address(i)}:5060" for i in range(BUSY_PHONES)]
    for index, head in enumerate(heads):
        parse_via(f"{head};branch=z9hG4bK{index};rport")
    assert all(head in fields._HEADS for head in heads)  # the next round: every one a hit
    assert len(fields._HEADS) <= fields._HEADS_LIMIT


def test_a_long_via_head_is_parsed_alike_and_not_remembered() -> None:
    host = "h" + "x" * fields._CACHED_HEAD_LENGTH + ".example.com"
    for text in (f"SIP/2.0/UDP {host}:5060;branch=z9hG4bK1", f"SIP/2.0/TCP {host};rport"):
        for _ in range(2):
            assert parse_via(text) == _parse_via_general(text)
        assert text.partition(";")[0] not in fields._HEADS


def test_the_newest_uris_stay_remembered() -> None:
    uri_module._PARSED_URIS.clear()
    count = 2 * uri_module._PARSED_URIS_LIMIT + 100  # twice past the limit
    texts = [f"sip:u{i:05d}@{_address(i)}:5060" for i in range(count)]
    parsed = [parse_uri(text) for text in texts]
    newest = slice(-3_500, None)  # full, the oldest eighth goes: the newest all stay
    assert all(
        parse_uri(text) is uri for text, uri in zip(texts[newest], parsed[newest], strict=True)
    )
    assert len(uri_module._PARSED_URIS) <= uri_module._PARSED_URIS_LIMIT


def _register(user: str, user_agent: str) -> bytes:
    return (
        f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
        f'From: "{user}" <sip:{user}@pbx.test>;tag=1\r\nTo: <sip:{user}@pbx.test>\r\n'
        f"Call-ID: c1\r\nCSeq: 1 REGISTER\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_every_phones_scanner_verdict_stays_remembered() -> None:
    matcher = ScannerMatcher(["friendly-scanner", "sipvicious"])
    users = [f"u{i:05d}" for i in range(BUSY_PHONES)]
    for user in users:
        assert matcher.match_request(parse_message(_register(user, "Yealink SIP-T46S"))) is None
    # Display name and user are the same text here: one entry per phone, plus the fleet's
    # one User-Agent.
    assert all(user in matcher._verdicts for user in users)
    assert "Yealink SIP-T46S" in matcher._verdicts
    assert len(matcher._verdicts) <= scanners.VERDICT_CACHE_SIZE


def test_a_long_scanner_key_gets_the_same_verdict_and_is_not_remembered() -> None:
    matcher = ScannerMatcher(["friendly-scanner"])
    pad = "x" * scanners.VERDICT_KEY_LENGTH
    for user_agent, verdict in (
        (f"friendly-scanner {pad}", 'user-agent "friendly-scanner"'),
        (f"Phone {pad}", None),
    ):
        for _ in range(2):
            request = parse_message(_register("alice", user_agent))
            assert matcher.match_request(request) == verdict
    # The From's short text is remembered; neither long User-Agent is.
    assert set(matcher._verdicts) == {"alice"}
