"""Versioned, idempotent schema migrations with TimescaleDB detection.

Migrations are the SQL files in `storage/migrations`, named
`NNNN_name.sql` (both flavours) or `NNNN_name.{plain,timescale}.sql` (one
flavour). The flavour is chosen once, when the first migration runs, and
recorded: TimescaleDB when the extension is installed or can be created,
plain PostgreSQL otherwise. A file whose header says
`-- firesafe: no-transaction` runs statement by statement outside a
transaction (TimescaleDB refuses to create continuous aggregates inside
one); every other file runs in one transaction with its version record.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Literal

import psycopg

from storage import partitions
from storage.errors import MigrationError

Flavour = Literal["plain", "timescale"]

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every migrating process.
MIGRATION_LOCK_KEY = 0x46495245  # "FIRE"
NO_TRANSACTION_MARK = "-- firesafe: no-transaction"
# The broker keeps ingest's persistent session, and every message published
# for it, this long while ingest is away: ingest/mqtt.py SESSION_EXPIRY_S (a
# test checks they agree). Readings that late still arrive and must still
# reach the 1-minute rollup, so its refresh window reaches back further.
BROKER_SESSION_EXPIRY = timedelta(days=7)
# ...plus a day for a backlog drained slowly and device clocks running late.
ROLLUP_REFRESH_START_OFFSET = BROKER_SESSION_EXPIRY + timedelta(days=1)
# The newest minute is still filling (real-time aggregation covers it).
ROLLUP_REFRESH_END_OFFSET = timedelta(minutes=1)
ROLLUP_REFRESH_EVERY = timedelta(minutes=1)
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def transactional(self) -> bool:
        return NO_TRANSACTION_MARK not in self.sql

    def statements(self) -> list[str]:
        """Split a no-transaction file into statements (no dollar quoting there)."""
        parts = re.split(r";\s*$", self.sql, flags=re.MULTILINE)
        return [p.strip() for p in parts if _strip_comments(p).strip()]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    flavour: Flavour
    applied: list[int]
    current: int


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def load_migrations(flavour: Flavour) -> list[Migration]:
    """Every migration of one flavour, ordered by version."""
    found: dict[int, Migration] = {}
    for entry in resources.files("storage.migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if not match:
            continue
        version, name, only = int(match[1]), match[2], match[3]
        if only is not None and only != flavour:
            continue
        if version in found:
            raise MigrationError(f"two migrations with version {version:04d}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def timescaledb_available(conn: psycopg.Connection[Any]) -> bool:
    """The extension's files are installed on the server (it may still not be loadable)."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return row.fetchone() is not None


def detect_flavour(conn: psycopg.Connection[Any], conninfo: str) -> Flavour:
    """TimescaleDB when installed or installable here, plain PostgreSQL otherwise."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return "timescale"
    if not timescaledb_available(conn):
        return "plain"
    try:
        # On a connection of its own: when the library is not preloaded, the
        # failure is FATAL and ends the session that tried, which must not be
        # the one holding the migration lock.
        with psycopg.connect(conninfo, autocommit=True) as probe:
            probe.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        # Typically: the library is not in shared_preload_libraries.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "timescaledb is available but cannot be created (%s); using plain PostgreSQL. "
            "The flavour is chosen once: this database stays plain. To use TimescaleDB, add "
            "it to shared_preload_libraries, restart the server and migrate a new, empty "
            "database",
            reason,
        )
        return "plain"
    return "timescale"


def timescaledb_loadable(conn: psycopg.Connection[Any]) -> bool:
    """Installed and preloaded: `CREATE EXTENSION timescaledb` would work here."""
    row = conn.execute(
        "SELECT 'timescaledb' = ANY(string_to_array(replace("
        "current_setting('shared_preload_libraries'), ' ', ''), ','))"
    ).fetchone()
    return bool(row and row[0]) and timescaledb_available(conn)


def recorded_flavour(conn: psycopg.Connection[Any]) -> Flavour | None:
    row = conn.execute("SELECT value FROM firesafe_meta WHERE key = 'flavour'").fetchone()
    if row is None:
        return None
    value = row[0]
    if value not in ("plain", "timescale"):
        raise MigrationError(f"unknown schema flavour {value!r} recorded in firesafe_meta")
    return value  # type: ignore[no-any-return]


# Shards of the estate (ingest/shards.py): fixed when the database is set up,
# because a site's shard, and so its broker session, must never move.
DEFAULT_SHARDS = 64


def migrate(
    conninfo: str,
    *,
    retention_days: int = 365,
    now: datetime | None = None,
    shards: int | None = None,
) -> MigrationReport:
    """Bring the schema up to date; safe to run any number of times, concurrently.
    `shards`: the number asked for (None: keep the recorded one, or the default)."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
            try:
                _record_shards(conn, shards)
                return _migrate_locked(conn, conninfo, retention_days, now or datetime.now(UTC))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc


def _record_shards(conn: psycopg.Connection[Any], wanted: int | None) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS firesafe_meta (key text PRIMARY KEY, value text NOT NULL)"
    )
    row = conn.execute("SELECT value FROM firesafe_meta WHERE key = 'shards'").fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO firesafe_meta (key, value) VALUES ('shards', %s)",
            (str(wanted or DEFAULT_SHARDS),),
        )
    elif wanted is not None and int(row[0]) != wanted:
        raise MigrationError(
            f"FIRESAFE_SHARDS={wanted}, but this database was set up with {row[0]} shards; "
            "the number of shards cannot change (unset FIRESAFE_SHARDS or set it to "
            f"{row[0]})"
        )


def _migrate_locked(
    conn: psycopg.Connection[Any], conninfo: str, retention_days: int, now: datetime
) -> MigrationReport:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS firesafe_meta (key text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );
        """
    )
    flavour = recorded_flavour(conn)
    if flavour is None:
        flavour = detect_flavour(conn, conninfo)
        conn.execute(
            "INSERT INTO firesafe_meta (key, value) VALUES ('flavour', %s) ON CONFLICT DO NOTHING",
            (flavour,),
        )
    elif flavour == "plain" and timescaledb_loadable(conn):
        log.warning(
            "TimescaleDB is now available on this server, but this database was set up on "
            "plain PostgreSQL at its first migration and stays so; to use TimescaleDB, "
            "migrate a new, empty database and move the data (README, Storage flavours)"
        )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied: list[int] = []
    migrations = load_migrations(flavour)
    for migration in migrations:
        if migration.version in done:
            continue
        log.info("applying migration %04d_%s (%s)", migration.version, migration.name, flavour)
        _apply(conn, migration)
        applied.append(migration.version)
    apply_policies(conn, flavour, retention_days=retention_days, now=now)
    current = max((m.version for m in migrations), default=0)
    return MigrationReport(flavour=flavour, applied=applied, current=current)


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"
    try:
        if migration.transactional:
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(record, (migration.version, migration.name))
        else:
            for statement in migration.statements():
                conn.execute(statement.encode())
            conn.execute(record, (migration.version, migration.name))
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.version:04d}_{migration.name} failed: {exc}"
        ) from exc


def apply_policies(
    conn: psycopg.Connection[Any], flavour: Flavour, *, retention_days: int, now: datetime
) -> None:
    """Retention and rollup refresh (on plain PostgreSQL, partitions ahead of time).

    On TimescaleDB a policy is created once and changed only when its settings
    differ: dropping and re-adding it on every start would reset its schedule
    (a new job first runs one interval after its creation, so a deployment
    restarted daily would never drop anything)."""
    if flavour == "timescale":
        _ensure_retention(conn, timedelta(days=retention_days))
        _ensure_rollup_refresh(conn)
    else:
        partitions.ensure(conn, now=now, retention_days=retention_days)


def _ensure_retention(conn: psycopg.Connection[Any], drop_after: timedelta) -> None:
    jobs = conn.execute(
        """
        SELECT job_id, (config->>'drop_after')::interval = %s AS same
        FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_retention' AND hypertable_name = 'telemetry'
        """,
        (drop_after,),
    ).fetchall()
    if not jobs:
        conn.execute("SELECT add_retention_policy('telemetry', drop_after => %s)", (drop_after,))
        log.info("retention policy on telemetry: drop after %s", drop_after)
        return
    for job_id, same in jobs:
        if not same:
            # alter_job keeps the job (its id, schedule and statistics).
            conn.execute(
                """
                SELECT alter_job(%s, config => config || jsonb_build_object('drop_after', %s::text))
                FROM timescaledb_information.jobs WHERE job_id = %s
                """,
                (job_id, _interval_text(drop_after), job_id),
            )
            log.info("retention policy on telemetry changed: drop after %s", drop_after)


def _ensure_rollup_refresh(conn: psycopg.Connection[Any]) -> None:
    wanted = (ROLLUP_REFRESH_START_OFFSET, ROLLUP_REFRESH_END_OFFSET, ROLLUP_REFRESH_EVERY)
    jobs = conn.execute(
        """
        SELECT job_id, (config->>'start_offset')::interval, (config->>'end_offset')::interval,
               schedule_interval
        FROM timescaledb_information.jobs
        WHERE proc_name = 'policy_refresh_continuous_aggregate'
          AND hypertable_name = 'telemetry_1m'
        """
    ).fetchall()
    if len(jobs) == 1 and tuple(jobs[0][1:]) == wanted:
        return
    if jobs:
        conn.execute("SELECT remove_continuous_aggregate_policy('telemetry_1m', if_exists => true)")
    conn.execute(
        """
        SELECT add_continuous_aggregate_policy('telemetry_1m',
            start_offset => %s, end_offset => %s, schedule_interval => %s)
        """,
        wanted,
    )
    log.info(
        "refresh policy on telemetry_1m: %s to %s back, every %s",
        ROLLUP_REFRESH_START_OFFSET,
        ROLLUP_REFRESH_END_OFFSET,
        ROLLUP_REFRESH_EVERY,
    )


def _interval_text(value: timedelta) -> str:
    return f"{value.days} days {value.seconds} seconds"


def current_flavour(conninfo: str) -> Flavour:
    """The flavour a migrated database was set up with."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            flavour = recorded_flavour(conn)
    except psycopg.errors.UndefinedTable:
        flavour = None
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read the schema version: {exc}") from exc
    if flavour is None:
        raise MigrationError("database is not migrated: run `firesafe db migrate`")
    return flavour
