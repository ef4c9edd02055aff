"""The realm the stored HA1s were computed for, and the warning when it is not the domain's."""

from __future__ import annotations

from core.settings import Settings
from core.store.database import Store
from pbxtui.cli.context import PROG

REALM_SETTING = "realm"  # settings-table key: the realm the stored HA1s were computed for


async def realm_warning(store: Store, settings: Settings) -> str | None:
    """A warning when stored HA1s were computed for another realm than the configured domain.

    HA1 = H(user:realm:password), so after a domain change those users cannot authenticate
    until their passwords are set again; there is no way to convert an HA1.
    """
    stale = [user for user in await store.list_users() if user.realm != settings.realm]
    stored_realm = await store.get_setting(REALM_SETTING)
    if not stale and (stored_realm is None or stored_realm == settings.realm):
        return None
    old_realm = stale[0].realm if stale else stored_realm
    who = f"{len(stale)} user(s) have" if stale else "the database has"
    return (
        f"{PROG}: warning: {who} passwords hashed for realm {old_realm!r} but the domain is "
        f"{settings.realm!r}; digest HA1 depends on the realm, so reset them with "
        f"'{PROG} user passwd NAME' (or set the domain back)"
    )
