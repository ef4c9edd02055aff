"""Keeping data: `pbxtui backup FILE` while the server runs and writes, and the copy taken
before a schema upgrade. Real SQLite files, the real CLI and a running Pbx."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import USERS, start_pbx

from core.store import schema
from core.store.database import Store
from pbxtui.cli import main


def _cli(*args: str) -> int:
    return main(list(args))


async def test_backup_while_the_server_runs_is_a_complete_private_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pbx = await start_pbx(tmp_path)
    db = pbx.settings.db_path
    copy = tmp_path / "backups" / "pbx-copy.db"
    try:
        # Writes keep arriving while the copy is taken: the copy is one consistent moment.
        writing = asyncio.create_task(_add_users(pbx, 50))
        code = await asyncio.to_thread(_cli, "--db", str(db), "backup", str(copy))
        await writing
        assert code == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert f"backed up {db} to {copy}" in out and f"cp {copy} {db}" in out
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # HA1s and carrier passwords
        assert not Path(f"{copy}-wal").exists()  # self-contained
        async with await Store.open(copy, create=False) as restored:
            names = {user.username for user in await restored.list_users()}
            assert set(USERS) <= names
            assert await restored.get_or_create_setting("realm", lambda: "?") == "pbx.test"
            with sqlite3.connect(copy) as check:
                assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        await pbx.stop()


async def _add_users(pbx, count: int) -> None:  # type: ignore[no-untyped-def]
    for index in range(count):
        await pbx.admin.add_user(f"load{index}", "load-secret-123")


async def test_a_backup_never_overwrites_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pbx = await start_pbx(tmp_path)
    try:
        target = tmp_path / "precious.db"
        target.write_bytes(b"someone's data")
        code = await asyncio.to_thread(
            _cli, "--db", str(pbx.settings.db_path), "backup", str(target)
        )
        assert code == 1
        errors = [e for e in capsys.readouterr().err.splitlines() if "error" in e]
        assert errors == [f"pbxtui: error: {target} already exists: choose a new file name"]
        assert target.read_bytes() == b"someone's data"
    finally:
        await pbx.stop()


def _old_database(path: Path) -> None:
    """A database at schema version 1 with a user in it, as an older pbxtui left it."""
    with sqlite3.connect(path) as db:
        for statement in schema.MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO users (username, realm, ha1_md5, ha1_sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            ("olduser", "pbx.test", "0" * 32, "0" * 64, 1.0),
        )
    path.chmod(0o600)


async def test_a_schema_upgrade_first_copies_the_database(tmp_path: Path) -> None:
    assert schema.SCHEMA_VERSION > 1
    db = tmp_path / "pbx.db"
    _old_database(db)
    async with await Store.open(db) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
    [copy] = list(tmp_path.glob("pbx.db.schema1-*.bak"))
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    with sqlite3.connect(copy) as old:
        assert old.execute("PRAGMA user_version").fetchone() == (1,)
        assert old.execute("SELECT username FROM users").fetchall() == [("olduser",)]
    # Opening the upgraded file again copies nothing more.
    async with await Store.open(db):
        pass
    assert len(list(tmp_path.glob("pbx.db.schema*.bak"))) == 1


async def test_a_new_database_is_not_copied(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "new.db"):
        pass
    assert list(tmp_path.glob("*.bak")) == []
