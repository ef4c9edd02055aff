"""The SIP credentials of a new (or re-passworded) user, shown once, ready to type into a phone.

The password is not stored anywhere but as digest hashes, so this is the only time the
console can show it; the screen says so.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from core.settings import ListenAddress

_WILDCARDS = ("0.0.0.0", "::")


def server_addresses(domain: str, listening: list[ListenAddress]) -> list[str]:
    """Where a phone should register: the domain on each port, and each specific address bound."""
    found: dict[str, list[str]] = {}
    for address in listening:
        host = domain if address.host in _WILDCARDS else address.host
        shown = f"[{host}]" if ":" in host else host
        found.setdefault(f"{shown}:{address.port}", []).append(address.transport.upper())
    return [f"{hostport} ({', '.join(transports)})" for hostport, transports in found.items()]


def credentials_text(username: str, password: str, domain: str, servers: list[str]) -> str:
    """The rows to type into a phone. With a TLS listener (the server has a certificate) the
    TLS address comes first and the phone is told to use it: the password and every call's
    signalling are then encrypted on the way (RFC 3261 §26.2.1)."""
    secure = [server for server in servers if "TLS" in server.rpartition("(")[2]]
    servers = secure + [server for server in servers if server not in secure]
    rows = [
        ("Username / Auth ID", username),
        ("Password", password),
        ("Domain / Realm", domain),
        ("SIP server / Proxy", servers[0] if servers else domain),
    ]
    rows += [("", server) for server in servers[1:]]
    if secure:
        rows.append(("Transport", "TLS on the first server above: set the phone to TLS"))
    return "\n".join(f"{label:<20} {value}" for label, value in rows)


class CredentialsScreen(ModalScreen[None]):
    CSS_PATH = "credentials.tcss"
    BINDINGS: ClassVar = [Binding("escape,enter", "close", "Close")]

    def __init__(self, username: str, password: str, domain: str, servers: list[str]) -> None:
        super().__init__()
        self.text = credentials_text(username, password, domain, servers)

    def compose(self) -> ComposeResult:
        with Vertical(id="credentials"):
            yield Label("SIP account ready — type this into the phone", id="credentials-title")
            yield Static(self.text, id="credentials-text", markup=False)
            yield Label(
                "The password is shown only now: it is stored as digest hashes.",
                id="credentials-note",
            )
            yield Button("Done (Enter)", variant="primary", id="done", compact=True)

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
