"""Every form through the keyboard: valid input saves through the admin API, each invalid
field is refused inline with the form still open, and Esc cancels without a change."""

from __future__ import annotations

from pathlib import Path

from test_ui_support import console, refreshed
from textual.widgets import Button, Checkbox, Input, Select, Static

from screens.ban_form import BanForm, parse_duration
from screens.carrier_form import CarrierForm
from screens.credentials import CredentialsScreen
from screens.did_form import DidForm
from screens.form import FormScreen
from screens.user_form import PasswordForm, UserForm
from screens.widgets.field import Field
from screens.widgets.tables import KeyedTable


def fill(form: FormScreen, **values: str) -> None:  # type: ignore[type-arg]
    for name, value in values.items():
        form.query_one(f"#{name}", Input).value = value


async def submit(pilot, app) -> FormScreen | None:
    """Ctrl+S, then the form still open (refused) or None (saved and dismissed)."""
    screen = app.screen
    await pilot.press("ctrl+s")
    await pilot.pause()
    return screen if app.screen is screen else None


def errors(form: FormScreen) -> dict[str, str]:  # type: ignore[type-arg]
    return {field.field_name: field.error for field in form.query(Field) if field.error}


async def test_add_user_shows_credentials_once(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await pilot.press("4", "a")
        form = app.screen
        assert isinstance(form, UserForm)
        await pilot.press("ctrl+g")
        password = form.query_one("#password", Input).value
        assert len(password) == 20
        fill(
            form,
            username="alice",
            display_name="Alice",
            concurrent="2",
            hourly="30",
            caller_id="+441632960001",
        )
        assert await submit(pilot, app) is None
        assert isinstance(app.screen, CredentialsScreen)
        shown = str(app.screen.query_one("#credentials-text", Static).render())
        port = app.pbx.listening[0].port
        assert f"Password             {password}" in shown
        assert "Username / Auth ID   alice" in shown and "Realm                pbx.test" in shown
        assert "SIP server / Domain  127.0.0.1\n" in shown
        assert f"Port                 {port} (UDP or TCP)" in shown
        assert "Outbound proxy       none" in shown
        await pilot.press("enter")
        (user,) = await app.pbx.admin.list_users()
        assert (
            user.display_name,
            user.max_concurrent_calls,
            user.max_calls_per_hour,
            user.caller_id,
        ) == ("Alice", 2, 30, "+441632960001")
        assert app.pbx.users.get("alice") is not None  # the SIP side sees it at once
        await refreshed(pilot, app)
        assert app.screen.query_one("#users", KeyedTable).keys == ["alice"]


async def test_tls_only_checkbox_adds_shows_and_clears_the_switch(tmp_path: Path) -> None:
    """The user form's "TLS only" box: ticked with the keyboard, stored, in force for the
    route at once, shown in the Users pane, said in the credentials, and cleared by an edit."""
    async with console(tmp_path, users={"bob": "bob-secret-22"}) as (app, pilot):
        await pilot.press("4", "a")
        form = app.screen
        assert isinstance(form, UserForm)
        box = form.query_one("#tls_only", Checkbox)
        assert box.value is False  # a new user may use any transport unless told otherwise
        fill(form, username="alice", password="alice-secret-1")
        box.focus()
        await pilot.press("space")
        assert box.value is True
        assert await submit(pilot, app) is None
        assert isinstance(app.screen, CredentialsScreen)
        shown = str(app.screen.query_one("#credentials-text", Static).render())
        # This console listens on UDP and TCP only: the account cannot work yet, and it says so.
        assert "TLS required for this account" in shown and "no TLS listener" in shown
        await pilot.press("enter")
        assert app.pbx.users.get("alice").tls_only  # type: ignore[union-attr]
        await refreshed(pilot, app)
        table = app.screen.query_one("#users", KeyedTable)
        transport = [label for _key, label, _width in table.columns].index("Transport")
        assert {key: str(table.cells(key)[transport]) for key in table.keys} == {
            "alice": "TLS only",
            "bob": "any",
        }
        table.select_key("alice")
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, UserForm) and form.query_one("#tls_only", Checkbox).value
        form.query_one("#tls_only", Checkbox).value = False
        assert await submit(pilot, app) is None
        assert not app.pbx.users.get("alice").tls_only  # type: ignore[union-attr]
        await refreshed(pilot, app)
        assert str(table.cells("alice")[transport]) == "any"


async def test_user_form_refuses_each_invalid_field(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("4", "a")
        form = app.screen
        cases = [
            ({"username": "", "password": "pw-123456"}, "username", "empty"),
            ({"username": "-rf", "password": "pw-123456"}, "username", "must start with a letter"),
            ({"username": "bad name", "password": "pw-123456"}, "username", "contains ' '"),
            ({"username": "alice", "password": "pw-123456"}, "username", "already exists"),
            ({"username": "bob", "password": ""}, "password", "empty"),
            (
                {"username": "bob", "password": "pw-123456", "concurrent": "two"},
                "concurrent",
                "whole number",
            ),
            (
                {"username": "bob", "password": "pw-123456", "hourly": "-1"},
                "hourly",
                "whole number",
            ),
            (
                {"username": "bob", "password": "pw-123456", "caller_id": "12ab"},
                "caller_id",
                "digits, optionally after '+'",
            ),
        ]
        for values, field, message in cases:
            fill(form, concurrent="0", hourly="0", caller_id="")
            fill(form, **values)
            assert await submit(pilot, app) is form, values
            found = errors(form)
            assert list(found) == [field] and message in found[field], (values, found)
        await pilot.press("escape")
        assert [user.username for user in await app.pbx.admin.list_users()] == ["alice"]


async def test_edit_user_policy_and_limits_then_cancel_changes_nothing(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("4")
        await refreshed(pilot, app)
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, UserForm) and form.query_one("#username", Input).disabled
        form.query_one("#policy", Select).value = "national"
        fill(form, display_name="Alice Smith", concurrent="3")
        assert await submit(pilot, app) is None
        (user,) = await app.pbx.admin.list_users()
        assert (user.outbound_policy, user.display_name, user.max_concurrent_calls) == (
            "national",
            "Alice Smith",
            3,
        )
        await pilot.press("e")
        fill(app.screen, display_name="Not Saved")
        await pilot.press("escape")
        (user,) = await app.pbx.admin.list_users()
        assert user.display_name == "Alice Smith"


async def test_enter_on_a_user_opens_its_form(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("4")
        await app.workers.wait_for_complete()
        await refreshed(pilot, app)
        await pilot.press("enter")
        form = app.screen
        assert isinstance(form, UserForm) and form.query_one("#username", Input).value == "alice"


async def test_set_password_and_delete_user(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("4")
        await refreshed(pilot, app)
        before = app.pbx.users.get("alice")
        await pilot.press("p")
        assert isinstance(app.screen, PasswordForm)
        assert "empty" in errors(await submit(pilot, app))["password"]  # type: ignore[arg-type]
        fill(app.screen, password="new-secret-99")
        assert await submit(pilot, app) is None
        assert isinstance(app.screen, CredentialsScreen)
        await pilot.press("escape")
        assert app.pbx.users.get("alice").ha1_md5 != before.ha1_md5  # type: ignore[union-attr]
        await pilot.press("d")
        await pilot.press("n")  # declined: still there
        assert len(await app.pbx.admin.list_users()) == 1
        await pilot.press("d", "y")
        await pilot.pause()
        assert await app.pbx.admin.list_users() == []
        assert app.screen.query_one("#users", KeyedTable).keys == []


async def test_carrier_form_valid_invalid_and_cancel(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await pilot.press("5", "a")
        form = app.screen
        assert isinstance(form, CarrierForm)
        cases = [
            ({"name": "", "addresses": "203.0.113.0/24"}, "name", "empty"),
            ({"name": "has space", "addresses": "203.0.113.0/24"}, "name", "contains ' '"),
            (
                {"name": "acme", "addresses": "203.0.113.9", "gateway": "gw.example>x"},
                "gateway",
                "HOST[:PORT]",
            ),
            ({"name": "acme", "addresses": ""}, "addresses", "at least one address"),
            ({"name": "acme", "addresses": "not-an-ip"}, "addresses", "not-an-ip"),
            ({"name": "acme", "addresses": "203.0.113.0/40"}, "addresses", "prefix length"),
            (
                {"name": "acme", "addresses": "203.0.113.9", "gateway": "gw:99999"},
                "gateway",
                "1-65535",
            ),
            ({"name": "acme", "addresses": "203.0.113.9", "port": "x"}, "port", "whole number"),
            ({"name": "acme", "addresses": "203.0.113.9", "port": "70000"}, "port", "1-65535"),
            (
                {"name": "acme", "addresses": "203.0.113.9", "priority": "high"},
                "priority",
                "whole number",
            ),
        ]
        for values, field, message in cases:
            fill(form, gateway="", port="5060", priority="10")
            fill(form, **values)
            assert await submit(pilot, app) is form, values
            found = errors(form)
            message_found = found.get(field, "")
            assert message in message_found, (values, found)
        fill(
            form,
            name="acme",
            addresses="203.0.113.0/24, 198.51.100.7",
            gateway="sip.acme.example:5080",
            port="5060",
            priority="5",
            username="trunk",
            password="trunk-pw",
        )
        assert await submit(pilot, app) is None
        (carrier,) = await app.pbx.admin.list_carriers()
        assert carrier.addresses == ("203.0.113.0/24", "198.51.100.7/32")
        assert (carrier.gateway, carrier.priority, carrier.username) == (
            "sip.acme.example:5080",
            5,
            "trunk",
        )
        await pilot.press("a")
        fill(app.screen, name="other", addresses="192.0.2.1")
        await pilot.press("escape")
        assert len(await app.pbx.admin.list_carriers()) == 1
        await pilot.pause()
        assert app.screen.query_one("#carriers", KeyedTable).keys == ["acme"]


async def test_carrier_form_tls_port_follows_the_transport(tmp_path: Path) -> None:
    """Choosing TLS moves the port to 5061 (RFC 3261 §19.1.2) unless one was typed."""
    async with console(tmp_path) as (app, pilot):
        await pilot.press("5", "a")
        form = app.screen
        assert isinstance(form, CarrierForm)
        transport = form.query_one("#transport", Select)
        port = form.query_one("#port", Input)
        transport.value = "tls"
        await pilot.pause()
        assert port.value == "5061"
        transport.value = "udp"
        await pilot.pause()
        assert port.value == "5060"
        port.value = "5070"
        transport.value = "tls"
        await pilot.pause()
        assert port.value == "5070"  # typed by the operator: kept
        port.value = "5061"
        fill(form, name="secure", addresses="203.0.113.9", gateway="sbc.acme.example")
        assert await submit(pilot, app) is None
        (carrier,) = await app.pbx.admin.list_carriers()
        assert (carrier.transport, carrier.port) == ("tls", 5061)


async def test_did_form_valid_invalid_and_cancel(tmp_path: Path) -> None:
    async with console(tmp_path, users={"alice": "alice-secret-1"}) as (app, pilot):
        await pilot.press("5", "n")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, DidForm)
        fill(form, number="+44 1632 960001")
        assert "choose the user" in errors(await submit(pilot, app))["user"]  # type: ignore[arg-type]
        form.query_one("#user", Select).value = "alice"
        fill(form, number="")
        assert "not a telephone number" in errors(await submit(pilot, app))["number"]  # type: ignore[arg-type]
        fill(form, number="call me")
        assert "not a telephone number" in errors(await submit(pilot, app))["number"]  # type: ignore[arg-type]
        fill(form, number="+44 1632 960001")
        assert await submit(pilot, app) is None
        (did,) = await app.pbx.admin.list_dids()
        assert (did.number, did.username) == ("441632960001", "alice")
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#user", Select).value = "alice"
        fill(app.screen, number="+44 1632 960001")
        assert "already routed to 'alice'" in errors(await submit(pilot, app))["number"]  # type: ignore[arg-type]
        await pilot.press("escape")
        assert len(await app.pbx.admin.list_dids()) == 1


async def test_ban_form_valid_invalid_and_cancel(tmp_path: Path) -> None:
    async with console(tmp_path) as (app, pilot):
        await pilot.press("3", "b")
        form = app.screen
        assert isinstance(form, BanForm)
        fill(form, ip="")
        assert "not an IP address" in errors(await submit(pilot, app))["ip"]  # type: ignore[arg-type]
        fill(form, ip="300.1.1.1")
        assert "not an IP address" in errors(await submit(pilot, app))["ip"]  # type: ignore[arg-type]
        fill(form, ip="203.0.113.9", duration="soon")
        assert "600, 10m" in errors(await submit(pilot, app))["duration"]  # type: ignore[arg-type]
        fill(form, duration="2h", reason="scanning us")
        assert await submit(pilot, app) is None
        (ban,) = app.pbx.security.bans(app.pbx.clock())
        assert (ban.ip, ban.reason) == ("203.0.113.9", "scanning us")
        assert 7_190 < ban.until - app.pbx.clock() <= 7_200
        await pilot.press("b")
        fill(app.screen, ip="198.51.100.1")
        await pilot.press("escape")
        assert len(app.pbx.security.bans(app.pbx.clock())) == 1


def test_parse_duration() -> None:
    assert parse_duration("600") == 600 and parse_duration("10m") == 600
    assert parse_duration("2h") == 7_200 and parse_duration("1d") == 86_400
    assert parse_duration("") is None and parse_duration("forever") is None


async def test_every_form_shares_one_button_row(tmp_path: Path) -> None:
    """The base's Save / extra / Cancel buttons, clicked: Generate runs the form's action,
    Cancel dismisses with nothing saved, Save submits (the ban form labels it Ban)."""
    async with console(tmp_path) as (app, pilot):
        await pilot.press("4", "a")
        form = app.screen
        assert isinstance(form, UserForm)
        labels = [str(button.label) for button in form.query(Button)]
        assert labels == ["Save", "Generate password", "Cancel"]
        await pilot.click("#generate")
        assert len(form.query_one("#password", Input).value) == 20
        fill(form, username="bob")
        await pilot.click("#cancel")
        await pilot.pause()
        assert app.screen is not form
        assert await app.pbx.admin.list_users() == []
        await pilot.press("3", "b")
        form = app.screen
        assert isinstance(form, BanForm)
        assert [str(button.label) for button in form.query(Button)] == ["Ban", "Cancel"]
        fill(form, ip="203.0.113.7")
        await pilot.click("#save")
        await pilot.pause()
        assert app.screen is not form
        assert [ban.ip for ban in app.pbx.security.bans(app.pbx.clock())] == ["203.0.113.7"]
