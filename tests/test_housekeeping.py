"""Ingest's cluster-wide chores on a real database: rejects stay within their
bounds (age, count per site) and only one process prunes at a time."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from firesafe.contract import GATEWAY_SITE
from firesafe.settings import Settings
from ingest.housekeeping import PRUNE_LOCK, prune_rejects
from ingest.stats import now_ms
from storage import ingest_store as store
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


def _register_sites(db: str, *sites: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        for site in sites:
            conn.execute("INSERT INTO sites (id) VALUES (%s) ON CONFLICT DO NOTHING", (site,))


def test_rejects_older_than_the_retention_and_past_the_site_cap_are_pruned(db: str) -> None:
    _register_sites(db, "OLD", "BUSY", "CALM")
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


def test_made_up_sites_share_one_cap(db: str) -> None:
    """A publisher names the site in its topic: every name nobody registered (and
    no name at all) shares one cap, so made-up names cannot grow the table, and a
    registered site's own rejects are not pushed out by them."""
    _register_sites(db, "REAL")
    _add_rejects(db, "REAL", 30, age_days=1)
    for i in range(150):
        _add_rejects(db, f"X{i}", 1, age_days=1)
    _add_rejects(db, GATEWAY_SITE, 20, age_days=1)  # the gateways' own: their own share
    settings = Settings(database_url=db, reject_retention_days=30, rejects_per_site=100)
    prune_rejects(settings, "test")
    left = _left(db)
    assert left.pop("REAL") == 30
    assert left.pop(GATEWAY_SITE) == 20
    assert sum(left.values()) == 100
    assert set(left) == {f"X{i}" for i in range(50, 150)}  # the newest stay


def test_a_rejects_topic_is_kept_up_to_its_head(db: str) -> None:
    topic = "fs/v1/S/" + "D" * 60_000 + "/telemetry"
    row = store.RejectRow(now_ms(), topic, "bad_topic", b"{}", "too long", None)

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(db, autocommit=True) as conn:
            await store.write_rejects(conn, [row])

    asyncio.run(write())
    (kept,) = query(db, "SELECT topic FROM rejects WHERE reason = 'bad_topic'")
    assert kept[0] == topic[: store.REJECT_TOPIC_KEEP]
