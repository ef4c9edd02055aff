"""The users by name (core/directory.py, compiled) and the credentials the route asks of them:
the digest check's HA1 and the "TLS only" rule, as the assembly used to answer them itself."""

from __future__ import annotations

from dataclasses import replace

from conftest import USERS, start_pbx
from hypothesis import given, settings
from hypothesis import strategies as st
from support.client import UdpClient
from support.phone import Phone

from core.account import User
from core.directory import Credentials, UserDirectory
from core.users import Credentials as ReExportedCredentials
from core.users import User as ReExportedUser
from core.users import UserDirectory as ReExportedDirectory
from core.users import make_user

REALM = "pbx.test"
NAMES = ("alice", "bob", "carol", "dave")


def user(name: str, *, realm: str = REALM, enabled: bool = True, tls_only: bool = False) -> User:
    return User(
        username=name,
        realm=realm,
        ha1_md5=f"md5-{name}-{realm}",
        ha1_sha256=f"sha-{name}-{realm}",
        enabled=enabled,
        tls_only=tls_only,
    )


# The assembly's own look-ups before they moved here (core/assembly.py, e9da540): the
# general path the compiled ones must answer like.
def reference_ha1(directory: UserDirectory, realm: str, username: str) -> tuple[str, str] | None:
    found = directory.get(username)
    if found is None or not found.enabled or found.realm != realm:
        return None
    return found.ha1_md5, found.ha1_sha256


def reference_requires_tls(directory: UserDirectory, username: str) -> bool:
    found = directory.get(username)
    return found is not None and found.tls_only


def test_core_users_re_exports_the_record_and_the_directory() -> None:
    assert ReExportedUser is User
    assert ReExportedDirectory is UserDirectory
    assert ReExportedCredentials is Credentials


def test_an_enabled_user_of_the_realm_gives_both_hashes() -> None:
    alice = make_user("alice", "secret", REALM)
    credentials = Credentials(UserDirectory([alice]), REALM)
    assert credentials.ha1("alice") == (alice.ha1_md5, alice.ha1_sha256)


def test_unknown_disabled_and_other_realm_users_get_no_hashes() -> None:
    directory = UserDirectory(
        [user("alice"), user("bob", enabled=False), user("carol", realm="old.example")]
    )
    credentials = Credentials(directory, REALM)
    assert credentials.ha1("alice") == ("md5-alice-pbx.test", "sha-alice-pbx.test")
    assert credentials.ha1("bob") is None  # disabled
    assert credentials.ha1("carol") is None  # hashes made for another realm
    assert credentials.ha1("nobody") is None
    assert credentials.ha1("") is None
    # The same directory read for the other realm: only carol's hashes are good there.
    assert Credentials(directory, "old.example").ha1("carol") == (
        "md5-carol-old.example",
        "sha-carol-old.example",
    )
    assert Credentials(directory, "old.example").ha1("alice") is None


def test_tls_only_is_the_users_switch_whatever_else_it_is() -> None:
    directory = UserDirectory(
        [
            user("alice", tls_only=True),
            user("bob"),
            user("carol", enabled=False, tls_only=True),  # refused anyway; still "TLS only"
            user("dave", realm="old.example", tls_only=True),
        ]
    )
    credentials = Credentials(directory, REALM)
    assert credentials.requires_tls("alice") is True
    assert credentials.requires_tls("bob") is False
    assert credentials.requires_tls("carol") is True
    assert credentials.requires_tls("dave") is True
    assert credentials.requires_tls("nobody") is False


def test_readers_see_the_directory_replaced_wholesale_and_single_edits() -> None:
    directory = UserDirectory([user("alice"), user("bob", tls_only=True)])
    credentials = Credentials(directory, REALM)
    ha1 = credentials.ha1  # bound once, as the authenticator holds it
    requires_tls = credentials.requires_tls
    assert ha1("alice") is not None and requires_tls("bob")

    directory.replace_all([user("alice", enabled=False), user("carol", tls_only=True)])
    assert ha1("alice") is None
    assert ha1("bob") is None and not requires_tls("bob")  # gone with the old directory
    assert ha1("carol") is not None and requires_tls("carol")
    assert len(directory) == 2 and "bob" not in directory

    directory.put(user("bob"))
    assert ha1("bob") == ("md5-bob-pbx.test", "sha-bob-pbx.test")
    directory.remove("carol")
    assert ha1("carol") is None and not requires_tls("carol")
    directory.remove("carol")  # removing a missing user is no error
    assert [found.username for found in directory] == ["alice", "bob"]


users_strategy = st.lists(
    st.builds(
        user,
        st.sampled_from(NAMES),
        realm=st.sampled_from((REALM, "old.example", "PBX.TEST")),
        enabled=st.booleans(),
        tls_only=st.booleans(),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    first=users_strategy,
    second=users_strategy,
    realm=st.sampled_from((REALM, "old.example")),
    asked=st.lists(st.sampled_from((*NAMES, "", "eve", "ALICE")), min_size=1, max_size=8),
)
def test_the_compiled_look_ups_answer_as_the_assemblys_did(
    first: list[User], second: list[User], realm: str, asked: list[str]
) -> None:
    directory = UserDirectory(first)
    credentials = Credentials(directory, realm)
    for phase_users in (first, second):
        directory.replace_all(phase_users)
        for name in asked:
            assert credentials.ha1(name) == reference_ha1(directory, realm, name)
            assert credentials.requires_tls(name) is reference_requires_tls(directory, name)


# -- wired into the running core -------------------------------------------------------------
async def test_the_route_refuses_a_disabled_user_and_sees_a_reload(tmp_path) -> None:
    """Through the assembly's wiring: a disabled user cannot register; the tables read again
    from the database (another process's change) are what the digest check reads."""
    pbx = await start_pbx(tmp_path)
    try:
        assert pbx.core.credentials.realm == pbx.settings.realm
        address = (pbx.listening[0].host, pbx.listening[0].port)
        async with UdpClient(address) as client:
            phone = Phone(client, "alice", USERS["alice"])
            response = await phone.register()
            assert response is not None and response.status == 200

            await pbx.admin.update_user("alice", enabled=False)
            response = await phone.register()
            assert response is not None and response.status != 200

            # Enabled again in the database only, then the directory rebuilt from it.
            users = await pbx.store.list_users()
            stored = next(found for found in users if found.username == "alice")
            await pbx.store.update_user(replace(stored, enabled=True))
            await pbx.store.flush()
            response = await phone.register()
            assert response is not None and response.status != 200  # not read yet
            await pbx.core.reload_tables()
            response = await phone.register()
            assert response is not None and response.status == 200
    finally:
        await pbx.stop()
