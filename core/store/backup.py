"""Copies of the live database: `pbxtui backup FILE`, and one before every schema upgrade.

`VACUUM INTO` writes a consistent snapshot from inside one read transaction, so it runs while
the server (or the CLI) writes: in WAL mode readers and the writer do not block each other.
The copy is a complete, compacted database with no -wal file beside it; restoring is copying
it back over the database while pbxtui is stopped (README: Keeping data).

The copy holds HA1 hashes and carrier passwords like the database, so it is created owner-only
(SQLite accepts an existing empty file as the target of VACUUM INTO).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import aiosqlite

from core.store.errors import StoreError


async def vacuum_into(db: aiosqlite.Connection, target: Path) -> Path:
    """Write a consistent copy of the open database to `target`, which must not exist."""
    target = target.expanduser().absolute()
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise StoreError(f"{target} already exists: choose a new file name") from None
    except OSError as exc:
        raise StoreError(f"cannot create {target}: {exc.strerror}") from exc
    try:
        await db.execute("VACUUM INTO ?", (os.fspath(target),))
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise StoreError(f"backup to {target} failed: {exc}") from exc
    return target


def pre_migration_path(database: Path, version: int, now: float | None = None) -> Path:
    """`pbxtui.db` at schema 3 → `pbxtui.db.schema3-20261206T210000Z.bak`, beside it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return database.with_name(f"{database.name}.schema{version}-{stamp}.bak")
