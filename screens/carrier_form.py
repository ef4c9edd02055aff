"""Add a carrier (SIP trunk): the addresses it calls from, the gateway we call through."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select

from core.store.database import CarrierRow
from screens.form import FormScreen
from screens.widgets.field import Field


def split_addresses(text: str) -> list[str]:
    """`203.0.113.0/24, 198.51.100.7` → each address or network, commas or spaces between."""
    return [part for part in text.replace(",", " ").split() if part]


class CarrierForm(FormScreen[CarrierRow | None]):
    ERROR_FIELDS = (
        ("already exists", "name"),
        ("carrier name", "name"),
        ("at least one address", "addresses"),
        ("address", "addresses"),
        ("prefix", "addresses"),
        ("gateway", "gateway"),
        ("transport", "transport"),
        ("port", "port"),
        ("priority", "priority"),
    )

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label("New carrier", classes="form-title")
            yield Field(
                "Name", Input(id="name", placeholder="e.g. acme", compact=True), name="name"
            )
            yield Field(
                "Addresses",
                Input(id="addresses", placeholder="203.0.113.0/24, 198.51.100.7", compact=True),
                name="addresses",
                hint="calls from these are trusted as inbound from the carrier",
            )
            yield Field(
                "Outbound gateway",
                Input(id="gateway", placeholder="sip.carrier.example:5060", compact=True),
                name="gateway",
                hint="HOST[:PORT]; empty: inbound only",
            )
            with Horizontal(classes="field-row"):
                yield Field(
                    "Transport",
                    Select(
                        [("UDP", "udp"), ("TCP", "tcp"), ("TLS", "tls")],
                        value="udp",
                        allow_blank=False,
                        id="transport",
                        compact=True,
                    ),
                    name="transport",
                )
                yield Field("Port", Input("5060", id="port", compact=True), name="port")
            yield Field("Auth username", Input(id="username", compact=True), name="username")
            yield Field(
                "Auth password", Input(id="password", password=True, compact=True), name="password"
            )
            yield Field(
                "Priority",
                Input("10", id="priority", compact=True),
                name="priority",
                hint="lower is tried first",
            )
            yield Label("", id="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Save", variant="primary", id="save", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            await self.action_submit()
        else:
            self.action_cancel()

    async def submit(self) -> None:
        invalid = False
        numbers: dict[str, int] = {}
        for name, what in (("port", "port"), ("priority", "priority")):
            text = self.value(name)
            if not text.isdigit():
                self.field_error(name, f"{what} must be a whole number")
                invalid = True
            else:
                numbers[name] = int(text)
        addresses = split_addresses(self.value("addresses"))
        if not addresses:
            self.field_error("addresses", "a carrier needs at least one address")
            invalid = True
        if not self.value("name"):
            self.field_error("name", "carrier name is empty")
            invalid = True
        if invalid:
            return
        try:
            carrier = await self.pbx.admin.add_carrier(
                self.value("name"),
                addresses,
                gateway=self.value("gateway") or None,
                port=numbers["port"],
                transport=str(self.query_one("#transport", Select).value),
                username=self.value("username") or None,
                password=self.query_one("#password", Input).value or None,
                priority=numbers["priority"],
            )
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(carrier)
