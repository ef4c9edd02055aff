"""Add a carrier (SIP trunk): the addresses it calls from, the gateway we call through."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Select

from core.store.rows import CarrierRow
from core.trunks.carriers import CARRIER_TRANSPORTS, default_port
from screens.form import FormScreen
from screens.widgets.field import Field


def split_addresses(text: str) -> list[str]:
    """`203.0.113.0/24, 198.51.100.7` → each address or network, commas or spaces between."""
    return [part for part in text.replace(",", " ").split() if part]


class CarrierForm(FormScreen[CarrierRow | None]):
    # The carrier rule (core.trunks.carriers) starts each sentence with the field's name.
    ERROR_FIELDS = (
        ("already exists", "name"),
        ("carrier name", "name"),
        ("gateway", "gateway"),
        ("address", "addresses"),
        ("prefix", "addresses"),
        ("transport", "transport"),
        ("priority", "priority"),
        ("port", "port"),
        ("username and password", "username"),
    )

    def form_title(self) -> str:
        return "New carrier"

    def compose_fields(self) -> ComposeResult:
        yield Field("Name", Input(id="name", placeholder="e.g. acme", compact=True), name="name")
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
                    [(transport.upper(), transport) for transport in CARRIER_TRANSPORTS],
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

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Select.Changed, "#transport")
    def _transport_changed(self, event: Select.Changed) -> None:
        """The port follows the transport's default (5061 for TLS, RFC 3261 §19.1.2) until
        the operator types another."""
        port = self.query_one("#port", Input)
        defaults = {str(default_port(transport)) for transport in CARRIER_TRANSPORTS}
        if port.value.strip() in defaults | {""}:
            port.value = str(default_port(str(event.value)))

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
        if invalid:
            return
        try:
            carrier = await self.admin.add_carrier(
                self.value("name"),
                split_addresses(self.value("addresses")),
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
