"""Pane 5, Carriers & DIDs: the trunks we trust and call through, and which number rings whom."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label

from core.store.rows import CarrierRow, DidRow
from screens.base import StoreRowsPane
from screens.carrier_form import CarrierForm
from screens.confirm import ConfirmScreen
from screens.did_form import DidForm
from screens.rate_form import RatesForm
from screens.widgets.tables import KeyedTable


def carrier_cells(carrier: CarrierRow, rates: int = 0) -> tuple[str | Text, ...]:
    return (
        carrier.name,
        ", ".join(carrier.addresses),
        carrier.gateway or Text("inbound only", style="dim"),
        f"{carrier.transport.upper()}:{carrier.port}",
        carrier.username or "",
        str(carrier.priority),
        Text("✓", style="green") if carrier.enabled else Text("✗ off", style="red"),
        str(rates) if rates else Text("none", style="dim"),
    )


class CarriersPane(StoreRowsPane):
    PANE = "carriers"
    FIRST_FOCUS = "#carriers"
    BINDINGS: ClassVar = [
        Binding("a", "add_carrier", "Add carrier"),
        Binding("n", "add_did", "Add DID"),
        Binding("t", "rates", "Rates"),
        Binding("d,delete", "delete", "Delete"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.carriers: list[CarrierRow] = []
        self.dids: list[DidRow] = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="carriers-main"):
            with Vertical(id="carriers-box"):
                yield Label("Carriers", classes="section-title", id="carriers-title")
                yield KeyedTable(
                    [
                        ("name", "Name"),
                        ("addresses", "Addresses"),
                        ("gateway", "Gateway"),
                        ("transport", "Via"),
                        ("username", "Auth user"),
                        ("priority", "Prio"),
                        ("enabled", "On"),
                        ("rates", "Rates"),
                    ],
                    id="carriers",
                )
            with Vertical(id="dids-box"):
                yield Label("DIDs", classes="section-title", id="dids-title")
                yield KeyedTable([("number", "Number"), ("user", "Rings")], id="dids")

    def refresh_view(self) -> None:
        self.reload_rows(when_stale=True)

    async def load_rows(self) -> None:
        self.carriers = await self.admin.list_carriers()
        self.dids = await self.admin.list_dids()
        accounting = self.admin.accounting
        tables = await accounting.rate_tables() if accounting is not None else []
        rates = {name: count for name, _currency, count in tables}
        self.query_one("#carriers", KeyedTable).sync(
            {
                carrier.name: carrier_cells(carrier, rates.get(carrier.name, 0))
                for carrier in self.carriers
            }
        )
        self.query_one("#dids", KeyedTable).sync(
            {did.number: (did.number, did.username) for did in self.dids}
        )
        self.show_text(
            "carriers-title", f"Carriers ({len(self.carriers)})   a add · d delete · t rates"
        )
        self.show_text("dids-title", f"DIDs ({len(self.dids)})   n add · d delete")

    async def _saved(self, saved: CarrierRow | DidRow | None) -> None:
        if saved is None:
            return
        await self.load()
        if isinstance(saved, CarrierRow):
            self.query_one("#carriers", KeyedTable).select_key(saved.name)
            self.notify(f"added carrier {saved.name}", markup=False)
        else:
            self.query_one("#dids", KeyedTable).select_key(saved.number)
            self.notify(f"{saved.number} now rings {saved.username}", markup=False)

    def action_add_carrier(self) -> None:
        self.app.push_screen(CarrierForm(), self._saved)

    async def action_add_did(self) -> None:
        usernames = [user.username for user in await self.admin.list_users()]
        if not usernames:
            self.notify("add a user first: a DID rings a user", severity="warning")
            return
        self.app.push_screen(DidForm(usernames), self._saved)

    def action_delete(self) -> None:
        dids = self.query_one("#dids", KeyedTable)
        carriers = self.query_one("#carriers", KeyedTable)
        table = dids if self.screen.focused is dids else carriers
        key = table.selected_key
        if key is None:
            self.notify("nothing selected", severity="warning")
            return
        is_did = table is dids

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                if is_did:
                    await self.admin.delete_did(key)
                else:
                    await self.admin.delete_carrier(key)
            except ValueError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            self.notify(f"deleted {'DID' if is_did else 'carrier'} {key}", markup=False)
            await self.load()

        what = f"DID {key}" if is_did else f"carrier {key}"
        self.app.push_screen(ConfirmScreen(f"Delete {what}?", "Delete"), answered)

    async def action_rates(self) -> None:
        """The selected carrier's rate table: see it, import a CSV over it, or delete it."""
        carrier = self.query_one("#carriers", KeyedTable).selected_key
        if carrier is None:
            self.notify("select a carrier first", severity="warning")
            return
        accounting = self.admin.accounting
        if accounting is None:
            self.notify("attached to a service: manage rates with `pbxtui rate`", markup=False)
            return
        currency, rates = await accounting.rates(carrier)
        default_currency = self.core.settings.accounting.currency

        async def done(changed: str | None) -> None:
            if changed:
                self.notify(changed)
                await self.load()

        self.app.push_screen(RatesForm(carrier, currency, rates, default_currency), done)
