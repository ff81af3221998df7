"""Ingest's cluster-wide chores on a real database: rejects stay within their
bounds (age, count per site) and only one process prunes at a time."""

from __future__ import annotations

import psycopg
import pytest

from firesafe.settings import Settings
from ingest.housekeeping import PRUNE_LOCK, prune_rejects
from tests.helpers import query

pytestmark = pytest.mark.integration


def _add_rejects(db: str, site: str, count: int, age_days: float) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rejects (received_at, topic, reason, payload) "
            "SELECT now() - make_interval(secs => %s * 86400 - i), "
            "'fs/v1/' || %s || '/D' || i || '/telemetry', 'invalid_json', 'x'::bytea "
            "FROM generate_series(1, %s) i",
            (age_days, site, count),
        )


def _left(db: str) -> dict[str | None, int]:
    rows = query(db, "SELECT site_id, count(*) FROM rejects GROUP BY site_id")
    return {site: int(n) for site, n in rows}


def test_rejects_older_than_the_retention_and_past_the_site_cap_are_pruned(db: str) -> None:
    _add_rejects(db, "OLD", 3, age_days=40)  # past 30 days: all go
    _add_rejects(db, "BUSY", 120, age_days=1)  # the 100 newest stay
    _add_rejects(db, "CALM", 40, age_days=1)  # under the cap: untouched
    settings = Settings(database_url=db, reject_retention_days=30, rejects_per_site=100)
    prune_rejects(settings, "test")
    assert _left(db) == {"BUSY": 100, "CALM": 40}
    newest = query(db, "SELECT topic FROM rejects WHERE site_id = 'BUSY' ORDER BY id")
    assert [t for (t,) in newest] == [f"fs/v1/BUSY/D{i}/telemetry" for i in range(21, 121)]


def test_only_one_process_prunes_at_a_time(db: str) -> None:
    _add_rejects(db, "OLD", 3, age_days=40)
    settings = Settings(database_url=db, reject_retention_days=30, rejects_per_site=100)
    with psycopg.connect(db) as other:  # another ingest process at it
        other.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        prune_rejects(settings, "test")
        assert _left(db) == {"OLD": 3}
    prune_rejects(settings, "test")
    assert _left(db) == {}
