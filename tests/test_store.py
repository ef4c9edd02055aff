"""core/store/ against real SQLite files: schema, migrations, CRUD, the writer, and
the change watch."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest

import core.store.schema as store_module
from core.store.connection import PAGE_CACHE_KIB
from core.store.database import Store
from core.store.errors import DuplicateError, NotFoundError, StoreError
from core.store.ops import (
    DeleteBan,
    DeleteBinding,
    DeleteExpiredBindings,
    InsertCdr,
    UpsertBan,
    UpsertBinding,
)
from core.store.rows import BanRow, BindingRow, CarrierRow, CdrRow
from core.store.schema import SCHEMA_VERSION
from core.users import make_user

REALM = "pbx.test"


@pytest.fixture
async def store(tmp_path: Path):
    opened = await Store.open(tmp_path / "pbx.db")
    try:
        yield opened
    finally:
        await opened.close()


def binding(aor: str = "alice", contact: str = "sip:alice@192.0.2.10:5060", **kw) -> BindingRow:
    return BindingRow(aor=aor, contact=contact, expires_at=kw.pop("expires_at", 2e9), **kw)


def cdr(call_id: str = "call-1", **kw) -> CdrRow:
    fields = {
        "caller": "alice",
        "callee": "bob",
        "source_ip": "192.0.2.10",
        "direction": "internal",
        "started_at": 1_700_000_000.0,
    }
    fields.update(kw)
    return CdrRow(call_id=call_id, **fields)


# --- schema and migrations ----------------------------------------------------------------


async def test_new_database_gets_the_whole_schema_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "pbx.db"
    async with await Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert await store.journal_mode() == "wal"
        assert await store._pragma_int("PRAGMA cache_size") == -PAGE_CACHE_KIB  # a small one
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {"users", "carriers", "dids", "location", "bans", "cdrs", "admin", "settings"} <= tables


async def test_database_file_and_directory_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "pbx.db"
    async with await Store.open(path):
        pass
    assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


async def test_reopening_keeps_data_and_runs_no_migration_twice(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path) as store:
        await store.add_user(make_user("alice", "secret-1", REALM))
    async with await Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [u.username for u in await store.list_users()] == ["alice"]


async def test_an_empty_version_0_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    async with await Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION


async def test_an_older_schema_is_migrated_forward_keeping_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path) as store:
        await store.add_user(make_user("alice", "secret-1", REALM))
    next_version = SCHEMA_VERSION + 1
    migration = (
        "ALTER TABLE users ADD COLUMN note TEXT NOT NULL DEFAULT ''",
        f"PRAGMA user_version = {next_version}",
    )
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, migration))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", next_version)
    async with await Store.open(path) as store:
        assert store.schema_version == next_version
        assert (await store.get_user("alice")) is not None
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
    assert "note" in columns


async def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path):
        pass
    broken = ("CREATE TABLE extra (x)", "INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="upgrading the schema"):
        await Store.open(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'extra'").fetchone() is None


def make_version_1_file(path: Path) -> None:
    """A database exactly as pbxtui with schema version 1 left it, with a user and a binding."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in store_module.MIGRATIONS[0]:
            db.execute(statement)
        db.execute(
            "INSERT INTO users (username, realm, ha1_md5, ha1_sha256, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            ("alice", REALM, "md5", "sha256", 1_700_000_000.0),
        )
        db.execute(
            """
            INSERT INTO location (id, aor, contact, received, received_port, transport, socket,
                                  expires_at, user_agent, call_id, cseq, q, nat, instance,
                                  reg_id, registered_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            (
                7,
                "alice",
                "sip:alice@192.0.2.10:5060;ob",
                "203.0.113.5",
                40_000,
                "tcp",
                "tcp:198.51.100.1:5060",
                2e9,
                "Phone/1",
                "call-a",
                3,
                0.5,
                1,
                "<urn:uuid:1>",
                1,
                1_700_000_000.0,
            ),
        )
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


async def test_a_version_1_location_table_is_rebuilt_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    make_version_1_file(path)

    async with await Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert (await store.get_user("alice")) is not None
        [row] = await store.load_bindings()
        # The same contact on a second flow of the instance: a new row since version 2.
        store.submit(UpsertBinding(replace(row, reg_id=2)))
        await store.flush()
        assert [b.reg_id for b in await store.load_bindings()] == [1, 2]

    assert row == BindingRow(
        aor="alice",
        contact="sip:alice@192.0.2.10:5060;ob",
        expires_at=2e9,
        received="203.0.113.5",
        received_port=40_000,
        transport="tcp",
        socket="tcp:198.51.100.1:5060",
        user_agent="Phone/1",
        call_id="call-a",
        cseq=3,
        q=0.5,
        nat=True,
        instance="<urn:uuid:1>",
        reg_id=1,
        registered_at=1_700_000_000.0,
        path=(),
        refreshed_at=1_700_000_000.0,  # the version-1 loader's stand-in, now stored
    )
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        [(index_name,)] = db.execute(
            "SELECT name FROM pragma_index_list('location') WHERE \"unique\" = 1"
        ).fetchall()
        unique_columns = [
            row[0] for row in db.execute("SELECT name FROM pragma_index_info(?)", (index_name,))
        ]
        assert db.execute("SELECT id FROM location WHERE reg_id = 1").fetchone() == (7,)
    assert "location_new" not in tables
    assert "location_by_expiry" in tables  # the expiry index came back with the table
    assert unique_columns == ["aor", "contact", "instance", "reg_id"]


async def test_a_version_3_file_gains_tls_only_users_keeping_its_users(tmp_path: Path) -> None:
    """Schema 4 (issue 19): a database pbxtui left at version 3, with a user in it, opens with
    every user allowed on any transport, and the new switch is stored and checked."""
    path = tmp_path / "v3.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        for migration in store_module.MIGRATIONS[:3]:
            for statement in migration:
                db.execute(statement)
        db.execute(
            "INSERT INTO users (username, realm, ha1_md5, ha1_sha256, display_name,"
            " outbound_policy, max_concurrent_calls, created_at)"
            " VALUES ('alice', ?, 'md5', 'sha256', 'Alice A', 'national', 2, 1700000000.0)",
            (REALM,),
        )
        assert db.execute("PRAGMA user_version").fetchone() == (3,)

    async with await Store.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 4
        alice = await store.get_user("alice")
        assert alice is not None
        assert (alice.display_name, alice.outbound_policy, alice.max_concurrent_calls) == (
            "Alice A",
            "national",
            2,
        )
        assert alice.tls_only is False
        await store.update_user(replace(alice, tls_only=True))
        assert (await store.get_user("alice")) == replace(alice, tls_only=True)
    assert list(tmp_path.glob("v3.db.schema3-*.bak")), "no copy made before the upgrade"
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT tls_only FROM users").fetchall() == [(1,)]
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute("UPDATE users SET tls_only = 2")


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(StoreError, match="newer"):
        await Store.open(path)


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        await Store.open(path)


# --- tables -------------------------------------------------------------------------------


async def test_users_round_trip_every_field(store: Store) -> None:
    user = make_user(
        "alice",
        "secret-1",
        REALM,
        display_name="Alice A",
        enabled=False,
        outbound_policy="national",
        allow_prefixes=["0044", "01"],
        deny_prefixes=["0900"],
        max_concurrent_calls=2,
        max_calls_per_hour=30,
        caller_id="+441632960001",
        tls_only=True,
    )
    await store.add_user(user)
    assert await store.get_user("alice") == user
    assert await store.get_user("nobody") is None


async def test_listing_reads_every_user_in_chunks_while_the_writer_waits(store: Store) -> None:
    """More users than one chunk of rows, and a write submitted meanwhile: every user comes
    back once, in name order, and the write still lands."""
    users = [make_user(f"u{i:04d}", "pw-pw-pw", REALM) for i in range(700)]
    await store.bulk_add_users(users[::-1])
    listing = asyncio.ensure_future(store.list_users())
    await asyncio.sleep(0)
    await store.add_user(make_user("zz-late", "pw-pw-pw", REALM))
    assert await listing == users
    assert len(await store.list_users()) == 701


async def test_duplicate_user_is_refused(store: Store) -> None:
    await store.add_user(make_user("alice", "secret-1", REALM))
    with pytest.raises(DuplicateError, match="alice"):
        await store.add_user(make_user("alice", "other", REALM))


async def test_bulk_add_is_all_or_nothing(store: Store) -> None:
    await store.add_user(make_user("carol", "secret-3", REALM))
    batch = [make_user(f"user{i}", "pw-pw-pw", REALM) for i in range(50)]
    with pytest.raises(DuplicateError, match="carol"):
        await store.bulk_add_users([*batch, make_user("carol", "x", REALM)])
    assert [u.username for u in await store.list_users()] == ["carol"]
    await store.bulk_add_users(batch)
    assert len(await store.list_users()) == 51


async def test_update_and_delete_user(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await store.update_user(make_user("ghost", "pw", REALM))
    user = make_user("alice", "secret-1", REALM)
    await store.add_user(user)
    changed = make_user("alice", "secret-2", REALM, outbound_policy="local")
    await store.update_user(changed)
    assert await store.get_user("alice") == changed
    assert await store.delete_user("alice") is True
    assert await store.delete_user("alice") is False


async def test_deleting_a_user_removes_its_dids(store: Store) -> None:
    await store.add_user(make_user("alice", "secret-1", REALM))
    await store.add_did("441632960001", "alice")
    await store.delete_user("alice")
    assert await store.list_dids() == []


async def test_dids_need_a_known_user_and_a_free_number(store: Store) -> None:
    with pytest.raises(NotFoundError, match="bob"):
        await store.add_did("441632960001", "bob")
    await store.add_user(make_user("bob", "secret-2", REALM))
    await store.add_did("441632960001", "bob")
    with pytest.raises(DuplicateError, match="bob"):
        await store.add_did("441632960001", "bob")
    assert [(d.number, d.username) for d in await store.list_dids()] == [("441632960001", "bob")]
    assert await store.delete_did("441632960001") is True
    assert await store.delete_did("441632960001") is False


async def test_carriers_keep_credentials_but_never_show_them(store: Store) -> None:
    carrier = CarrierRow(
        name="tel",
        addresses=("192.0.2.0/24", "2001:db8::/32"),
        gateway="sip.tel.example:5060",
        username="acct",
        password="hunter2",
        priority=5,
    )
    await store.add_carrier(carrier)
    await store.add_carrier(CarrierRow(name="backup", addresses=("198.51.100.1/32",)))
    assert await store.get_carrier("tel") == carrier
    assert [c.name for c in await store.list_carriers()] == ["tel", "backup"]  # by priority
    assert "hunter2" not in repr(carrier)
    with pytest.raises(DuplicateError):
        await store.add_carrier(carrier)
    await store.update_carrier(CarrierRow(name="tel", addresses=("192.0.2.1/32",), enabled=False))
    assert (await store.get_carrier("tel")).enabled is False
    with pytest.raises(NotFoundError):
        await store.update_carrier(CarrierRow(name="ghost", addresses=()))
    assert await store.delete_carrier("tel") is True
    assert await store.delete_carrier("tel") is False


async def test_bans_upsert_list_and_expire(store: Store) -> None:
    await store.upsert_ban(BanRow("192.0.2.1", until=100.0, reason="flood", created_at=50.0))
    await store.upsert_ban(BanRow("192.0.2.2", until=None, reason="manual", created_at=60.0))
    await store.upsert_ban(BanRow("192.0.2.1", until=300.0, reason="flood", count=2, created_at=50))
    assert await store.get_ban("192.0.2.1") == BanRow("192.0.2.1", 300.0, "flood", 2, 50.0)
    assert [b.ip for b in await store.list_bans(active_at=400.0)] == ["192.0.2.2"]
    assert len(await store.list_bans()) == 2
    assert await store.delete_ban("192.0.2.2") is True
    assert await store.delete_ban("192.0.2.2") is False


async def test_cdrs_list_newest_first_and_export_everything_in_order(store: Store) -> None:
    for i in range(25):
        await store.insert_cdr(cdr(f"call-{i}", started_at=1_700_000_000.0 + i))
    newest = await store.list_cdrs(limit=3)
    assert [c.call_id for c in newest] == ["call-24", "call-23", "call-22"]
    exported = [c.call_id async for c in store.export_cdrs(chunk_size=7)]
    assert exported == [f"call-{i}" for i in range(25)]
    assert await store.count_cdrs() == 25


async def test_admin_hash_and_settings(store: Store) -> None:
    assert await store.get_admin_hash() is None
    await store.set_admin_hash("$2b$12$first")
    await store.set_admin_hash("$2b$12$second")
    assert await store.get_admin_hash() == "$2b$12$second"
    assert await store.get_setting("realm") is None
    await store.set_setting("realm", "a.example")
    await store.set_setting("realm", "b.example")
    assert await store.get_setting("realm") == "b.example"
    first = await store.get_or_create_setting("nonce_secret", lambda: "made-once")
    second = await store.get_or_create_setting("nonce_secret", lambda: "made-twice")
    assert first == second == "made-once"


async def test_location_replace_and_load(store: Store) -> None:
    rows = [
        binding(nat=True, q=0.5, instance="<urn:uuid:1>", reg_id=1, received="203.0.113.5"),
        binding(contact="sip:alice@192.0.2.11", expires_at=10.0),
        binding(aor="bob", contact="sip:bob@192.0.2.12"),
    ]
    await store.replace_bindings(rows)
    assert await store.load_bindings() == sorted(rows, key=lambda r: r.aor)
    assert len(await store.load_bindings(now=100.0)) == 2
    await store.replace_bindings(rows[2:])
    assert [b.aor for b in await store.load_bindings()] == ["bob"]


async def test_location_keeps_path_and_refresh_time(store: Store) -> None:
    routed = binding(
        path=("<sip:edge.example;lr>", "<sip:[2001:db8::9]:5070;lr;ob>"),
        registered_at=1_700_000_000.0,
        refreshed_at=1_700_000_900.5,
    )
    await store.replace_bindings([routed])
    assert await store.load_bindings() == [routed]

    moved = replace(routed, path=("<sip:other-edge.example;lr>",), refreshed_at=1_700_001_800.0)
    store.submit(UpsertBinding(moved))
    await store.flush()
    assert await store.load_bindings() == [moved]  # a refresh updates both


async def test_flows_differing_only_in_reg_id_are_separate_rows(store: Store) -> None:
    flow_1 = binding(instance="<urn:uuid:1>", reg_id=1, received="203.0.113.5")
    flow_2 = binding(instance="<urn:uuid:1>", reg_id=2, received="198.51.100.7")
    store.submit(UpsertBinding(flow_1))
    store.submit(UpsertBinding(flow_2))
    store.submit(UpsertBinding(replace(flow_1, cseq=2)))  # a refresh of flow 1 only
    await store.flush()
    assert await store.load_bindings() == [replace(flow_1, cseq=2), flow_2]

    store.submit(DeleteBinding.of(flow_2))
    await store.flush()
    assert await store.load_bindings() == [replace(flow_1, cseq=2)]


async def test_delete_binding_matches_instance_and_reg_id_exactly(store: Store) -> None:
    plain = binding()
    instance_only = binding(instance="<urn:uuid:1>")
    flow = binding(instance="<urn:uuid:1>", reg_id=1)
    await store.replace_bindings([plain, instance_only, flow])

    store.submit(DeleteBinding("alice", plain.contact, "<urn:uuid:1>", 2))  # no such flow
    store.submit(DeleteBinding("alice", plain.contact, "<urn:uuid:1>", 0))
    await store.flush()
    assert await store.load_bindings() == [plain, flow]
    assert DeleteBinding.of(flow) == DeleteBinding("alice", plain.contact, "<urn:uuid:1>", 1)


# --- the writer task ----------------------------------------------------------------------


async def test_writer_commits_a_burst_in_a_few_transactions(store: Store) -> None:
    commits: list[str] = []
    await store._db.set_trace_callback(
        lambda sql: commits.append(sql) if sql.strip().upper() == "COMMIT" else None
    )
    store.start_writer()
    for i in range(500):
        assert store.submit(UpsertBinding(binding(contact=f"sip:alice@192.0.2.{i % 250}:{i}")))
        assert store.submit(InsertCdr(cdr(f"call-{i}")))
    await store.flush()
    await store._db.set_trace_callback(None)
    assert len(await store.load_bindings()) == 500
    assert await store.count_cdrs() == 500
    assert 1 <= len(commits) <= 3
    stats = store.writer_stats
    assert (stats.committed, stats.dropped, stats.failed, stats.pending) == (1000, 0, 0, 0)


async def test_writer_keeps_order_within_a_table(store: Store) -> None:
    store.start_writer()
    store.submit(UpsertBinding(binding()))
    store.submit(InsertCdr(cdr()))
    store.submit(DeleteBinding.of(binding()))
    store.submit(UpsertBan(BanRow("192.0.2.9", until=None)))
    store.submit(DeleteBan("192.0.2.9"))
    store.submit(UpsertBinding(binding(contact="sip:alice@192.0.2.99", expires_at=5.0)))
    store.submit(DeleteExpiredBindings(now=10.0))
    await store.flush()
    assert await store.load_bindings() == []
    assert await store.list_bans() == []
    assert await store.count_cdrs() == 1


async def test_writer_commits_on_its_own_without_flush(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path, batch_interval=0.02) as store:
        store.start_writer()
        store.submit(InsertCdr(cdr()))
        deadline = time.monotonic() + 2.0
        seen = 0
        while time.monotonic() < deadline and not seen:
            await asyncio.sleep(0.02)
            with sqlite3.connect(path) as other:
                seen = other.execute("SELECT count(*) FROM cdrs").fetchone()[0]
        assert seen == 1


async def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "pbx.db", write_queue_size=10) as store:
        accepted = [store.submit(InsertCdr(cdr(f"call-{i}"))) for i in range(15)]
        assert accepted == [True] * 10 + [False] * 5
        assert store.writer_stats.dropped == 5
        await store.flush()  # without a writer task, flush commits inline
        assert await store.count_cdrs() == 10


async def test_one_bad_op_costs_only_itself(store: Store) -> None:
    store.start_writer()
    store.submit(UpsertBan(BanRow("192.0.2.1", until=None)))
    store.submit(UpsertBan(BanRow("192.0.2.2", until=None, count=None)))  # type: ignore[arg-type]
    store.submit(UpsertBan(BanRow("192.0.2.3", until=None)))
    await store.flush()
    assert [b.ip for b in await store.list_bans()] == ["192.0.2.1", "192.0.2.3"]
    assert store.writer_stats.failed == 1
    assert store.writer_stats.committed == 2


async def test_close_commits_what_is_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    store = await Store.open(path, batch_interval=10.0)
    store.start_writer()
    for i in range(3):
        store.submit(InsertCdr(cdr(f"call-{i}")))
    await store.close()
    assert store.submit(InsertCdr(cdr())) is False
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM cdrs").fetchone()[0] == 3


# --- change watch -------------------------------------------------------------------------


async def test_data_version_moves_only_for_other_connections(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path) as store:
        assert await store.changed_elsewhere() is False
        await store.set_setting("own", "write")
        assert await store.changed_elsewhere() is False
        with sqlite3.connect(path) as other:
            other.execute("INSERT INTO settings (key, value) VALUES ('cli', 'write')")
        assert await store.changed_elsewhere() is True
        assert await store.changed_elsewhere() is False


async def test_watch_changes_calls_back_after_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "pbx.db"
    async with await Store.open(path) as store:
        called = asyncio.Event()

        async def reload() -> None:
            called.set()

        store.watch_changes(reload, interval=0.02)
        await asyncio.sleep(0.05)
        assert not called.is_set()
        async with await Store.open(path) as cli:
            await cli.add_user(make_user("alice", "secret-1", REALM))
        await asyncio.wait_for(called.wait(), timeout=2.0)


async def test_close_twice_is_harmless(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "pbx.db")
    await store.close()
    await store.close()


async def test_a_path_under_a_file_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create"):
        await Store.open(blocker / "pbx.db")
