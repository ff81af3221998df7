"""The 1-minute rollup: `telemetry_1m` against a GROUP BY over the stored rows
(both flavours), and on plain PostgreSQL the refresher that materialises it
apart from ingest's transactions (storage.rollup)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from firesafe.contract import READINGS
from firesafe.settings import Settings
from storage import ingest_store as store
from storage import rollup
from storage.telemetry_copy import DeviceIdTable
from tests.helpers import (
    Publisher,
    drain,
    forget_session,
    query,
    refresh_rollup,
    register,
    running_ingest,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_telemetry_1m_agrees_with_the_raw_rows(db: str, mqtt_url: str, flavour: str) -> None:
    site = f"R{uuid.uuid4().hex[:8]}"
    register(
        db,
        [
            {
                "id": f"{site}-{k}",
                "site": site,
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "multi",
            }
            for k in range(3)
        ],
    )
    client_id = f"test-rollup-{uuid.uuid4().hex[:8]}"
    settings_ = Settings(
        mqtt_url=mqtt_url, database_url=db, mqtt_client_id=client_id, ingest_mode="single"
    )
    t0 = (int(time.time() * 1000) // 60_000 - 5) * 60_000
    rng = np.random.default_rng(7)
    pub = Publisher(mqtt_url)
    sent = 0
    try:
        with running_ingest(settings_):
            for k in range(3):
                for i in range(40):  # 40 readings over ~3 minutes, some readings absent
                    v = {
                        "temperature": round(float(rng.normal(21, 2)), 3),
                        "co": round(float(rng.uniform(0, 5)), 3),
                    }
                    if i % 3 == 0:
                        v["humidity"] = round(float(rng.uniform(30, 60)), 3)
                    pub.send(
                        f"fs/v1/{site}/{site}-{k}/telemetry",
                        {"ts": t0 + i * 4_500, "seq": i, "v": v},
                    )
                    sent += 1
            # the same readings again: duplicates must not count twice in the rollup
            pub.send(
                f"fs/v1/{site}/{site}-0/telemetry", {"ts": t0, "seq": 0, "v": {"temperature": 99.0}}
            )
            wait_for(
                lambda: (
                    query(
                        db, "SELECT count(*) FROM telemetry WHERE device_id LIKE %s", (f"{site}-%",)
                    )[0][0]
                    == sent
                )
            )
            drain(db, pub, site)  # the duplicate was committed (and not counted)
    finally:
        pub.close()
        forget_session(mqtt_url, client_id)
    if flavour == "timescale":
        # Readings older than the aggregate's watermark (moved by any earlier refresh,
        # the policy's included; TRUNCATE does not move it back) are rolled up by the
        # next refresh of their window, as the refresh policy does every minute.
        with psycopg.connect(db, autocommit=True) as conn:
            since = datetime.fromtimestamp(t0 / 1000, UTC) - timedelta(minutes=1)
            refresh_rollup(
                conn,
                sql.SQL("CALL refresh_continuous_aggregate('telemetry_1m', {}, NULL)").format(
                    sql.Literal(since)
                ),
            )
    cols = ", ".join(
        f"min({r}), max({r}), round(avg({r})::numeric, 6), count({r})"
        for r in ("temperature", "co", "humidity")
    )
    raw = query(
        db,
        f"""SELECT device_id, to_timestamp(floor(extract(epoch FROM ts) / 60) * 60),
                        count(*), {cols} FROM telemetry WHERE device_id LIKE %s
                        GROUP BY 1, 2 ORDER BY 1, 2""",
        (f"{site}-%",),
    )
    agg_cols = ", ".join(
        f"{r}_min, {r}_max, round({r}_avg::numeric, 6), {r}_n"
        for r in ("temperature", "co", "humidity")
    )
    rolled = f"""SELECT device_id, bucket, samples, {agg_cols} FROM telemetry_1m
                 WHERE device_id LIKE %s ORDER BY 1, 2"""
    assert len(raw) >= 9
    assert query(db, rolled, (f"{site}-%",)) == raw, flavour
    if flavour == "plain":
        # What the view read live from telemetry is now materialised, alike.
        refresh_now(db)
        assert query(db, "SELECT count(*) FROM rollup_pending") == [(0,)]
        assert query(db, "SELECT count(*) FROM telemetry_rollup_1m") == [(len(raw),)]
        assert query(db, rolled, (f"{site}-%",)) == raw


# The refresher itself (plain PostgreSQL), fed by ingest's own write path.

T = 1_700_000_040_000  # a minute boundary, epoch ms
TEMP = READINGS.index("temperature")


def _device(db: str) -> tuple[str, DeviceIdTable, int]:
    device = f"RF-{uuid.uuid4().hex[:8]}"
    register(
        db,
        [{"id": device, "site": "RF", "building": "B", "floor": "1", "zone": "Z", "kind": "heat"}],
    )
    slot = int(query(db, "SELECT slot FROM devices WHERE id = %s", (device,))[0][0])
    by_slot: list[str | None] = [None] * (slot + 1)
    by_slot[slot] = device
    return device, DeviceIdTable.build(by_slot), slot


async def _store(
    conn: psycopg.AsyncConnection[Any], ids: DeviceIdTable, slot: int, readings: dict[int, float]
) -> None:
    """Readings {ts_ms: temperature} through ingest's write (notes included), in
    the caller's transaction; seq is the offset in seconds."""
    ts = np.array(sorted(readings), np.int64)
    values = np.full((ts.size, len(READINGS)), np.nan)
    values[:, TEMP] = [readings[t] for t in ts.tolist()]
    await store.write_telemetry(
        conn,
        "plain",
        slot=np.full(ts.size, slot, np.int64),
        ts=ts,
        seq=(ts - T) // 1000,
        received=ts,
        maybe_dup=np.ones(ts.size, np.bool_),
        values=values,
        extra={},
        ids=ids,
    )


def _write(db: str, ids: DeviceIdTable, slot: int, readings: dict[int, float]) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await store.prepare_connection(conn)
            async with conn.transaction():
                await _store(conn, ids, slot, readings)

    asyncio.run(run())


def refresh_now(db: str, **kw: Any) -> int:
    """One refresh of the plain rollup, every noted minute ready (`settle` 0)
    unless told otherwise."""
    kw.setdefault("settle", timedelta(0))
    return asyncio.run(rollup.refresh_database(db, **kw))


_MINUTES = """SELECT bucket, samples, temperature_min, temperature_max, temperature_sum,
                     temperature_n FROM {} WHERE device_id = %s ORDER BY bucket"""


def _minutes(db: str, device: str, table: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in query(db, _MINUTES.format(table), (device,))]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.fixture
def plain(flavour: str) -> None:
    if flavour != "plain":
        pytest.skip("TimescaleDB refreshes its continuous aggregate itself")


@pytest.mark.usefixtures("plain")
def test_a_late_reading_recomputes_its_minute_whole(db: str) -> None:
    device, ids, slot = _device(db)
    _write(db, ids, slot, {T + 1_000: 20.0, T + 30_000: 22.0, T + 61_000: 25.0})
    assert refresh_now(db) == 2
    materialised = [(_at(T), 2, 20.0, 22.0, 42.0, 2), (_at(T + 60_000), 1, 25.0, 25.0, 25.0, 1)]
    assert _minutes(db, device, "telemetry_rollup_1m") == materialised
    # A reading of the first minute arrives late: the view counts it at once...
    _write(db, ids, slot, {T + 45_000: 18.0})
    live = [(_at(T), 3, 18.0, 22.0, 60.0, 3), materialised[1]]
    assert _minutes(db, device, "telemetry_rollup_1m") == materialised
    view = """SELECT bucket, samples, temperature_min, temperature_max,
                     temperature_avg * temperature_n, temperature_n
              FROM telemetry_1m WHERE device_id = %s ORDER BY bucket"""
    assert [tuple(r) for r in query(db, view, (device,))] == live
    # ...and the refresh recomputes that minute from the rows, counting none twice.
    assert refresh_now(db) == 1
    assert _minutes(db, device, "telemetry_rollup_1m") == live
    assert refresh_now(db) == 0


@pytest.mark.usefixtures("plain")
def test_a_batch_committing_during_a_refresh_keeps_its_note(db: str) -> None:
    """The refresh's snapshot holds the notes it deletes and the rows it reads:
    a batch not yet committed when it began is left for the next round."""
    device, ids, slot = _device(db)
    _write(db, ids, slot, {T + 1_000: 20.0})

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(db) as conn:
            await store.prepare_connection(conn)
            async with conn.transaction():
                await _store(conn, ids, slot, {T + 2_000: 30.0})
                assert await asyncio.to_thread(refresh_now, db) == 1
        # committed now: its note is still there
        assert query(db, "SELECT bucket FROM rollup_pending") == [(_at(T),)]

    asyncio.run(run())
    assert _minutes(db, device, "telemetry_rollup_1m") == [(_at(T), 1, 20.0, 20.0, 20.0, 1)]
    assert refresh_now(db) == 1
    assert _minutes(db, device, "telemetry_rollup_1m") == [(_at(T), 2, 20.0, 30.0, 50.0, 2)]


@pytest.mark.usefixtures("plain")
def test_a_minute_still_being_written_waits_until_it_settles_or_waited_too_long(
    db: str,
) -> None:
    device, ids, slot = _device(db)
    _write(db, ids, slot, {T + 1_000: 20.0, T + 61_000: 21.0})
    # Noted just now: both minutes are still settling.
    assert refresh_now(db, settle=rollup.SETTLE) == 0
    # The first minute was first noted long ago and has been written ever since.
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rollup_pending VALUES (%s, now() - interval '2 minutes')", (_at(T),)
        )
    assert refresh_now(db, settle=rollup.SETTLE) == 1
    assert [r[0] for r in _minutes(db, device, "telemetry_rollup_1m")] == [_at(T)]
    assert query(db, "SELECT bucket FROM rollup_pending") == [(_at(T + 60_000),)]


@pytest.mark.usefixtures("plain")
def test_one_refresher_at_a_time(db: str) -> None:
    _, ids, slot = _device(db)
    _write(db, ids, slot, {T + 1_000: 20.0})
    with psycopg.connect(db, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (rollup.REFRESH_LOCK,))
        assert refresh_now(db) == 0
    assert refresh_now(db) == 1


@pytest.mark.usefixtures("plain")
def test_a_long_backlog_is_refreshed_in_bounded_rounds(db: str) -> None:
    device, ids, slot = _device(db)
    minutes = rollup.MINUTES_PER_ROUND + 5
    _write(db, ids, slot, {T + m * 60_000: float(m) for m in range(minutes)})
    assert refresh_now(db) == minutes
    rows = _minutes(db, device, "telemetry_rollup_1m")
    assert [(r[0], r[2]) for r in rows] == [(_at(T + m * 60_000), float(m)) for m in range(minutes)]


@pytest.mark.usefixtures("plain")
def test_a_refresh_keeps_the_minutes_of_readings_retention_dropped(db: str) -> None:
    """Another device's row of the minute, whose raw readings are gone (retention
    drops raw partitions; the rollup is kept), survives a late reading's refresh."""
    device, ids, slot = _device(db)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO telemetry_rollup_1m (bucket, device_id, samples, temperature_min, "
            "temperature_max, temperature_sum, temperature_n) VALUES (%s, 'GONE', 6, 1, 9, 30, 6)",
            (_at(T),),
        )
    _write(db, ids, slot, {T + 1_000: 20.0})
    assert refresh_now(db) == 1
    assert _minutes(db, "GONE", "telemetry_rollup_1m") == [(_at(T), 6, 1.0, 9.0, 30.0, 6)]
    assert _minutes(db, device, "telemetry_rollup_1m") == [(_at(T), 1, 20.0, 20.0, 20.0, 1)]


@pytest.mark.usefixtures("plain")
def test_a_minute_the_database_cannot_sum_holds_back_no_other(db: str) -> None:
    """Readings stored before ingest refused magnitudes over 1e12 (or written by
    hand) can overflow a float sum: that minute is refused, named and kept
    noted; every other minute is still refreshed."""
    device, ids, slot = _device(db)
    _write(db, ids, slot, {T + 1_000: 1e308, T + 2_000: 1e308, T + 61_000: 21.0})
    with pytest.raises(rollup.RefreshFailed, match=r"1 minute.*overflow"):
        refresh_now(db)
    assert [r[0] for r in _minutes(db, device, "telemetry_rollup_1m")] == [_at(T + 60_000)]
    assert query(db, "SELECT DISTINCT bucket FROM rollup_pending") == [(_at(T),)]
    [(failed, error)] = query(db, "SELECT failed, last_error FROM firesafe_job_health")
    assert failed
    assert "overflow" in error
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE telemetry SET temperature = 1 WHERE temperature > 1e12")
    assert refresh_now(db) == 1
    assert query(db, "SELECT failed FROM firesafe_job_health") == [(False,)]
