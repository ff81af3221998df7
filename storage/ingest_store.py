"""The writes ingest makes, each inside the caller's per-batch transaction.

Telemetry goes through a temporary stage table filled with one binary COPY
built straight from the numpy columns (no Python object per row), then into
`telemetry` with ON CONFLICT DO NOTHING, so a duplicate (device, ts, seq) is
stored once whatever path it took. On plain PostgreSQL the batch notes the
minutes it wrote for the 1-minute rollup's refresher (storage.rollup).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import orjson
import psycopg
from numpy.typing import NDArray
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from firesafe.contract import GATEWAY_SITE, READINGS
from storage import rollup, telemetry_copy
from storage.telemetry_copy import DeviceIdTable

Flavour = Literal["plain", "timescale"]
AsyncConn = psycopg.AsyncConnection[Any]

_MS = "'epoch'::timestamptz + {} * interval '1 millisecond'"

STAGE_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS stage_telemetry (
    idx integer NOT NULL, slot integer NOT NULL, ts_ms bigint NOT NULL, seq bigint NOT NULL,
    received_ms bigint NOT NULL, maybe_dup boolean NOT NULL,
    {", ".join(f"{r} double precision NOT NULL" for r in READINGS)}
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_extra (idx integer NOT NULL, extra jsonb NOT NULL)
    ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_device_state (
    slot integer NOT NULL, last_seen_ms bigint NOT NULL, last_ts_ms bigint NOT NULL,
    last_seq bigint NOT NULL, status smallint NOT NULL, status_ms bigint NOT NULL,
    on_mains smallint NOT NULL, messages bigint NOT NULL, seq_gaps bigint NOT NULL,
    duplicates bigint NOT NULL, out_of_order bigint NOT NULL
) ON COMMIT DELETE ROWS;
"""

# The binary COPY stream (PostgreSQL's documented format), built as one numpy
# record array: a field count, then (length, value) per column, all
# big-endian. Only fixed-size columns, so there is no Python object per row;
# absent values travel as a sentinel (NaN, -1) that SQL turns into NULL.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def binary_copy(columns: Sequence[tuple[str, str, NDArray[Any]]]) -> bytes:
    """Encode equally long columns (name, big-endian dtype, values) for COPY ... BINARY."""
    n = len(columns[0][2]) if columns else 0
    record = np.dtype(
        [("nfields", ">i2")]
        + [item for name, kind, _ in columns for item in ((f"len_{name}", ">i4"), (name, kind))]
    )
    records = np.empty(n, dtype=record)
    records["nfields"] = len(columns)
    for name, kind, values in columns:
        records[f"len_{name}"] = np.dtype(kind).itemsize
        records[name] = values
    return _COPY_HEADER + records.tobytes() + _COPY_TRAILER


_READING_COLS = ", ".join(READINGS)
_READING_VALUES = ", ".join(f"NULLIF(s.{r}, 'NaN')" for r in READINGS)
# Staged rows known to be new go in plainly; the checked variant is the
# fallback when another writer raced us.
_INSERT_NEW_TELEMETRY = f"""
INSERT INTO telemetry (ts, device_id, seq, received_at, {_READING_COLS}, extra)
SELECT {_MS.format("s.ts_ms")}, d.id, s.seq, {_MS.format("s.received_ms")},
       {_READING_VALUES}, x.extra
FROM stage_telemetry s
JOIN devices d ON d.slot = s.slot
LEFT JOIN stage_extra x ON x.idx = s.idx
""".encode()
_INSERT_TELEMETRY_CHECKED = _INSERT_NEW_TELEMETRY + b"ON CONFLICT DO NOTHING\n"
_MARK_ALL_MAYBE_DUP = "UPDATE stage_telemetry SET maybe_dup = true"
_DELETE_STAGED_DUPLICATES = f"""
DELETE FROM stage_telemetry s USING devices d
WHERE s.maybe_dup AND d.slot = s.slot AND (
    EXISTS (SELECT 1 FROM telemetry t WHERE t.device_id = d.id
            AND t.ts = {_MS.format("s.ts_ms")} AND t.seq = s.seq)
    OR EXISTS (SELECT 1 FROM device_events e WHERE e.device_id = d.id
            AND e.ts = {_MS.format("s.ts_ms")} AND e.seq = s.seq))
RETURNING s.idx
"""
_INSERT_EVENTS = f"""
INSERT INTO device_events (ts, device_id, seq, received_at, type, detail)
SELECT {_MS.format("e.ts_ms")}, d.id, e.seq, {_MS.format("e.received_ms")}, e.type, e.detail
FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::int[], %s::text[], %s::text[])
    AS e(slot, ts_ms, seq, received_ms, idx, type, detail)
JOIN devices d ON d.slot = e.slot
WHERE NOT EXISTS (SELECT 1 FROM telemetry t WHERE t.device_id = d.id
                  AND t.ts = {_MS.format("e.ts_ms")} AND t.seq = e.seq)
ON CONFLICT DO NOTHING
RETURNING device_id, seq, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms
"""


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def recorded_flavour(conn: AsyncConn) -> Flavour | None:
    """The schema flavour recorded by `firesafe db migrate`; None: not migrated."""
    try:
        async with conn.transaction():
            cur = await conn.execute("SELECT value FROM firesafe_meta WHERE key = 'flavour'")
            row = await cur.fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    if row is None or row[0] not in ("plain", "timescale"):
        return None
    return row[0]  # type: ignore[no-any-return]


async def prepare_connection(conn: AsyncConn) -> None:
    """Create this session's stage tables (once per connection)."""
    await conn.execute(STAGE_DDL.encode())
    await conn.commit()


def encode_stage(
    slot: NDArray[np.int64],
    ts: NDArray[np.int64],
    seq: NDArray[np.int64],
    received: NDArray[np.int64],
    maybe_dup: NDArray[np.bool_],
    values: NDArray[np.float64],
    idx: NDArray[np.int64] | None = None,
) -> bytes:
    """The binary COPY stream of the stage table for these rows (NaN = absent reading);
    `idx`: each row's index in the batch (default: its position)."""
    return binary_copy(
        [
            ("idx", ">i4", np.arange(slot.size) if idx is None else idx),
            ("slot", ">i4", slot),
            ("ts_ms", ">i8", ts),
            ("seq", ">i8", seq),
            ("received_ms", ">i8", received),
            ("maybe_dup", "u1", maybe_dup),
            *[(r, ">f8", values[:, i]) for i, r in enumerate(READINGS)],
        ]
    )


async def write_telemetry(
    conn: AsyncConn,
    flavour: Flavour,
    *,
    slot: NDArray[np.int64],
    ts: NDArray[np.int64],
    seq: NDArray[np.int64],
    received: NDArray[np.int64],
    maybe_dup: NDArray[np.bool_],
    values: NDArray[np.float64],
    extra: Mapping[int, Mapping[str, float]],
    ids: DeviceIdTable | None = None,
    on_sent: Callable[[], None] | None = None,
) -> NDArray[np.bool_]:
    """Store the rows not stored before; return the mask of rows that were new.
    `on_sent` is called once the direct rows are on their way: the server works
    through them while the caller's event loop does other work.

    Rows that cannot be duplicates (`maybe_dup` false: newer than everything
    known to be committed for their device) go straight into `telemetry` with
    one binary COPY when `ids` is given. The rest goes through the stage
    table: rows that may be duplicates are checked and dropped first, then
    inserted without ON CONFLICT, which costs PostgreSQL a third of the insert.
    Should another writer have stored one of them meanwhile, the COPY or the
    insert fails inside a savepoint and every row is checked instead.
    """
    new = np.ones(slot.size, dtype=np.bool_)
    if not slot.size:
        return new
    direct = np.zeros(slot.size, dtype=np.bool_)
    if ids is not None:
        direct = ~maybe_dup
        if extra:
            direct[np.fromiter(extra, dtype=np.int64, count=len(extra))] = False
    async with conn.cursor() as cur:
        if direct.any():
            try:
                async with conn.transaction(), cur.copy(telemetry_copy.TELEMETRY_COPY) as copy:
                    assert ids is not None
                    await copy.write(
                        telemetry_copy.telemetry_rows(
                            ids,
                            slot[direct],
                            ts[direct],
                            seq[direct],
                            received[direct],
                            values[direct],
                        )
                    )
                    if on_sent is not None:
                        on_sent()
            except psycopg.errors.UniqueViolation:
                direct[:] = False  # another writer: check every row
                maybe_dup = np.ones(slot.size, dtype=np.bool_)
        staged = np.flatnonzero(~direct)
        if staged.size:
            await _stage_and_insert(
                cur, conn, staged, slot, ts, seq, received, maybe_dup, values, extra, new
            )
        if flavour == "plain":
            await rollup.note_minutes(cur, ts[new])
    return new


async def _stage_and_insert(
    cur: psycopg.AsyncCursor[Any],
    conn: AsyncConn,
    rows: NDArray[np.int64],
    slot: NDArray[np.int64],
    ts: NDArray[np.int64],
    seq: NDArray[np.int64],
    received: NDArray[np.int64],
    maybe_dup: NDArray[np.bool_],
    values: NDArray[np.float64],
    extra: Mapping[int, Mapping[str, float]],
    new: NDArray[np.bool_],
) -> None:
    """The checked path for these rows (indices into the batch); clears `new` of duplicates."""
    async with cur.copy("COPY stage_telemetry FROM STDIN (FORMAT BINARY)") as copy:
        await copy.write(
            encode_stage(
                slot[rows],
                ts[rows],
                seq[rows],
                received[rows],
                maybe_dup[rows],
                values[rows],
                idx=rows,
            )
        )
    if extra:
        async with cur.copy("COPY stage_extra (idx, extra) FROM STDIN") as copy:
            for idx, names in extra.items():
                await copy.write_row((idx, Jsonb(dict(names))))
    if maybe_dup[rows].any():
        new[await _drop_staged_duplicates(cur)] = False
    try:
        async with conn.transaction():
            await cur.execute(_INSERT_NEW_TELEMETRY)
    except psycopg.errors.UniqueViolation:
        await cur.execute(_MARK_ALL_MAYBE_DUP)
        new[await _drop_staged_duplicates(cur)] = False
        await cur.execute(_INSERT_TELEMETRY_CHECKED)


async def _drop_staged_duplicates(cur: psycopg.AsyncCursor[Any]) -> list[int]:
    await cur.execute(_DELETE_STAGED_DUPLICATES.encode())
    return [row[0] for row in await cur.fetchall()]


async def write_events(
    conn: AsyncConn,
    *,
    device_ids: Sequence[str],
    slot: NDArray[np.int64],
    ts: NDArray[np.int64],
    seq: NDArray[np.int64],
    received: NDArray[np.int64],
    types: Sequence[str],
    details: Sequence[str | None],
) -> NDArray[np.bool_]:
    """Store device events not stored before; return the mask of new ones."""
    new = np.zeros(slot.size, dtype=np.bool_)
    if not slot.size:
        return new
    async with conn.cursor() as cur:
        await cur.execute(
            _INSERT_EVENTS.encode(),
            (
                slot.tolist(),
                ts.tolist(),
                seq.tolist(),
                received.tolist(),
                list(range(slot.size)),
                list(types),
                list(details),
            ),
        )
        inserted = {(row[0], row[1], row[2]) for row in await cur.fetchall()}
    for i in range(slot.size):
        new[i] = (device_ids[i], int(seq[i]), int(ts[i])) in inserted
    return new


# A reject keeps the head of its payload (enough to see what was wrong) and its
# length: a flood of large payloads must not fill the database.
REJECT_PAYLOAD_KEEP = 4096
# ... and of its topic: a contract topic is under 150 characters, MQTT allows
# 65,535 bytes (a flood of long garbage topics would fill it as well).
REJECT_TOPIC_KEEP = 512


@dataclass(frozen=True, slots=True)
class RejectRow:
    received_ms: int
    topic: str
    reason: str
    payload: bytes
    detail: str
    device_id: str | None
    size: int = -1  # the original length, when the payload was cut short before


async def write_rejects(conn: AsyncConn, rejects: Sequence[RejectRow]) -> None:
    """Keep bad input where an operator can list it, and count it per reason."""
    if not rejects:
        return
    async with conn.cursor() as cur:
        async with cur.copy(
            "COPY rejects (received_at, topic, reason, payload, payload_size, detail, device_id)"
            " FROM STDIN"
        ) as copy:
            for r in rejects:
                await copy.write_row(
                    (
                        ms_to_datetime(r.received_ms),
                        r.topic[:REJECT_TOPIC_KEEP],
                        r.reason,
                        r.payload[:REJECT_PAYLOAD_KEEP],
                        r.size if r.size >= 0 else len(r.payload),
                        r.detail,
                        r.device_id,
                    )
                )
        counts = Counter(r.reason for r in rejects)
        await cur.execute(
            """
            INSERT INTO reject_counts AS c (reason, count)
            SELECT * FROM unnest(%s::text[], %s::bigint[])
            ON CONFLICT (reason) DO UPDATE SET count = c.count + EXCLUDED.count
            """,
            (list(counts), list(counts.values())),
        )


_UPSERT_DEVICE_STATE = f"""
INSERT INTO device_state AS s (device_id, last_seen_at, last_ts, last_seq, status, status_at,
    on_mains, messages, seq_gaps, duplicates, out_of_order, updated_at)
SELECT d.id,
    CASE WHEN u.last_seen_ms >= 0 THEN {_MS.format("u.last_seen_ms")} END,
    CASE WHEN u.last_ts_ms >= 0 THEN {_MS.format("u.last_ts_ms")} END,
    NULLIF(u.last_seq, -1),
    CASE u.status WHEN 0 THEN 'offline' WHEN 1 THEN 'online' END,
    CASE WHEN u.status >= 0 THEN {_MS.format("u.status_ms")} END,
    CASE u.on_mains WHEN 0 THEN false WHEN 1 THEN true END,
    u.messages, u.seq_gaps, u.duplicates, u.out_of_order, now()
FROM stage_device_state u JOIN devices d ON d.slot = u.slot
ON CONFLICT (device_id) DO UPDATE SET
    last_seen_at = GREATEST(s.last_seen_at, EXCLUDED.last_seen_at),
    last_ts = GREATEST(s.last_ts, EXCLUDED.last_ts),
    last_seq = CASE WHEN EXCLUDED.last_ts >= s.last_ts OR s.last_ts IS NULL
                    THEN COALESCE(EXCLUDED.last_seq, s.last_seq) ELSE s.last_seq END,
    status = COALESCE(EXCLUDED.status, s.status),
    status_at = COALESCE(EXCLUDED.status_at, s.status_at),
    on_mains = COALESCE(EXCLUDED.on_mains, s.on_mains),
    messages = s.messages + EXCLUDED.messages,
    seq_gaps = s.seq_gaps + EXCLUDED.seq_gaps,
    duplicates = s.duplicates + EXCLUDED.duplicates,
    out_of_order = s.out_of_order + EXCLUDED.out_of_order,
    updated_at = now()
"""


@dataclass(frozen=True, slots=True)
class DeviceStateColumns:
    """What ingest learnt about each device since the last flush, one array per
    column; -1 marks "nothing new" (status: -1 none, 0 offline, 1 online)."""

    slot: NDArray[np.int64]
    last_seen_ms: NDArray[np.int64]
    last_ts_ms: NDArray[np.int64]
    last_seq: NDArray[np.int64]
    status: NDArray[np.int64]
    status_ms: NDArray[np.int64]
    on_mains: NDArray[np.int64]
    messages: NDArray[np.int64]
    seq_gaps: NDArray[np.int64]
    duplicates: NDArray[np.int64]
    out_of_order: NDArray[np.int64]


async def write_device_state(conn: AsyncConn, state: DeviceStateColumns) -> None:
    """Fold the figures into device_state: one binary COPY and one upsert."""
    if not state.slot.size:
        return
    int2 = {"status", "on_mains"}
    int4 = {"slot"}
    columns = [
        (name, ">i2" if name in int2 else ">i4" if name in int4 else ">i8", getattr(state, name))
        for name in DeviceStateColumns.__dataclass_fields__
    ]
    async with conn.cursor() as cur:
        async with cur.copy("COPY stage_device_state FROM STDIN (FORMAT BINARY)") as copy:
            await copy.write(binary_copy(columns))
        await cur.execute(_UPSERT_DEVICE_STATE.encode())


async def write_drift_baselines(
    conn: AsyncConn, device_ids: Sequence[str], baselines: Sequence[float]
) -> None:
    """Store the drift-compensation baseline detection learnt for these devices."""
    if not device_ids:
        return
    await conn.execute(
        """
        INSERT INTO device_state AS s (device_id, drift_baseline, updated_at)
        SELECT u.d, u.b, now() FROM unnest(%s::text[], %s::float8[]) AS u(d, b)
        JOIN devices ON devices.id = u.d
        ON CONFLICT (device_id) DO UPDATE SET drift_baseline = EXCLUDED.drift_baseline,
            updated_at = now()
        """,
        (list(device_ids), list(baselines)),
    )


async def write_detection_held(
    conn: AsyncConn, device_ids: Sequence[str], held_ms: Sequence[int | None]
) -> None:
    """Mark (ms) or unmark (None) the oldest stored reading or event of each
    device that detection holds, not yet judged (see migration 0170)."""
    if not device_ids:
        return
    await conn.execute(
        """
        INSERT INTO device_state AS s (device_id, detection_held_from, updated_at)
        SELECT u.d, 'epoch'::timestamptz + u.ms * interval '1 millisecond', now()
        FROM unnest(%s::text[], %s::bigint[]) AS u(d, ms)
        JOIN devices ON devices.id = u.d
        ON CONFLICT (device_id) DO UPDATE
            SET detection_held_from = EXCLUDED.detection_held_from, updated_at = now()
        """,
        (list(device_ids), list(held_ms)),
    )


async def write_quarantined(
    conn: AsyncConn, device_ids: Sequence[str], counts: Sequence[int]
) -> None:
    """Add readings kept out of detection to each device's total."""
    if not device_ids:
        return
    await conn.execute(
        """
        INSERT INTO device_state AS s (device_id, quarantined, updated_at)
        SELECT d, q, now() FROM unnest(%s::text[], %s::bigint[]) AS u(d, q)
        ON CONFLICT (device_id) DO UPDATE SET quarantined = s.quarantined + EXCLUDED.quarantined,
            updated_at = now()
        """,
        (list(device_ids), list(counts)),
    )


async def load_registry(conn: AsyncConn) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT d.id, d.slot, d.site_id, d.building, d.floor, d.zone, d.kind, d.interval_s,
                   d.thresholds, d.routes, s.standard,
                   (extract(epoch FROM d.created_at) * 1000)::bigint AS registered_ms
            FROM devices d JOIN sites s ON s.id = d.site_id ORDER BY d.slot
            """
        )
        return await cur.fetchall()


async def registry_version(conn: AsyncConn) -> tuple[int, datetime | None]:
    """Cheap change detector for the registry: (count, newest update)."""
    row = await (await conn.execute("SELECT count(*), max(updated_at) FROM devices")).fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def load_device_state(
    conn: AsyncConn, sites: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """device_state of every device (or of the devices of these sites).

    `last_seq` is the seq of the device's newest committed message: device_state
    is written every few seconds, so after a kill or a takeover the messages
    committed since (newer than its `last_ts`) are looked up, one index probe
    per device; counting from the older seq found phantom gaps (an outside
    check: thousands per takeover, nothing lost)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT d.slot, (extract(epoch FROM s.last_seen_at) * 1000)::bigint AS last_seen_ms,
                   (extract(epoch FROM s.last_ts) * 1000)::bigint AS last_ts_ms,
                   coalesce(n.seq, s.last_seq) AS last_seq,
                   s.status, s.drift_baseline,
                   (extract(epoch FROM s.detection_held_from) * 1000)::bigint AS held_from_ms
            FROM device_state s JOIN devices d ON d.id = s.device_id
            LEFT JOIN LATERAL (
                SELECT x.seq FROM (
                    (SELECT t.ts, t.seq FROM telemetry t
                     WHERE t.device_id = s.device_id
                       AND t.ts > coalesce(s.last_ts, '-infinity')
                     ORDER BY t.ts DESC, t.seq DESC LIMIT 1)
                    UNION ALL
                    (SELECT e.ts, e.seq FROM device_events e
                     WHERE e.device_id = s.device_id
                       AND e.ts > coalesce(s.last_ts, '-infinity')
                     ORDER BY e.ts DESC, e.seq DESC LIMIT 1)
                ) x ORDER BY x.ts DESC, x.seq DESC LIMIT 1
            ) n ON true
            WHERE %(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s::text[])
            """,
            {"sites": None if sites is None else list(sites)},
        )
        return await cur.fetchall()


@dataclass(frozen=True, slots=True)
class AlarmWrite:
    """One alarm transition to store (from detection or supervision)."""

    device_id: str
    site: str
    building: str
    floor: str
    zone: str
    alarm_type: str
    action: Literal["open", "verdict", "clear"]
    verdict: str
    reason: str
    at_ms: int
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class AppliedAlarm:
    alarm_id: str
    write: AlarmWrite
    logged: str  # the audit action recorded: opened, confirmed, suppressed, cleared


async def _log(conn: AsyncConn, alarm_id: str, action: str, note: str | None) -> None:
    await conn.execute(
        "INSERT INTO alarm_log (alarm_id, action, actor, note) VALUES (%s, %s, 'system', %s)",
        (alarm_id, action, note),
    )


async def apply_alarm_writes(conn: AsyncConn, writes: Sequence[AlarmWrite]) -> list[AppliedAlarm]:
    """Apply transitions in order; the partial unique index keeps one open alarm per
    (device, type) even if two writers race. Suppressed alarms are closed at once
    (judged false, nothing for a person to do) but stay listed with their verdict."""
    applied: list[AppliedAlarm] = []
    for w in writes:
        at = ms_to_datetime(w.at_ms)
        detail = Jsonb(json.loads(json.dumps(dict(w.detail), default=str)))
        if w.action == "open":
            cur = await conn.execute(
                """
                INSERT INTO alarms (device_id, site_id, building, floor, zone, type, verdict,
                    status, reason, opened_at, confirmed_at, cleared_at, cleared_by, detail)
                VALUES (%(device)s, %(site)s, %(building)s, %(floor)s, %(zone)s, %(type)s,
                    %(verdict)s, CASE WHEN %(verdict)s = 'suppressed' THEN 'cleared' ELSE 'active'
                    END, %(reason)s, %(at)s,
                    CASE WHEN %(verdict)s = 'confirmed' THEN %(at)s END,
                    CASE WHEN %(verdict)s = 'suppressed' THEN %(at)s END,
                    CASE WHEN %(verdict)s = 'suppressed' THEN 'system' END, %(detail)s)
                ON CONFLICT (device_id, type) WHERE status <> 'cleared' AND verdict <> 'suppressed'
                DO NOTHING
                RETURNING id
                """,
                {
                    "device": w.device_id,
                    "site": w.site,
                    "building": w.building,
                    "floor": w.floor,
                    "zone": w.zone,
                    "type": w.alarm_type,
                    "verdict": w.verdict,
                    "reason": w.reason,
                    "at": at,
                    "detail": detail,
                },
            )
            row = await cur.fetchone()
            if row is not None:
                await _log(conn, row[0], "opened", f"{w.verdict}: {w.reason}")
                applied.append(AppliedAlarm(row[0], w, "opened"))
                continue
            if w.verdict == "pending":
                continue  # already open: nothing new
            # Already open (e.g. known before a restart): treat as a verdict change.
        if w.action in ("open", "verdict"):
            cur = await conn.execute(
                """
                UPDATE alarms SET verdict = %(verdict)s, reason = %(reason)s,
                    confirmed_at = CASE WHEN %(verdict)s = 'confirmed'
                                   THEN COALESCE(confirmed_at, %(at)s) ELSE confirmed_at END,
                    status = CASE WHEN %(verdict)s = 'suppressed' THEN 'cleared' ELSE status END,
                    cleared_at = CASE WHEN %(verdict)s = 'suppressed'
                                 THEN GREATEST(opened_at, %(at)s) ELSE cleared_at END,
                    cleared_by = CASE WHEN %(verdict)s = 'suppressed' THEN 'system'
                                 ELSE cleared_by END,
                    detail = detail || %(detail)s, updated_at = now()
                WHERE device_id = %(device)s AND type = %(type)s AND status <> 'cleared'
                  AND verdict <> 'suppressed' AND verdict IS DISTINCT FROM %(verdict)s
                  AND NOT (verdict = 'confirmed' AND %(verdict)s = 'suppressed')
                RETURNING id, site_id, building, floor, zone
                """,
                {
                    "device": w.device_id,
                    "type": w.alarm_type,
                    "verdict": w.verdict,
                    "reason": w.reason,
                    "at": at,
                    "detail": detail,
                },
            )
            row = await cur.fetchone()
            if row is not None:
                await _log(conn, row[0], w.verdict, w.reason)
                applied.append(AppliedAlarm(row[0], _placed(w, row), w.verdict))
        else:  # clear
            cur = await conn.execute(
                """
                UPDATE alarms SET status = 'cleared', cleared_at = GREATEST(opened_at, %s),
                    cleared_by = 'system', updated_at = now()
                WHERE device_id = %s AND type = %s AND status <> 'cleared'
                  AND verdict <> 'suppressed'
                RETURNING id, site_id, building, floor, zone
                """,
                (at, w.device_id, w.alarm_type),
            )
            row = await cur.fetchone()
            if row is not None:
                await _log(conn, row[0], "cleared", w.reason)
                applied.append(AppliedAlarm(row[0], _placed(w, row), "cleared"))
    return applied


def _placed(w: AlarmWrite, row: Sequence[Any]) -> AlarmWrite:
    """The write where its alarm was opened (a device moved since keeps its
    alarm's place: its signs, not the new building's, answer its fire)."""
    site, building, floor, zone = row[1:5]
    if (site, building, floor, zone) == (w.site, w.building, w.floor, w.zone):
        return w
    return replace(w, site=site, building=building, floor=floor, zone=zone)


async def open_site_alarm(
    conn: AsyncConn, *, site: str, reason: str, at_ms: int, detail: Mapping[str, Any]
) -> str | None:
    """Open a site- or gateway-level `offline` alarm (no device; a gateway's id in
    `detail.gateway`); None when that group's alarm is open already."""
    cur = await conn.execute(
        """
        INSERT INTO alarms (device_id, site_id, building, floor, zone, type, verdict, status,
            reason, opened_at, confirmed_at, detail)
        VALUES (NULL, %(site)s, '', '', '', 'offline', 'confirmed', 'active', %(reason)s,
            %(at)s, %(at)s, %(detail)s)
        ON CONFLICT (site_id, type, (coalesce(detail->>'gateway', '')))
            WHERE device_id IS NULL AND status <> 'cleared' AND verdict <> 'suppressed'
        DO NOTHING
        RETURNING id
        """,
        {
            "site": site,
            "reason": reason,
            "at": ms_to_datetime(at_ms),
            "detail": Jsonb(dict(detail)),
        },
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await _log(conn, row[0], "opened", f"confirmed: {reason}")
    return str(row[0])


async def link_cause(
    conn: AsyncConn,
    *,
    site: str,
    cause: str,
    since_ms: int,
    devices: Sequence[str] | None = None,
) -> int:
    """Point the open device offline alarms of a site (or of these devices) opened
    since `since_ms` at `cause`, and cancel their notifications still held
    (migration 0160): the group's alarm is notified instead."""
    cur = await conn.execute(
        """
        WITH linked AS (
            UPDATE alarms SET detail = detail || jsonb_build_object('cause', %(cause)s::text),
                updated_at = now()
            WHERE site_id = %(site)s AND type = 'offline' AND device_id IS NOT NULL
              AND (%(devices)s::text[] IS NULL OR device_id = ANY(%(devices)s::text[]))
              AND status <> 'cleared' AND opened_at >= %(since)s
              AND NOT detail ? 'cause'
            RETURNING id
        ), unescalated AS (
            DELETE FROM notify_escalations e USING linked WHERE e.alarm_id = linked.id
        )
        SELECT count(*) FROM linked, LATERAL firesafe_cancel_held_notifications(
            linked.id, 'grouped: its site or gateway alarm is sent')
        """,
        {
            "site": site,
            "cause": cause,
            "since": ms_to_datetime(since_ms),
            "devices": None if devices is None else list(devices),
        },
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def clear_site_alarm(conn: AsyncConn, *, alarm_id: str, reason: str, at_ms: int) -> bool:
    cur = await conn.execute(
        """
        UPDATE alarms SET status = 'cleared', cleared_at = GREATEST(opened_at, %s),
            cleared_by = 'system', updated_at = now()
        WHERE id = %s AND status <> 'cleared'
        RETURNING id
        """,
        (ms_to_datetime(at_ms), alarm_id),
    )
    if await cur.fetchone() is None:
        return False
    await _log(conn, alarm_id, "cleared", reason)
    return True


async def write_gateway_members(
    conn: AsyncConn, device_ids: Sequence[str], gateways: Sequence[str]
) -> None:
    """Remember which gateway each of these devices was last heard through."""
    if not device_ids:
        return
    await conn.execute(
        """
        INSERT INTO gateway_members AS m (device_id, gateway)
        SELECT u.d, u.g FROM unnest(%s::text[], %s::text[]) AS u(d, g)
        JOIN devices ON devices.id = u.d
        ON CONFLICT (device_id) DO UPDATE SET gateway = EXCLUDED.gateway, heard_at = now()
        """,
        (list(device_ids), list(gateways)),
    )


async def load_gateway_members(
    conn: AsyncConn, sites: Sequence[str] | None = None
) -> list[tuple[int, str, str]]:
    """(slot, site, gateway) of every device last heard through a gateway (of these sites)."""
    cur = await conn.execute(
        """
        SELECT d.slot, d.site_id, m.gateway
        FROM gateway_members m JOIN devices d ON d.id = m.device_id
        WHERE %(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s::text[])
        """,
        {"sites": None if sites is None else list(sites)},
    )
    return [(int(r[0]), r[1], r[2]) for r in await cur.fetchall()]


async def load_open_site_alarms(conn: AsyncConn) -> dict[tuple[str, str], str]:
    """(site, gateway or "") -> id of its open site- or gateway-level offline alarm."""
    cur = await conn.execute(
        "SELECT site_id, coalesce(detail->>'gateway', ''), id FROM alarms "
        "WHERE device_id IS NULL AND type = 'offline' AND status <> 'cleared'"
    )
    return {(row[0], row[1]): row[2] for row in await cur.fetchall()}


async def load_open_alarms(
    conn: AsyncConn, sites: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Open alarms of every device (or of the devices of these sites)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT a.id, a.device_id, d.slot, a.type, a.verdict, a.reason, a.site_id, a.building,
                   a.floor, a.zone, (extract(epoch FROM a.opened_at) * 1000)::bigint AS opened_ms
            FROM alarms a JOIN devices d ON d.id = a.device_id
            WHERE a.status <> 'cleared' AND a.verdict <> 'suppressed'
              AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s::text[]))
            """,
            {"sites": None if sites is None else list(sites)},
        )
        return await cur.fetchall()


async def load_recent_history(
    conn: AsyncConn, device_ids: Sequence[str], span_ms: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The last `span_ms` (of each device's own clock, back from its newest
    reading or event) of these devices: readings as (slot, ts_ms, *READINGS)
    and events as (slot, ts_ms, type), oldest first."""
    readings = ", ".join(f"t.{name}" for name in READINGS)
    return (
        await _recent(conn, "telemetry", readings, device_ids, span_ms),
        await _recent(conn, "device_events", "t.type", device_ids, span_ms),
    )


async def _recent(
    conn: AsyncConn, table: str, columns: str, device_ids: Sequence[str], span_ms: int
) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cur:
        await cur.execute(
            f"""
            SELECT d.slot, (extract(epoch FROM t.ts) * 1000)::bigint, {columns}
            FROM devices d
            CROSS JOIN LATERAL (SELECT max(ts) AS newest FROM {table}
                                WHERE device_id = d.id) n
            JOIN {table} t ON t.device_id = d.id AND t.ts >= n.newest - %(span)s
            WHERE d.id = ANY(%(ids)s::text[])
            ORDER BY t.ts, d.slot, t.seq
            """,
            {"ids": list(device_ids), "span": timedelta(milliseconds=span_ms)},
        )
        return await cur.fetchall()


async def cleared_by_people(conn: AsyncConn, after_log_id: int) -> list[dict[str, Any]]:
    """Alarms a person cleared, confirmed or dismissed (suppressed) through the API
    since a log position; `action` says which."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT l.id AS log_id, l.action, a.id, a.device_id, a.type, a.site_id, a.building,
                a.floor, a.zone
            FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
            WHERE l.id > %s AND l.action IN ('cleared', 'confirmed', 'suppressed')
              AND l.actor <> 'system'
            ORDER BY l.id
            """,
            (after_log_id,),
        )
        return await cur.fetchall()


async def last_log_id(conn: AsyncConn) -> int:
    row = await (await conn.execute("SELECT COALESCE(max(id), 0) FROM alarm_log")).fetchone()
    return int(row[0]) if row else 0


async def burning_zones(
    conn: AsyncConn, buildings: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[set[tuple[str, str]], str | None]]:
    """Per building: the (floor, zone)s with an open confirmed fire, and the newest
    such alarm (what an `emergency` command refers to)."""
    out: dict[tuple[str, str], tuple[set[tuple[str, str]], str | None]] = {
        b: (set(), None) for b in buildings
    }
    if not buildings:
        return out
    cur = await conn.execute(
        """
        SELECT a.site_id, a.building, a.floor, a.zone, a.id
        FROM alarms a
        JOIN unnest(%s::text[], %s::text[]) AS b(site_id, building)
          ON a.site_id = b.site_id AND a.building = b.building
        WHERE a.type = 'fire' AND a.verdict = 'confirmed' AND a.status <> 'cleared'
        ORDER BY a.opened_at, a.id
        """,
        ([b[0] for b in buildings], [b[1] for b in buildings]),
    )
    for site, building, floor, zone, alarm_id in await cur.fetchall():
        zones, _ = out[(site, building)]
        zones.add((floor, zone))
        out[(site, building)] = (zones, alarm_id)
    return out


async def last_commands(
    conn: AsyncConn, device_ids: Sequence[str]
) -> dict[str, tuple[str, str | None]]:
    """The last command written (pending or acknowledged) for each of these signs,
    in whichever building it was then (a sign moved out of a fire must be told)."""
    if not device_ids:
        return {}
    cur = await conn.execute(
        """
        SELECT DISTINCT ON (c.device_id) c.device_id, c.cmd, c.direction
        FROM linkage_commands c
        WHERE c.device_id = ANY(%s::text[]) AND c.state <> 'superseded'
        ORDER BY c.device_id, c.id DESC
        """,
        (list(device_ids),),
    )
    return {row[0]: (row[1], row[2]) for row in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class CommandRow:
    """A linkage command to write as pending (the outbox row)."""

    alarm_id: str | None
    device_id: str
    site: str
    building: str
    cmd: str
    direction: str | None
    payload: Mapping[str, Any]


async def write_commands(conn: AsyncConn, rows: Sequence[CommandRow]) -> None:
    """Write commands as pending; an older pending command to the same sign is
    superseded (only the newest state matters to a sign)."""
    if not rows:
        return
    await conn.execute(
        """
        UPDATE linkage_commands SET state = 'superseded'
        WHERE state = 'pending' AND device_id = ANY(%s::text[])
        """,
        ([r.device_id for r in rows],),
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            """
            INSERT INTO linkage_commands (alarm_id, device_id, site_id, building, cmd, direction,
                payload, state) VALUES (%s, %s, %s, %s, %s, %s, %s, 'pending')
            """,
            [
                (
                    r.alarm_id,
                    r.device_id,
                    r.site,
                    r.building,
                    r.cmd,
                    r.direction,
                    Jsonb(dict(r.payload)),
                )
                for r in rows
            ],
        )


@dataclass(frozen=True, slots=True)
class PendingCommand:
    id: int
    site: str
    device_id: str
    payload: bytes


async def pending_commands(
    conn: AsyncConn, sites: Sequence[str] | None, limit: int
) -> list[PendingCommand]:
    """Commands not yet acknowledged by the broker, oldest first (all sites: None)."""
    cur = await conn.execute(
        """
        SELECT id, site_id, device_id, payload FROM linkage_commands
        WHERE state = 'pending' AND (%s::text[] IS NULL OR site_id = ANY(%s::text[]))
        ORDER BY id LIMIT %s
        """,
        (sites, sites, limit),
    )
    return [PendingCommand(int(r[0]), r[1], r[2], orjson.dumps(r[3])) for r in await cur.fetchall()]


async def mark_commands(conn: AsyncConn, acked: Sequence[int], tried: Sequence[int]) -> None:
    """Record a publish attempt; the acknowledged leave the pending list."""
    await conn.execute(
        """
        UPDATE linkage_commands SET attempts = attempts + 1, sent_at = now(),
            state = CASE WHEN id = ANY(%s::bigint[]) AND state = 'pending'
                         THEN 'acknowledged' ELSE state END,
            acked_at = CASE WHEN id = ANY(%s::bigint[]) THEN now() ELSE acked_at END
        WHERE id = ANY(%s::bigint[])
        """,
        (list(acked), list(acked), list(tried)),
    )


_PRUNE_OLD_REJECTS = "DELETE FROM rejects WHERE received_at < now() - make_interval(days => %s)"
# A site's share is kept per registered site (and for the gateways' own
# rejects): a flood on one site's topics cannot push another site's out. Every
# other reject (a topic naming no site, or a site nobody registered: a name a
# publisher made up) shares one share, so made-up names cannot grow the table.
_OWN_SHARE = "(r.site_id = %(gateway)s OR r.site_id IN (SELECT id FROM sites))"
_PRUNE_SURPLUS_REJECTS = f"""
WITH crowded AS (
    SELECT r.site_id FROM rejects r WHERE {_OWN_SHARE}
    GROUP BY r.site_id HAVING count(*) > %(cap)s
), cutoff AS (
    SELECT c.site_id, (SELECT r.id FROM rejects r WHERE r.site_id = c.site_id
                       ORDER BY r.id DESC OFFSET %(cap)s LIMIT 1) AS id
    FROM crowded c
)
DELETE FROM rejects r USING cutoff x WHERE r.site_id = x.site_id AND r.id <= x.id
"""
_PRUNE_SURPLUS_STRAY_REJECTS = f"""
DELETE FROM rejects r
WHERE NOT coalesce({_OWN_SHARE}, false)
  AND r.id <= (SELECT r.id FROM rejects r WHERE NOT coalesce({_OWN_SHARE}, false)
               ORDER BY r.id DESC OFFSET %(cap)s LIMIT 1)
"""


def prune_rejects_sync(conn: psycopg.Connection[Any], *, max_age_days: int, per_site: int) -> int:
    """Drop rejects older than the retention, and the oldest past `per_site` per site."""
    dropped = conn.execute(_PRUNE_OLD_REJECTS, (max_age_days,)).rowcount
    share = {"cap": per_site, "gateway": GATEWAY_SITE}
    dropped += conn.execute(_PRUNE_SURPLUS_REJECTS, share).rowcount
    return dropped + conn.execute(_PRUNE_SURPLUS_STRAY_REJECTS, share).rowcount


async def write_stats(conn: AsyncConn, row: Mapping[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO ingest_stats (at, instance, messages, readings, events, rejects, duplicates,
            seq_gaps, batches, batch_latency_ms, queue_depth, lag_ms, broker_connected,
            backend_pid, shards, shard_stats, takeovers)
        VALUES (%(at)s, %(instance)s, %(messages)s, %(readings)s, %(events)s, %(rejects)s,
            %(duplicates)s, %(seq_gaps)s, %(batches)s, %(batch_latency_ms)s, %(queue_depth)s,
            %(lag_ms)s, %(broker_connected)s, %(backend_pid)s, %(shards)s, %(shard_stats)s,
            %(takeovers)s)
        ON CONFLICT DO NOTHING
        """,
        dict(row),
    )
