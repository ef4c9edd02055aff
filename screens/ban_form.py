"""Ban a source address by hand, for a while or for good."""

from __future__ import annotations

import re

from textual.app import ComposeResult
from textual.widgets import Input

from screens.form import FormScreen
from screens.widgets.field import Field

_DURATION = re.compile(r"(\d+)\s*([smhd]?)", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400}
PERMANENT_WORDS = ("", "forever", "permanent", "0")


def parse_duration(text: str) -> float | None:
    """`600`, `10m`, `2h`, `1d` → seconds; empty, `0` or `forever` → None (until unbanned)."""
    text = text.strip().lower()
    if text in PERMANENT_WORDS:
        return None
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError("ban time must be like 600, 10m, 2h or 1d (empty: forever)")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class BanForm(FormScreen[str | None]):
    """Dismisses with the banned address."""

    ERROR_FIELDS = (("not an ip", "ip"), ("address", "ip"), ("ban time", "duration"))
    SAVE_LABEL = "Ban"
    SAVE_VARIANT = "error"

    def __init__(self, ip: str = "") -> None:
        super().__init__()
        self.ip = ip

    def form_title(self) -> str:
        return "Ban a source address"

    def compose_fields(self) -> ComposeResult:
        yield Field(
            "IP address",
            Input(self.ip, id="ip", placeholder="203.0.113.9", compact=True),
            name="ip",
        )
        yield Field(
            "For",
            Input("1h", id="duration", compact=True),
            name="duration",
            hint="600, 10m, 2h, 1d; empty: until unbanned",
        )
        yield Field("Reason", Input("banned by admin", id="reason", compact=True), name="reason")

    def on_mount(self) -> None:
        self.query_one("#ip" if not self.ip else "#duration", Input).focus()

    async def submit(self) -> None:
        ip = self.value("ip")
        try:
            seconds = parse_duration(self.value("duration"))
        except ValueError as error:
            self.field_error("duration", str(error))
            return
        try:
            await self.admin.ban(ip, seconds, self.value("reason") or "banned by admin")
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(ip)
