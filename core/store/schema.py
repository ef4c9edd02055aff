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

# Version 3: accounting. CDRs learn how a call ended, its route and its price (integer
# micro-units, core/accounting/rates.py); rows from before get the disposition their status
# implies. Carriers get rate tables (a prefix per row, longest match wins) and users optional
# spend limits. The indexes serve `cdr list/stats --user/--carrier` over a period.
_MIGRATION_3 = (
    "ALTER TABLE cdrs ADD COLUMN disposition TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN hangup_side TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN carrier TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN gateway TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN dialled TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN number TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN contact TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN rate_prefix TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN rate_per_minute INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE cdrs ADD COLUMN rate_increments TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE cdrs ADD COLUMN billable_seconds INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE cdrs ADD COLUMN cost INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE cdrs ADD COLUMN currency TEXT NOT NULL DEFAULT ''",
    """
    UPDATE cdrs SET disposition = CASE
        WHEN answered_at IS NOT NULL THEN 'answered'
        WHEN status IN (486, 600) THEN 'busy'
        WHEN status = 408 THEN 'no answer'
        WHEN status = 487 THEN 'cancelled'
        ELSE 'failed' END
    """,
    "CREATE INDEX cdrs_by_caller ON cdrs (caller, started_at)",
    "CREATE INDEX cdrs_by_carrier ON cdrs (carrier, started_at)",
    """
    CREATE TABLE rates (
        carrier         TEXT NOT NULL REFERENCES carriers (name)
                        ON DELETE CASCADE ON UPDATE CASCADE,
        prefix          TEXT NOT NULL,
        per_minute      INTEGER NOT NULL CHECK (per_minute >= 0),
        first_increment INTEGER NOT NULL CHECK (first_increment > 0),
        increment       INTEGER NOT NULL CHECK (increment > 0),
        connection      INTEGER NOT NULL DEFAULT 0 CHECK (connection >= 0),
        currency        TEXT NOT NULL,
        PRIMARY KEY (carrier, prefix)
    )
    """,
    """
    CREATE TABLE spend_limits (
        username  TEXT PRIMARY KEY NOT NULL REFERENCES users (username)
                  ON DELETE CASCADE ON UPDATE CASCADE,
        per_day   INTEGER NOT NULL DEFAULT 0 CHECK (per_day >= 0),
        per_month INTEGER NOT NULL DEFAULT 0 CHECK (per_month >= 0)
    )
    """,
    "PRAGMA user_version = 3",
)

# Version 4: a user may be "TLS only" (issue 19): REGISTER and calls over UDP or TCP are refused
# for that user after digest auth (core/route.py). Existing users keep what they had: 0, any
# transport; the global `[tls] tls_only` still covers everyone.
_MIGRATION_4 = (
    "ALTER TABLE users ADD COLUMN tls_only INTEGER NOT NULL DEFAULT 0 CHECK (tls_only IN (0, 1))",
    "PRAGMA user_version = 4",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _MIGRATION_1,
    _MIGRATION_2,
    _MIGRATION_3,
    _MIGRATION_4,
)
SCHEMA_VERSION = len(MIGRATIONS)
