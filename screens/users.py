"""Pane 4, Users: the SIP accounts, and the forms that add, change and remove them."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Label

from core.provisioning import phone_settings
from core.users import User
from screens.base import StoreRowsPane
from screens.confirm import ConfirmScreen
from screens.credentials import CredentialsScreen
from screens.user_form import PasswordForm, UserForm, UserSaved
from screens.widgets.tables import KeyedTable


def limits_cell(user: User) -> str:
    concurrent = str(user.max_concurrent_calls) if user.max_concurrent_calls else "∞"
    hourly = f"{user.max_calls_per_hour}/h" if user.max_calls_per_hour else "∞/h"
    return f"{concurrent} · {hourly}"


def user_cells(user: User, contacts: int) -> tuple[str | Text, ...]:
    return (
        user.username,
        user.display_name,
        Text("✓", style="green") if user.enabled else Text("✗ off", style="red"),
        Text(
            user.outbound_policy,
            style="bold red" if user.outbound_policy == "international" else "",
        ),
        limits_cell(user),
        user.caller_id,
        Text("TLS only", style="bold") if user.tls_only else Text("any", style="dim"),
        Text(str(contacts), style="green") if contacts else Text("0", style="dim"),
    )


class UsersPane(StoreRowsPane):
    PANE = "users"
    FIRST_FOCUS = "#users"
    BINDINGS: ClassVar = [
        Binding("a", "add", "Add"),
        Binding("e", "edit", "Edit"),
        Binding("p", "password", "Password"),
        Binding("d,delete", "delete", "Delete"),
        Binding("r", "reload", "Reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.users: list[User] = []

    def compose(self) -> ComposeResult:
        yield Label("", id="users-info")
        yield KeyedTable(
            [
                ("username", "Username"),
                ("name", "Name"),
                ("enabled", "On"),
                ("policy", "Outbound"),
                ("limits", "Calls · per hour"),
                ("caller_id", "Caller ID"),
                ("transport", "Transport"),
                ("contacts", "Contacts"),
            ],
            id="users",
        )

    def refresh_view(self) -> None:
        self.reload_rows(when_stale=True)
        self._render_rows()

    async def load_rows(self) -> None:
        self.users = await self.admin.list_users()
        self._render_rows()

    def _render_rows(self) -> None:
        core = self.core
        self.query_one("#users", KeyedTable).sync(
            {
                user.username: user_cells(user, core.contact_count(user.username))
                for user in self.users
            }
        )
        enabled = sum(1 for user in self.users if user.enabled)
        self.show_text(
            "users-info",
            f" {len(self.users)} users, {enabled} enabled   a add · e edit · p password · d delete",
        )

    def selected_user(self) -> User | None:
        key = self.query_one("#users", KeyedTable).selected_key
        return next((user for user in self.users if user.username == key), None)

    @on(KeyedTable.Selected, "#users")
    def _row_selected(self) -> None:
        self.action_edit()

    async def _saved(self, saved: UserSaved | None) -> None:
        if saved is None:
            return
        await self.load()
        self.query_one("#users", KeyedTable).select_key(saved.user.username)
        if saved.password is not None:
            settings = self.core.settings
            account = phone_settings(
                saved.user.username,
                saved.password,
                settings.realm,
                self.core.listening,
                tls_required=saved.user.tls_only or settings.tls.tls_only,
            )
            self.app.push_screen(CredentialsScreen(account))
        else:
            self.notify(f"saved {saved.user.username}", markup=False)

    def action_add(self) -> None:
        self.app.push_screen(UserForm(), self._saved)

    def action_edit(self) -> None:
        user = self.selected_user()
        if user is None:
            self.notify("no user selected", severity="warning")
            return
        self.app.push_screen(UserForm(user), self._saved)

    def action_password(self) -> None:
        user = self.selected_user()
        if user is None:
            self.notify("no user selected", severity="warning")
            return
        self.app.push_screen(PasswordForm(user.username), self._saved)

    def action_delete(self) -> None:
        user = self.selected_user()
        if user is None:
            self.notify("no user selected", severity="warning")
            return

        async def answered(yes: bool | None) -> None:
            if not yes:
                return
            try:
                await self.admin.delete_user(user.username)
            except ValueError as error:
                self.notify(str(error), severity="error", markup=False)
                return
            self.notify(f"deleted {user.username}", markup=False)
            await self.load()

        question = f"Delete user {user.username}? Their phones are unregistered at once."
        self.app.push_screen(ConfirmScreen(question, "Delete"), answered)
