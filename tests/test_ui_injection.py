"""Console injection: wire text with markup and control bytes, sent for real, shown safely.

A phone registers with a Contact of `sip:[/x]@...` (a closing markup tag) and a User-Agent
carrying `[link=...]` markup and ESC sequences; a scanner-like client fails to log in with
the same. Every pane is then visited through Pilot and everything each one draws (table rows,
the ladder, the raw view, labels, the confirm question) is checked: the markup is shown as
text, ESC and BEL never reach the terminal (they show as `\\x1b`, `\\x07`), and nothing takes
the console down, not even unregistering that Contact.
"""

from __future__ import annotations

from pathlib import Path

from support.client import UdpClient
from support.phone import Phone
from test_ui_support import console, refreshed, server_of
from textual.widgets import Label

from screens.console import PANE_TYPES as PANES
from screens.widgets.line_table import LineTable
from screens.widgets.raw_view import RawView

USERS = {"alice": "alice-secret-1"}
EVIL_UA = "[link=https://evil.example]click[/link] \x1b[31mRED\x1b]0;owned\x07 \u202eabc"
CONTROLS = ("\x1b", "\x07", "\u202e")


def _drawn(app) -> list[str]:
    """Every line the current screen's tables, raw views and labels would draw."""
    lines: list[str] = []
    screen = app.screen
    for table in screen.query(LineTable):
        for key in table.keys:
            lines.append("".join(segment.text for segment in table._row_strip(key)))
    for view in screen.query(RawView):
        view._wrap(max(view.size.width, 80))
        lines.extend("".join(segment.text for segment in strip) for strip in view._lines)
    for label in screen.query(Label):
        lines.append(str(label.render()))
    return lines


async def test_wire_text_is_shown_escaped_in_every_pane(tmp_path: Path) -> None:
    async with console(tmp_path, users=USERS, size=(200, 50)) as (app, pilot):
        async with UdpClient(server_of(app)) as client:
            phone = Phone(client, "alice", USERS["alice"])
            phone.user_agent = EVIL_UA
            contact = f"<sip:[/x]@127.0.0.1:{client.local[1]}>"
            response = await phone.register(contact=contact)
            assert response is not None and response.status == 200
        async with UdpClient(server_of(app)) as client:
            intruder = Phone(client, "alice", "wrong-password")
            intruder.user_agent = EVIL_UA
            assert (await intruder.register()).status == 401  # type: ignore[union-attr]
        shown_everywhere: list[str] = []
        for number, name in enumerate(PANES, start=1):
            await pilot.press(str(number))
            await refreshed(pilot, app)
            if name == "traffic":
                dialogs = app.screen.query_one("#dialogs", LineTable)
                dialogs.move_cursor(row=0)
                await pilot.pause()
            drawn = _drawn(app)
            for line in drawn:
                assert not any(char in line for char in CONTROLS), (
                    f"{name}: raw control in {line!r}"
                )
            shown_everywhere.extend(drawn)
        text = "\n".join(shown_everywhere)
        assert "\\x1b[31mRED" in text  # shown, escaped
        assert "[link=https://evil.example]click[/link]" in text  # markup shown as text
        assert "sip:[/x]@127.0.0.1" in text
        # Unregistering the Contact asks a question that names it, then notifies.
        await pilot.press(str(list(PANES).index("registrations") + 1))
        await refreshed(pilot, app)
        await pilot.press("u")
        await pilot.pause()
        question = str(app.screen.query_one("#question", Label).render())
        assert "sip:[/x]@127.0.0.1" in question
        await pilot.press("y")
        await pilot.pause()
        assert app.pbx.location.all_bindings() == []
        assert app.is_running
