"""Where and how to save captured dialogs: .pcap for Wireshark, .txt for reading and mail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, RadioButton, RadioSet

from screens.form import FormScreen
from screens.widgets.field import Field


@dataclass(frozen=True, slots=True)
class SaveRequest:
    path: Path
    format: str  # "pcap" or "txt"
    scope: str  # "selected" (the dialog under the cursor) or "filtered" (every listed dialog)


def check_save_path(text: str) -> Path:
    """The file to write, `~` expanded; it must be new and its folder must exist."""
    if not text.strip():
        raise ValueError("file name is empty")
    path = Path(text.strip()).expanduser()
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if path.exists():
        raise ValueError(f"{path} already exists; choose another name")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    return path


class SaveForm(FormScreen[SaveRequest | None]):
    def __init__(self, default_stem: str, selected: str | None, listed: int) -> None:
        super().__init__()
        self.default_stem = default_stem
        self.selected = selected
        self.listed = listed

    def form_title(self) -> str:
        return "Save captured dialogs"

    def compose_fields(self) -> ComposeResult:
        yield Field(
            "File", Input(f"{self.default_stem}.pcap", id="path", compact=True), name="path"
        )
        with Horizontal(classes="field-row"):
            with RadioSet(id="format", compact=True):
                yield RadioButton("pcap (Wireshark)", value=True, id="fmt-pcap")
                yield RadioButton("text", id="fmt-txt")
            with RadioSet(id="scope", compact=True):
                yield RadioButton(
                    f"selected dialog {self.selected or ''}"[:40],
                    value=self.selected is not None,
                    disabled=self.selected is None,
                    id="scope-selected",
                )
                yield RadioButton(
                    f"all {self.listed} listed dialogs",
                    value=self.selected is None,
                    id="scope-filtered",
                )

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        if event.radio_set.id != "format":
            return
        path_input = self.query_one("#path", Input)
        suffix = ".txt" if event.pressed.id == "fmt-txt" else ".pcap"
        path = Path(path_input.value)
        if path.suffix in (".pcap", ".txt"):
            path_input.value = str(path.with_suffix(suffix))

    async def submit(self) -> None:
        try:
            path = check_save_path(self.query_one("#path", Input).value)
        except ValueError as error:
            self.field_error("path", str(error))
            return
        text_format = self.query_one("#fmt-txt", RadioButton).value
        selected = self.query_one("#scope-selected", RadioButton).value
        self.dismiss(
            SaveRequest(
                path, "txt" if text_format else "pcap", "selected" if selected else "filtered"
            )
        )
