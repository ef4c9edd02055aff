"""Add or edit a SIP user, and set a user's password: forms that save through the admin API.

The form calls the API itself, so a refusal (a duplicate name, a bad character) is shown
under the field it is about while the form stays open; on success it dismisses with what
was saved, and the new password once, for the credentials screen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Checkbox, Input, Select

from core.users import OUTBOUND_POLICIES, User
from screens.form import FormScreen, parse_count
from screens.widgets.field import Field

POLICY_LABELS = {
    "none": "none — internal calls only",
    "local": "local numbers",
    "national": "national numbers",
    "international": "international (toll fraud risk)",
}


@dataclass(frozen=True, slots=True)
class UserSaved:
    """What a user form saved; `password` is set only when this form set a password."""

    user: User
    password: str | None


class UserForm(FormScreen[UserSaved | None]):
    """A new user (`user` None) or changes to an existing one."""

    BINDINGS: ClassVar = [*FormScreen.BINDINGS, Binding("ctrl+g", "generate", "Generate password")]
    ERROR_FIELDS = (
        ("already exists", "username"),
        ("username", "username"),
        ("password", "password"),
        ("display name", "display_name"),
        ("policy", "policy"),
        ("concurrent", "concurrent"),
        ("per hour", "hourly"),
        ("limit", "concurrent"),
        ("caller", "caller_id"),
    )

    def __init__(self, user: User | None = None) -> None:
        super().__init__()
        self.user = user

    def form_title(self) -> str:
        return f"Edit user {self.user.username}" if self.user else "New SIP user"

    def extra_buttons(self) -> Sequence[tuple[str, str]]:
        return () if self.user else (("Generate password", "generate"),)

    def compose_fields(self) -> ComposeResult:
        user = self.user
        editing = user is not None
        yield Field(
            "Username",
            Input(user.username if user else "", id="username", compact=True, disabled=editing),
            name="username",
            hint="" if editing else "letters, digits, . - _",
        )
        yield Field(
            "Display name",
            Input(user.display_name if user else "", id="display_name", compact=True),
            name="display_name",
        )
        if not editing:
            yield Field(
                "Password",
                Input(id="password", compact=True),
                name="password",
                hint="ctrl+g generates one",
            )
        yield Field(
            "Outbound calls through carriers",
            Select(
                [(POLICY_LABELS[policy], policy) for policy in OUTBOUND_POLICIES],
                value=user.outbound_policy if user else "none",
                allow_blank=False,
                id="policy",
                compact=True,
            ),
            name="policy",
        )
        with Horizontal(classes="field-row"):
            yield Field(
                "Max concurrent calls",
                Input(
                    str(user.max_concurrent_calls) if user else "0",
                    id="concurrent",
                    compact=True,
                ),
                name="concurrent",
                hint="0 = no limit",
            )
            yield Field(
                "Max calls / hour",
                Input(str(user.max_calls_per_hour) if user else "0", id="hourly", compact=True),
                name="hourly",
                hint="0 = no limit",
            )
        yield Field(
            "Caller ID",
            Input(user.caller_id if user else "", id="caller_id", compact=True),
            name="caller_id",
            hint="number carriers show",
        )
        yield Checkbox("Enabled", user.enabled if user else True, id="enabled", compact=True)
        yield Checkbox(
            "TLS only (refused over UDP and TCP)",
            user.tls_only if user else False,
            id="tls_only",
            compact=True,
        )

    def on_mount(self) -> None:
        self.query_one("#display_name" if self.user else "#username", Input).focus()

    def action_generate(self) -> None:
        if self.query("#password"):
            self.query_one("#password", Input).value = self.admin.generate_password()

    async def submit(self) -> None:
        fields: dict[str, object] = {
            "display_name": self.value("display_name"),
            "outbound_policy": str(self.query_one("#policy", Select).value),
            "caller_id": self.value("caller_id"),
            "enabled": self.query_one("#enabled", Checkbox).value,
            "tls_only": self.query_one("#tls_only", Checkbox).value,
        }
        invalid = False
        for name, key, what in (
            ("concurrent", "max_concurrent_calls", "max concurrent calls"),
            ("hourly", "max_calls_per_hour", "max calls per hour"),
        ):
            try:
                fields[key] = parse_count(self.value(name), what)
            except ValueError as error:
                self.field_error(name, str(error))
                invalid = True
        if invalid:
            return
        admin = self.admin
        try:
            if self.user is None:
                password = self.query_one("#password", Input).value
                user = await admin.add_user(self.value("username"), password, **fields)
                self.dismiss(UserSaved(user, password))
            else:
                user = await admin.update_user(self.user.username, **fields)
                self.dismiss(UserSaved(user, None))
        except ValueError as error:
            self.show_error(str(error))


class PasswordForm(FormScreen[UserSaved | None]):
    """A new SIP password for an existing user (typed, or generated with ctrl+g)."""

    BINDINGS: ClassVar = [*FormScreen.BINDINGS, Binding("ctrl+g", "generate", "Generate password")]
    ERROR_FIELDS = (("password", "password"),)

    def __init__(self, username: str) -> None:
        super().__init__()
        self.username = username

    def form_title(self) -> str:
        return f"New password for {self.username}"

    def extra_buttons(self) -> Sequence[tuple[str, str]]:
        return (("Generate", "generate"),)

    def compose_fields(self) -> ComposeResult:
        yield Field(
            "Password",
            Input(id="password", compact=True),
            name="password",
            hint="ctrl+g generates one",
        )

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    def action_generate(self) -> None:
        self.query_one("#password", Input).value = self.admin.generate_password()

    async def submit(self) -> None:
        password = self.query_one("#password", Input).value
        try:
            user = await self.admin.set_password(self.username, password)
        except ValueError as error:
            self.show_error(str(error))
            return
        self.dismiss(UserSaved(user, password))
