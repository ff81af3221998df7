"""The direct binary COPY into `telemetry` against the checked stage path, on the
real database: the same rows (and, on plain PostgreSQL, the same minutes noted
for the rollup), NULL for absent readings, and a row stored by another writer
still stored once."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg

from firesafe.contract import READINGS
from storage import ingest_store as store
from storage.rollup import MINUTE_MS
from storage.telemetry_copy import DeviceIdTable
from tests.helpers import query, register

N = len(READINGS)
T0 = (int(time.time() * 1000) - 3_600_000) // MINUTE_MS * MINUTE_MS  # a minute boundary


def _setup(db: str, site: str) -> tuple[list[str], np.ndarray, DeviceIdTable]:
    ids = [f"{site}-a", f"{site}-longer-device-{uuid.uuid4().hex[:12]}", f"{site}-Z_9"]
    register(
        db,
        [
            {"id": i, "site": site, "building": "B", "floor": "1", "zone": "Z", "kind": "multi"}
            for i in ids
        ],
    )
    slots = {r[0]: int(r[1]) for r in query(db, "SELECT id, slot FROM devices")}
    by_slot: list[str | None] = [None] * (max(slots.values()) + 1)
    for device_id, slot in slots.items():
        by_slot[slot] = device_id
    return ids, np.array([slots[i] for i in ids], np.int64), DeviceIdTable.build(by_slot)


def _batch(slots: np.ndarray, rows: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    slot = slots[np.arange(rows) % slots.size]
    k = np.arange(rows) // slots.size
    values = rng.normal(20, 5, (rows, N))
    values[rng.random((rows, N)) < 0.6] = np.nan  # absent readings
    return {
        "slot": slot,
        "ts": T0 + k * 7_000 + 123,  # several minutes, millisecond precision
        "seq": k + 4_294_967_000,  # near the top of the contract's range
        "received": T0 + 86_400_000 + k,
        "values": values,
    }


async def _write(
    db: str, flavour: str, b: dict[str, Any], maybe_dup: np.ndarray, **kw: Any
) -> np.ndarray:
    async with await psycopg.AsyncConnection.connect(db) as conn:
        await store.prepare_connection(conn)
        async with conn.transaction():
            return await store.write_telemetry(
                conn,
                flavour,  # type: ignore[arg-type]
                slot=b["slot"],
                ts=b["ts"],
                seq=b["seq"],
                received=b["received"],
                maybe_dup=maybe_dup,
                values=b["values"],
                extra={},
                **kw,
            )


def _run(db: str, sql: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(sql.encode(), params)


def _stored(db: str, table: str, key: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in query(db, f"SELECT * FROM {table} ORDER BY {key}")]


def test_direct_copy_stores_what_the_stage_path_stores(db: str, flavour: str) -> None:
    ids, slots, table = _setup(db, "CP1")
    b = _batch(slots, 90, 1)
    none = np.zeros(90, np.bool_)
    new = asyncio.run(_write(db, flavour, b, none, ids=table))
    assert new.all()
    direct = _stored(db, "telemetry", "device_id, ts, seq")
    noted = _noted(db) if flavour == "plain" else set()
    _run(db, "TRUNCATE telemetry")
    if flavour == "plain":
        _run(db, "TRUNCATE rollup_pending")
    asyncio.run(_write(db, flavour, b, none))  # no ids: every row through the stage
    assert direct == _stored(db, "telemetry", "device_id, ts, seq")
    if flavour == "plain":
        minutes = {datetime.fromtimestamp(int(t) // MINUTE_MS * 60, UTC) for t in b["ts"]}
        assert noted == _noted(db) == minutes
        assert len(minutes) > 3
    # And what was stored is what was sent, NULL where a reading was absent.
    sent = {
        (table_id(table, int(s)), int(t), int(q)): v
        for s, t, q, v in zip(b["slot"], b["ts"], b["seq"], b["values"], strict=True)
    }
    assert len(direct) == 90
    for row in direct:
        ts, device_id, seq, received = row[0], row[1], row[2], row[3]
        values = sent[(device_id, round(ts.timestamp() * 1000), seq)]
        assert received.tzinfo is not None
        for got, want in zip(row[4 : 4 + N], values, strict=True):
            assert (got is None) if math.isnan(want) else got == want
    assert {r[1] for r in direct} == set(ids)


def _noted(db: str) -> set[datetime]:
    return {r[0] for r in query(db, "SELECT bucket FROM rollup_pending")}


def table_id(table: DeviceIdTable, slot: int) -> str:
    return bytes(table.padded[slot, : table.length[slot]]).decode()


def test_a_row_another_writer_stored_is_stored_once(db: str, flavour: str) -> None:
    """The high-water mark says new, but another writer (a process that held the
    site before) stored one of the keys: the COPY fails in its savepoint and every
    row takes the checked path."""
    _, slots, table = _setup(db, "CP2")
    b = _batch(slots, 30, 2)
    first = 7
    _run(
        db,
        "INSERT INTO telemetry (ts, device_id, seq, received_at) VALUES (%s, %s, %s, now())",
        (
            datetime.fromtimestamp(int(b["ts"][first]) / 1000, UTC),
            table_id(table, int(b["slot"][first])),
            int(b["seq"][first]),
        ),
    )
    new = asyncio.run(
        _write(
            db,
            flavour,
            b,
            np.zeros(30, np.bool_),
            ids=table,
        )
    )
    assert not new[first]
    assert new.sum() == 29
    assert query(db, "SELECT count(*), count(DISTINCT (device_id, ts, seq)) FROM telemetry")[0] == (
        30,
        30,
    )


def test_device_id_table_pads_and_measures() -> None:
    t = DeviceIdTable.build(["ab", None, "a-much-longer-id", "x"])
    assert [table_id(t, s) for s in range(4)] == ["ab", "", "a-much-longer-id", "x"]
    assert t.length.tolist() == [2, 0, 16, 1]
    empty = DeviceIdTable.build([])
    assert empty.padded.shape == (0, 1)


def test_a_restart_counts_seq_from_the_newest_committed_message(db: str) -> None:
    """device_state is written every few seconds: after a kill or a takeover,
    the seq a device's next message is counted from is its newest committed
    message's (a reading or an event), not the older one device_state kept
    (an outside check counted thousands of phantom gaps per takeover)."""
    ids, slots, _ = _setup(db, "seqrestart")
    at = datetime.fromtimestamp(T0 / 1000, UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        for k, seq in enumerate([100, 101, 102]):
            conn.execute(
                "INSERT INTO telemetry (ts, device_id, seq, received_at) "
                "VALUES (%s + make_interval(secs => %s), %s, %s, now())",
                (at, k, ids[0], seq),
            )
        conn.execute(
            "INSERT INTO device_events (ts, device_id, seq, received_at, type) "
            "VALUES (%s + make_interval(secs => 3), %s, 103, now(), 'fault')",
            (at, ids[0]),
        )
        conn.execute(  # written after seq 100, before the rest was committed
            "INSERT INTO device_state (device_id, last_ts, last_seq) VALUES (%s, %s, 100), "
            "(%s, %s, 7), (%s, NULL, NULL)",
            (ids[0], at, ids[1], at, ids[2]),
        )

    async def load() -> dict[int, Any]:
        conn = await psycopg.AsyncConnection.connect(db, autocommit=True)
        async with conn:
            return {int(r["slot"]): r["last_seq"] for r in await store.load_device_state(conn)}

    got = asyncio.run(load())
    assert got == {int(slots[0]): 103, int(slots[1]): 7, int(slots[2]): None}
