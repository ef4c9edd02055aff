"""The RFC 3261 §17 transaction timers as data: what each letter is worth and what it does.

Three constants drive everything (§17.1.1.1, table 4 in §A):
  T1  an estimate of the round-trip time, 500 ms. Retransmission intervals start at T1, and
      64*T1 is how long any transaction may wait for an answer.
  T2  the longest interval between retransmissions of a non-INVITE request or of an INVITE's
      final response, 4 s.
  T4  the longest a message may live in the network, 5 s: how long the completed machines
      linger over UDP to absorb stray retransmissions.

A timer is either a *step* (it acts and the machine goes on: A, E, G retransmit, "Trying" sends
100 Trying) or an *end* (it closes the machine: B, D, F, H, I, J, K, L, M). Over a reliable
transport the network does not lose messages, so the retransmission timers are not armed at all
and the lingering timers (D, I, J, K) are worth zero (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2).
Timer C belongs to the proxy (§16.6 step 11), not here. L and M come from RFC 6026:
the INVITE machines linger in "Accepted" after a 2xx, absorbing retransmissions of the INVITE
(server) and passing further 2xx up to the TU (client).

A timer worth zero fires as it is armed, so a TCP client INVITE goes straight from Completed to
Terminated (timer D) in the same call that delivered the final response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """The timer constants, in seconds. Defaults are RFC 3261's (§A)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0  # §17.1.1.2: "at least 32 seconds for unreliable transports"
    # §17.2.1: send 100 Trying if the TU has not answered an INVITE within 200 ms. 0 sends it at
    # once (what a proxy does), None never sends one.
    trying_delay: float | None = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers need 0 < T1 <= T2")
        if self.t4 <= 0 or self.timer_d < 0:
            raise ValueError("T4 must be positive and timer D not negative")
        if self.trying_delay is not None and self.trying_delay < 0:
            raise ValueError("trying_delay must be >= 0 or None")


@dataclass(frozen=True, slots=True)
class TimerRule:
    """One timer letter: where the RFC defines it, what it is worth, what its expiry does."""

    letter: str
    section: str
    unreliable: Callable[[TimerSettings], float | None]
    # None: the timer is not used over a reliable transport.
    reliable: Callable[[TimerSettings], float | None] | None
    on_expiry: str


def _t1(timers: TimerSettings) -> float:
    return timers.t1


def _64_t1(timers: TimerSettings) -> float:
    return 64 * timers.t1


def _t4(timers: TimerSettings) -> float:
    return timers.t4


def _zero(_timers: TimerSettings) -> float:
    return 0.0


def _timer_d(timers: TimerSettings) -> float:
    return timers.timer_d


def _trying(timers: TimerSettings) -> float | None:
    return timers.trying_delay


TIMER_RULES: dict[str, TimerRule] = {
    rule.letter: rule
    for rule in (
        TimerRule(
            "A", "RFC 3261 §17.1.1.2", _t1, None,
            "client INVITE, Calling: resend the INVITE; the interval doubles each time",
        ),
        TimerRule(
            "B", "RFC 3261 §17.1.1.2", _64_t1, _64_t1,
            "client INVITE, Calling: no answer at all; tell the TU (a 408), terminate",
        ),
        TimerRule(
            "D", "RFC 3261 §17.1.1.2", _timer_d, _zero,
            "client INVITE, Completed: stop resending the ACK for retransmitted finals; terminate",
        ),
        TimerRule(
            "E", "RFC 3261 §17.1.2.2", _t1, None,
            "client non-INVITE, Trying/Proceeding: resend the request; the interval doubles "
            "up to T2 (Trying) or is T2 (Proceeding)",
        ),
        TimerRule(
            "F", "RFC 3261 §17.1.2.2", _64_t1, _64_t1,
            "client non-INVITE, Trying/Proceeding: no final answer; tell the TU (a 408), terminate",
        ),
        TimerRule(
            "G", "RFC 3261 §17.2.1", _t1, None,
            "server INVITE, Completed: resend the final response; the interval doubles up to T2",
        ),
        TimerRule(
            "H", "RFC 3261 §17.2.1", _64_t1, _64_t1,
            "server INVITE, Completed: the ACK never came; tell the TU, terminate",
        ),
        TimerRule(
            "I", "RFC 3261 §17.2.1", _t4, _zero,
            "server INVITE, Confirmed: stop absorbing ACK retransmissions; terminate",
        ),
        TimerRule(
            "J", "RFC 3261 §17.2.2", _64_t1, _zero,
            "server non-INVITE, Completed: stop answering request retransmissions; terminate",
        ),
        TimerRule(
            "K", "RFC 3261 §17.1.2.2", _t4, _zero,
            "client non-INVITE, Completed: stop absorbing response retransmissions; terminate",
        ),
        TimerRule(
            "L", "RFC 6026", _64_t1, _64_t1,
            "server INVITE, Accepted: stop absorbing INVITE retransmissions after a 2xx; terminate",
        ),
        TimerRule(
            "M", "RFC 6026", _64_t1, _64_t1,
            "client INVITE, Accepted: stop passing further 2xx up to the TU; terminate",
        ),
        TimerRule(
            "Trying", "RFC 3261 §17.2.1", _trying, _trying,
            "server INVITE, Proceeding: the TU is slow; send 100 Trying (once)",
        ),
    )
}  # fmt: skip


def timer_duration(letter: str, timers: TimerSettings, reliable: bool) -> float | None:
    """What timer `letter` is worth on this kind of transport; None when it is not armed."""
    rule = TIMER_RULES[letter]
    value = rule.reliable if reliable else rule.unreliable
    return None if value is None else value(timers)


# Per settings object (held here, so its id is not reused while its entry lives): every
# letter's duration over an unreliable and over a reliable transport. Bounded all the same.
_TABLES: dict[int, tuple[TimerSettings, dict[str, float | None], dict[str, float | None]]] = {}
_TABLES_LIMIT: Final = 64


def duration_table(timers: TimerSettings, reliable: bool) -> dict[str, float | None]:
    """`timer_duration` of every letter on this kind of transport, computed once per settings
    object: a transaction arms a timer on nearly every change of state, and each look-up in
    TIMER_RULES called a rule's function to learn a constant."""
    entry = _TABLES.get(id(timers))
    if entry is None or entry[0] is not timers:
        unreliable = {letter: timer_duration(letter, timers, False) for letter in TIMER_RULES}
        over_reliable = {letter: timer_duration(letter, timers, True) for letter in TIMER_RULES}
        entry = (timers, unreliable, over_reliable)
        if len(_TABLES) >= _TABLES_LIMIT:
            _TABLES.clear()
        _TABLES[id(timers)] = entry
    return entry[2] if reliable else entry[1]
