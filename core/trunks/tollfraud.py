"""Toll-fraud limits on calls that leave through a carrier: who may dial what, how many at once,
how many an hour.

Toll fraud starts with one guessed SIP password and ends with thousands of minutes to premium
or far-away numbers, many calls at once, overnight. So every outbound call passes, in order:

1. the user's outbound policy: `none` (the default: other users only), `local`, `national` or
   `international`, refined by deny prefixes (checked first: `0900` premium numbers stay
   blocked even for `international`) and allow prefixes (grant a prefix beyond the policy,
   such as an emergency or a neighbouring country's code) — a refusal is 403;
2. the user's concurrent-call limit — 486 (the user is busy, as far as the carrier goes);
3. the global concurrent-call limit (`ProxySettings.max_calls_global`) — 503 with Retry-After;
4. the user's calls-per-hour limit, a sliding hour of admitted attempts — 503 with the
   Retry-After that frees the next slot.

A refusal carries the answer (status, reason, Retry-After) and a detail for the
SecurityEvent("toll-fraud") the trunks publish. Pure: time is an argument, nothing here sends.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from core.trunks.dialplan import INTERNATIONAL, LOCAL, NATIONAL, DialledNumber, Dialplan
from core.users import User

HOUR = 3_600.0
# How far each policy reaches: a number class is allowed when its rank is at most the policy's.
POLICY_REACH = {"none": 0, "local": 1, "national": 2, "international": 3}
CLASS_RANK = {LOCAL: 1, NATIONAL: 2, INTERNATIONAL: 3}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call may not go out, and what the caller hears."""

    status: int
    reason: str  # the reason phrase sent
    detail: str  # for the event feed and the log
    retry_after: int | None = None

    @property
    def extra_headers(self) -> list[tuple[str, str]]:
        return [] if self.retry_after is None else [("Retry-After", str(self.retry_after))]


def check_policy(user: User, number: DialledNumber, dialplan: Dialplan) -> Refusal | None:
    """The user's outbound policy and prefix lists applied to a dialled number."""
    for prefix in user.deny_prefixes:
        if dialplan.prefix_matches(number, prefix):
            detail = f"{number.dialled} matches denied prefix {prefix}"
            return Refusal(403, "Number not allowed", detail)
    for prefix in user.allow_prefixes:
        if dialplan.prefix_matches(number, prefix):
            return None
    reach = POLICY_REACH.get(user.outbound_policy, 0)
    if CLASS_RANK[number.number_class] <= reach:
        return None
    detail = (
        f"{number.number_class} number {number.dialled} not allowed "
        f"by outbound policy {user.outbound_policy!r}"
    )
    return Refusal(403, "Outbound call not allowed", detail)


# (call-id, user) of every call counted in; each user's hourly window of call starts.
LimiterSnapshot = tuple[list[tuple[str, str]], dict[str, list[float]]]


class LimiterListener(Protocol):
    def call_admitted(self, username: str, call_id: str, now: float) -> None: ...

    def call_released(self, call_id: str) -> None: ...


class CallLimiter:
    """Concurrent outbound calls per user and in all, and admitted attempts per user per hour.

    `admit` counts a call in; `release` (when the call ended or failed) counts it out. The
    hourly window keeps at most `max_calls_per_hour` times per user, so memory is bounded by
    the users' own limits; users without an hourly limit keep none.
    """

    __slots__ = ("_active_by_call", "_active_by_user", "_starts_by_user", "listener", "max_global")

    def __init__(self, max_global: int, listener: LimiterListener | None = None) -> None:
        self.max_global = max_global  # 0: no global limit
        # Told of every call counted in or out, so other worker processes count it too.
        self.listener = listener
        self._active_by_call: dict[str, str] = {}  # call-id → user
        self._active_by_user: dict[str, int] = {}
        self._starts_by_user: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._active_by_call)

    def active(self, username: str) -> int:
        return self._active_by_user.get(username, 0)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._active_by_call

    def admit(self, user: User, call_id: str, now: float) -> Refusal | None:
        """Count a new call in, or say which limit it is over (nothing counted then)."""
        username = user.username
        active = self._active_by_user.get(username, 0)
        if user.max_concurrent_calls and active >= user.max_concurrent_calls:
            detail = f"{active} calls up, limit {user.max_concurrent_calls}"
            return Refusal(486, "Too many calls", detail)
        if self.max_global and len(self._active_by_call) >= self.max_global:
            up = len(self._active_by_call)
            detail = f"{up} outbound calls up, global limit {self.max_global}"
            return Refusal(503, "Too many outbound calls", detail, retry_after=30)
        per_hour = user.max_calls_per_hour
        if per_hour:
            starts = self._starts_by_user.setdefault(username, deque())
            while starts and starts[0] <= now - HOUR:
                starts.popleft()
            while len(starts) > per_hour:  # the limit was lowered since
                starts.popleft()
            if len(starts) >= per_hour:
                wait = max(1, math.ceil(starts[0] + HOUR - now))
                detail = f"{len(starts)} calls in the last hour, limit {per_hour}"
                return Refusal(503, "Hourly call limit reached", detail, retry_after=wait)
            starts.append(now)
        self._active_by_call[call_id] = username
        self._active_by_user[username] = active + 1
        if self.listener is not None:
            self.listener.call_admitted(username, call_id, now)
        return None

    def count_in(self, username: str, call_id: str, now: float, *, hourly: bool) -> None:
        """Count a call another process admitted (no limit checked: it was checked there).
        `hourly`: the user has an hourly limit, so the start joins the window too."""
        if call_id in self._active_by_call:
            return
        self._active_by_call[call_id] = username
        self._active_by_user[username] = self._active_by_user.get(username, 0) + 1
        if hourly:
            self._starts_by_user.setdefault(username, deque()).append(now)

    def snapshot(self) -> LimiterSnapshot:
        """Every call counted in, and every hourly window: what a worker process started
        (again) must know of the calls the others are carrying (core/cluster/main.py)."""
        return (
            list(self._active_by_call.items()),
            {username: list(starts) for username, starts in self._starts_by_user.items()},
        )

    def adopt(self, snapshot: LimiterSnapshot) -> None:
        """Count in what another process's `snapshot` holds, once, at a worker's start (no
        limit checked, no listener told: those calls were admitted and announced where they
        started)."""
        calls, windows = snapshot
        for call_id, username in calls:
            self.count_in(username, call_id, 0.0, hourly=False)  # the windows come whole
        for username, starts in windows.items():
            known = self._starts_by_user.get(username, ())
            self._starts_by_user[username] = deque(sorted([*known, *starts]))

    def release(self, call_id: str) -> None:
        """The call ended or failed; releasing one not admitted (or twice) does nothing."""
        username = self._active_by_call.pop(call_id, None)
        if username is None:
            return
        if self.listener is not None:
            self.listener.call_released(call_id)
        left = self._active_by_user.get(username, 1) - 1
        if left > 0:
            self._active_by_user[username] = left
        else:
            self._active_by_user.pop(username, None)

    def expire(self, now: float) -> None:
        """Forget hourly windows that have run out (about once a second is plenty)."""
        stale = [
            username
            for username, starts in self._starts_by_user.items()
            if not starts or starts[-1] <= now - HOUR
        ]
        for username in stale:
            del self._starts_by_user[username]
