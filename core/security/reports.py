"""How parts outside the security layer report a security decision: through its throttle.

A refusal one packet can provoke (a forged in-dialog request, a Contact pointing at a
carrier) must not become one log line per packet, or a spoofed flood would fill the journal
and bury the lines fail2ban reads. The Pbx hands the proxy and the registrar
`Security.report`, which coalesces repeats per (action, source) and caps the total a second
(core/security/throttle.py). Built alone (unit tests), they publish each event directly.
"""

from __future__ import annotations

from typing import Protocol

from core.events import EventBus, SecurityEvent


class SecurityReport(Protocol):
    def __call__(
        self,
        action: str,
        source: str,
        now: float,
        detail: str = "",
        *,
        user: str = "",
        user_agent: str = "",
    ) -> None: ...


def publish_each(bus: EventBus) -> SecurityReport:
    """A `SecurityReport` that publishes every event as it comes (no throttle)."""

    def report(
        action: str,
        source: str,
        now: float,
        detail: str = "",
        *,
        user: str = "",
        user_agent: str = "",
    ) -> None:
        bus.publish(
            SecurityEvent(
                action=action, source=source, detail=detail, user=user, user_agent=user_agent
            )
        )

    return report
