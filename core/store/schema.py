"""The database schema: one tuple of constant statements per version.

The schema version lives in `PRAGMA user_version`; `MIGRATIONS[n]` upgrades version n to n+1,
so opening an older file upgrades it in place, one transaction per step
(`core.store.connection.Connection` runs them).
"""

from __future__ import annotations

# Each migration is a tuple of constant statements ending with its own version stamp.
# Never edit a released migration: append a new one.

_MIGRATION_1 = (
    """
    CREATE TABLE users (
        username             TEXT PRIMARY KEY NOT NULL,
        realm                TEXT NOT NULL,
        ha1_md5              TEXT NOT NULL,
        ha1_sha256           TEXT NOT NULL,
        display_name         TEXT NOT NULL DEFAULT '',
        enabled              INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        outbound_policy      TEXT NOT NULL DEFAULT 'none'
                             CHECK (outbound_policy IN ('none', 'local', 'national',
                                                        'international')),
        allow_prefixes       TEXT NOT NULL DEFAULT '[]',
        deny_prefixes        TEXT NOT NULL DEFAULT '[]',
        max_concurrent_calls INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent_calls >= 0),
        max_calls_per_hour   INTEGER NOT NULL DEFAULT 0 CHECK (max_calls_per_hour >= 0),
        caller_id            TEXT NOT NULL DEFAULT '',
        created_at           REAL NOT NULL
    )
    """,
    """
    CREATE TABLE carriers (
        name      TEXT PRIMARY KEY NOT NULL,
        addresses TEXT NOT NULL DEFAULT '[]',
        port      INTEGER NOT NULL DEFAULT 5060 CHECK (port BETWEEN 1 AND 65535),
        transport TEXT NOT NULL DEFAULT 'udp' CHECK (transport IN ('udp', 'tcp', 'tls')),
        gateway   TEXT,
        username  TEXT,
        password  TEXT,
        priority  INTEGER NOT NULL DEFAULT 10,
        enabled   INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
    )
    """,
    """
    CREATE TABLE dids (
        number   TEXT PRIMARY KEY NOT NULL,
        username TEXT NOT NULL REFERENCES users (username)
                 ON DELETE CASCADE ON UPDATE CASCADE
    )
    """,
    "CREATE INDEX dids_by_username ON dids (username)",
    """
    CREATE TABLE location (
        id            INTEGER PRIMARY KEY,
        aor           TEXT NOT NULL,
        contact       TEXT NOT NULL,
        received      TEXT NOT NULL DEFAULT '',
        received_port INTEGER NOT NULL DEFAULT 0,
        transport     TEXT NOT NULL DEFAULT 'udp',
        socket        TEXT NOT NULL DEFAULT '',
        expires_at    REAL NOT NULL,
        user_agent    TEXT NOT NULL DEFAULT '',
        call_id       TEXT NOT NULL DEFAULT '',
        cseq          INTEGER NOT NULL DEFAULT 0,
        q             REAL,
        nat           INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
        instance      TEXT NOT NULL DEFAULT '',
        reg_id        INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL,
        UNIQUE (aor, contact)
    )
    """,
    "CREATE INDEX location_by_expiry ON location (expires_at)",
    """
    CREATE TABLE bans (
        ip         TEXT PRIMARY KEY NOT NULL,
        until      REAL,
        reason     TEXT NOT NULL DEFAULT '',
        count      INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    )
    """,
    """
    CREATE TABLE cdrs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id     TEXT NOT NULL,
        caller      TEXT NOT NULL DEFAULT '',
        callee      TEXT NOT NULL DEFAULT '',
        source_ip   TEXT NOT NULL DEFAULT '',
        direction   TEXT NOT NULL DEFAULT '',
        started_at  REAL NOT NULL,
        answered_at REAL,
        ended_at    REAL,
        status      INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        duration    REAL NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX cdrs_by_start ON cdrs (started_at)",
    """
    CREATE TABLE admin (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        bcrypt_hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    )
    """,
    "PRAGMA user_version = 1",
)

# Version 2: the location table learns each binding's Path (RFC 3327 §5.3: without it a
# contact registered through an edge proxy would be reached directly after a restart) and its
# last refresh time, and a row is one (aor, contact, instance, reg-id): RFC 5626 §4.2 lets one
# phone register the same Contact URI over two flows (reg-ids), which must not overwrite each
# other. SQLite cannot change a UNIQUE constraint in place, so the table is rebuilt (the
# "make other kinds of table schema changes" procedure of https://sqlite.org/lang_altertable.html;
# no other table or trigger refers to location). Migrated rows take their registration time as
# the refresh time, as the loader did while the column was missing.
_MIGRATION_2 = (
    """
    CREATE TABLE location_new (
        id            INTEGER PRIMARY KEY,
        aor           TEXT NOT NULL,
        contact       TEXT NOT NULL,
        received      TEXT NOT NULL DEFAULT '',
        received_port INTEGER NOT NULL DEFAULT 0,
        transport     TEXT NOT NULL DEFAULT 'udp',
        socket        TEXT NOT NULL DEFAULT '',
        expires_at    REAL NOT NULL,
        user_agent    TEXT NOT NULL DEFAULT '',
        call_id       TEXT NOT NULL DEFAULT '',
        cseq          INTEGER NOT NULL DEFAULT 0,
        q             REAL,
        nat           INTEGER NOT NULL DEFAULT 0 CHECK (nat IN (0, 1)),
        instance      TEXT NOT NULL DEFAULT '',
        reg_id        INTEGER NOT NULL DEFAULT 0,
        registered_at REAL NOT NULL,
        path          TEXT NOT NULL DEFAULT '[]',
        refreshed_at  REAL NOT NULL DEFAULT 0,
        UNIQUE (aor, contact, instance, reg_id)
    )
    """,
    """
    INSERT INTO location_new (id, aor, contact, received, received_port, transport, socket,
                              expires_at, user_agent, call_id, cseq, q, nat, instance, reg_id,
                              registered_at, path, refreshed_at)
    SELECT id, aor, contact, received, received_port, transport, socket, expires_at,
           user_agent, call_id, cseq, q, nat, instance, reg_id, registered_at, '[]',
           registered_at
    FROM location
    """,
    "DROP TABLE location",
    "ALTER TABLE location_new RENAME TO location",
    "CREATE INDEX location_by_expiry ON location (expires_at)",
    "PRAGMA user_version = 2",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_MIGRATION_1, _MIGRATION_2)
SCHEMA_VERSION = len(MIGRATIONS)
