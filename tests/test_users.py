"""core/users.py: name rules, HA1 maths, generated passwords, the directory."""

from __future__ import annotations

import hashlib
import re
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.users import (
    GENERATED_PASSWORD_LENGTH,
    User,
    UserDirectory,
    changed_user,
    check_admin_password,
    compute_ha1,
    generate_password,
    hash_admin_password,
    make_user,
    validate_caller_id,
    validate_display_name,
    validate_username,
    with_password,
)

# --- usernames ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "100", "a", "john.smith", "ext_200-b", "A" * 64, "9x"])
def test_valid_usernames(name: str) -> None:
    validate_username(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a" * 65, "longer than 64"),
        (".alice", "must start with a letter or a digit"),
        ("-rf", "must start with a letter or a digit"),
        ("_x", "must start with a letter or a digit"),
        ("alice smith", "contains ' '"),
        ("alice:x", "contains ':'"),
        ("alice@pbx", "contains '@'"),
        ("bøb", "contains 'ø'"),
        ("alice\n", "contains '\\n'"),
    ],
)
def test_invalid_usernames_say_why(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        validate_username(name)


@given(st.text(max_size=70))
def test_username_rule_is_exactly_the_documented_one(name: str) -> None:
    documented = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name, re.ASCII) is not None
    try:
        validate_username(name)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == documented


# --- HA1 and users ------------------------------------------------------------------------


def test_md5_ha1_matches_the_rfc_2617_example() -> None:
    # RFC 2617 §3.5: Mufasa / testrealm@host.com / "Circle Of Life".
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life", "MD5")
    assert ha1 == "939e7578ed9e3c518a452acee763bce9"


def test_make_user_stores_both_ha1s_and_no_password() -> None:
    user = make_user("alice", "s3cret-pass", "pbx.test", created_at=123.0)
    material = b"alice:pbx.test:s3cret-pass"
    assert user.ha1_md5 == hashlib.md5(material).hexdigest()
    assert user.ha1_sha256 == hashlib.sha256(material).hexdigest()
    assert user.ha1("SHA-256") == user.ha1_sha256
    assert user.ha1("MD5") == user.ha1_md5
    assert "password" not in {f.name for f in fields(User)}
    assert "s3cret-pass" not in repr(user)
    assert user.ha1_md5 not in repr(user)
    assert user.outbound_policy == "none"  # outbound calling is granted, not assumed
    assert user.created_at == 123.0


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"outbound_policy": "world"}, "outbound policy"),
        ({"max_concurrent_calls": -1}, "call limits"),
        ({"display_name": 'Eve "admin"'}, "display name"),
        ({"caller_id": "call me"}, "caller ID"),
    ],
)
def test_make_user_rejects_bad_fields(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        make_user("alice", "pw", "pbx.test", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"outbound_policy": "world"}, "outbound policy"),
        ({"max_calls_per_hour": -1}, "call limits"),
        ({"max_concurrent_calls": "3"}, "call limits"),  # a form's text, not a number
        ({"max_concurrent_calls": True}, "call limits"),
        ({"display_name": "Eve\r\nVia: evil"}, "display name"),
        ({"caller_id": "+44 1632"}, "caller ID"),
        ({"enabled": "yes"}, "enabled"),
        ({"allow_prefixes": "0900"}, "allow prefixes"),
        ({"ha1_md5": "0" * 32}, "unknown user field"),  # never through the options
        ({"username": "mallory"}, "unknown user field"),
    ],
)
def test_changed_user_applies_the_new_user_rules(changes: dict[str, object], reason: str) -> None:
    user = make_user("alice", "pw", "pbx.test")
    with pytest.raises(ValueError, match=reason):
        changed_user(user, **changes)


def test_changed_user_changes_only_what_it_is_given() -> None:
    user = make_user("alice", "pw", "pbx.test", caller_id="+441632960001")
    changed = changed_user(user, display_name="Alice", deny_prefixes=["0900", "+44 9"])
    assert (changed.display_name, changed.deny_prefixes) == ("Alice", ("0900", "+44 9"))
    assert (changed.caller_id, changed.ha1_md5, changed.realm) == (
        user.caller_id,
        user.ha1_md5,
        user.realm,
    )


@pytest.mark.parametrize("password", ["", "tab\there", "nul\x00"])
def test_make_user_rejects_unsendable_passwords(password: str) -> None:
    with pytest.raises(ValueError, match="password"):
        make_user("alice", password, "pbx.test")


def test_with_password_rehashes_for_the_new_realm() -> None:
    user = make_user("alice", "old-pass", "old.example", outbound_policy="local")
    changed = with_password(user, "new-pass", "new.example")
    assert changed.realm == "new.example"
    assert changed.ha1_md5 == compute_ha1("alice", "new.example", "new-pass")
    assert changed.outbound_policy == "local"


def test_display_name_and_caller_id_rules() -> None:
    validate_display_name("Alice Ångström")
    validate_caller_id("+441632960001")
    validate_caller_id("")
    with pytest.raises(ValueError):
        validate_display_name("back\\slash")
    with pytest.raises(ValueError):
        validate_caller_id("+44 1632")


# --- generated and console passwords ------------------------------------------------------


def test_generated_passwords_are_long_typable_and_different() -> None:
    passwords = {generate_password() for _ in range(200)}
    assert len(passwords) == 200
    for password in passwords:
        assert len(password) == GENERATED_PASSWORD_LENGTH
        assert re.fullmatch(r"[a-z2-9]+", password)
        assert not set(password) & set("01lo")


def test_admin_password_hash_checks() -> None:
    bcrypt_hash = hash_admin_password("console-pass", cost=4)
    assert bcrypt_hash.startswith("$2b$04$")
    assert check_admin_password("console-pass", bcrypt_hash)
    assert not check_admin_password("console-pasS", bcrypt_hash)
    assert not check_admin_password("", bcrypt_hash)
    assert not check_admin_password("console-pass", "not a hash")
    with pytest.raises(ValueError, match="72 bytes"):
        hash_admin_password("x" * 73, cost=4)


# --- the directory ------------------------------------------------------------------------


def test_user_directory() -> None:
    alice = make_user("alice", "pw-alice", "pbx.test")
    bob = make_user("bob", "pw-bob", "pbx.test")
    directory = UserDirectory([alice])
    assert directory.get("alice") is alice
    assert directory.get("bob") is None
    directory.put(bob)
    assert len(directory) == 2
    assert "bob" in directory
    directory.remove("alice")
    directory.remove("alice")
    assert [u.username for u in directory] == ["bob"]
    directory.replace_all([alice])
    assert len(directory) == 1 and directory.get("bob") is None
