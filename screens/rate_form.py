"""A carrier's rate table: what it holds, a CSV to replace it with, or its removal.

The same all-or-nothing import as `pbxtui rate import`: a file with one bad line changes
nothing, and the error names every bad line.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from core.accounting.manage import AccountingAdmin
from core.accounting.rates import Rate, format_money
from screens.form import FormScreen
from screens.widgets.field import Field

MAX_FILE_BYTES = 32 * 1024 * 1024
SHOWN_RATES = 8


def rates_summary(currency: str, rates: list[Rate]) -> Text:
    """A few lines: how many prefixes, in which currency, and the first ones."""
    if not rates:
        return Text("no rates: calls through this carrier cost nothing", style="dim")
    text = Text(f"{len(rates)} prefixes, {currency}\n")
    for rate in rates[:SHOWN_RATES]:
        text.append(
            f"  {rate.prefix:<12} {format_money(rate.per_minute)}/min  "
            f"{rate.increments_text}  +{format_money(rate.connection)}\n"
        )
    if len(rates) > SHOWN_RATES:
        text.append(f"  … {len(rates) - SHOWN_RATES} more (pbxtui rate list --carrier …)\n")
    return text


class RatesForm(FormScreen[str | None]):
    """Dismisses with what changed ("imported 120 rates", "deleted the table") or None."""

    ERROR_FIELDS = (
        ("currency", "currency"),
        ("line", "file"),
        ("file", "file"),
        ("header", "file"),
    )

    def __init__(self, carrier: str, currency: str, rates: list[Rate], default_currency: str):
        super().__init__()
        self.carrier = carrier
        self.currency = currency or default_currency
        self.rates = rates

    def compose(self) -> ComposeResult:
        with Vertical(id="form"):
            yield Label(f"Rates of {self.carrier}", classes="form-title")
            yield Label(rates_summary(self.currency, self.rates), id="rates-summary")
            yield Field(
                "CSV file",
                Input(id="file", placeholder="/path/to/rates.csv", compact=True),
                name="file",
                hint="prefix,per_minute,first_increment,increment,connection — replaces the table",
            )
            yield Field(
                "Currency",
                Input(value=self.currency, id="currency", compact=True, max_length=3),
                name="currency",
            )
            yield Label("", id="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Import", variant="primary", id="save", compact=True)
                yield Button("Delete table", variant="error", id="delete", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#file", Input).focus()

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            await self.action_submit()
        elif event.button.id == "delete":
            await self.delete_table()
        else:
            self.action_cancel()

    async def delete_table(self) -> None:
        self.clear_errors()
        try:
            removed = await self._accounting().delete_rates(self.carrier)
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(f"deleted the {removed} rates of {self.carrier}")

    async def submit(self) -> None:
        path_text = self.value("file")
        if not path_text:
            self.field_error("file", "name the CSV file to import")
            return
        path = Path(path_text).expanduser()
        try:
            with path.open(encoding="utf-8", newline="") as stream:
                text = stream.read(MAX_FILE_BYTES + 1)
        except (OSError, UnicodeDecodeError) as error:
            self.field_error("file", f"cannot read the file: {error}")
            return
        if len(text) > MAX_FILE_BYTES:
            self.field_error("file", f"larger than {MAX_FILE_BYTES // 2**20} MiB")
            return
        try:
            count = await self._accounting().import_rates(
                self.carrier, text.removeprefix("\ufeff"), self.value("currency")
            )
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(f"imported {count} rates for {self.carrier}")

    def _accounting(self) -> AccountingAdmin:
        """The rates form opens only where the console holds the accounting (one process)."""
        accounting = self.admin.accounting
        assert accounting is not None
        return accounting
