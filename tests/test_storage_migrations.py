"""Migrations run twice, concurrently, and after a partial failure, on whichever
flavour the test server gives (CI runs the suite on plain PostgreSQL and, when
FIRESAFE_CI_TIMESCALE_URL names one, on TimescaleDB)."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from storage.errors import MigrationError
from storage.migrate import MigrationReport, load_migrations, migrate
from tests.helpers import query


def test_the_flavour_ci_asked_for(flavour: str) -> None:
    """CI names the flavour each run must exercise: a TimescaleDB run that fell
    back to plain PostgreSQL (extension not preloaded) must not pass as one."""
    expected = os.environ.get("FIRESAFE_TEST_EXPECT_FLAVOUR")
    if not expected:
        pytest.skip("FIRESAFE_TEST_EXPECT_FLAVOUR unset: any flavour will do")
    assert flavour == expected


@pytest.fixture
def fresh_db(pg_server_url: str, drop_later: Callable[[str], None]) -> str:
    """An empty database of this test only (dropped at the session's end)."""
    name = f"firesafe_mig_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    drop_later(name)
    return pg_conninfo.make_conninfo(pg_server_url, dbname=name)


def versions(dsn: str) -> list[int]:
    return [r[0] for r in query(dsn, "SELECT version FROM schema_migrations ORDER BY version")]


def test_migrate_twice_applies_nothing_the_second_time(fresh_db: str) -> None:
    first = migrate(fresh_db)
    every = [m.version for m in load_migrations(first.flavour)]
    assert first.applied == every
    schema = query(
        fresh_db,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2",
    )
    second = migrate(fresh_db)
    assert second.applied == []
    assert second.flavour == first.flavour
    assert versions(fresh_db) == every
    assert (
        query(
            fresh_db,
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY 1, 2",
        )
        == schema
    )


def test_concurrent_migrations_apply_each_version_once(fresh_db: str) -> None:
    """Four processes starting together (compose's migrate, ingest, api, a
    person): one applies everything, the others wait for its lock and find
    nothing left to do."""
    start = threading.Barrier(4)
    reports: list[MigrationReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            reports.append(migrate(fresh_db))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(reports) == 4
    every = [m.version for m in load_migrations(reports[0].flavour)]
    applied = sorted(v for r in reports for v in r.applied)
    assert applied == every  # each version applied exactly once, by someone
    assert sorted(len(r.applied) for r in reports)[:3] == [0, 0, 0]
    assert versions(fresh_db) == every
    assert {r.flavour for r in reports} == {reports[0].flavour}


def test_migration_after_a_partial_failure(fresh_db: str) -> None:
    """A migration that fails half-way (an object in its way) leaves the earlier
    ones applied and nothing of itself; once the obstacle is gone the next run
    applies exactly what is left."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        # 0030_dashboards creates the view kind_readings: a table of that name
        # makes it fail after its first statements ran.
        conn.execute("CREATE TABLE kind_readings (x int)")
    with pytest.raises(MigrationError, match="0030"):
        migrate(fresh_db)
    done = versions(fresh_db)
    assert done
    assert max(done) < 30
    # Nothing of 0030 survived its failure (it creates threshold_defaults too).
    assert query(fresh_db, "SELECT to_regclass('threshold_defaults')")[0][0] is None
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP TABLE kind_readings")
    report = migrate(fresh_db)
    every = [m.version for m in load_migrations(report.flavour)]
    assert report.applied == [v for v in every if v not in done]
    assert versions(fresh_db) == every
    assert query(fresh_db, "SELECT count(*) FROM threshold_defaults")[0][0] > 0
