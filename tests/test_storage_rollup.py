"""The 1-minute rollup: the numpy kernel against an obvious loop, and
`telemetry_1m` against a GROUP BY over the stored rows (both flavours)."""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql

from firesafe.settings import Settings
from storage.rollup import rollup_minutes
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

W = 3  # reading columns in the generated data


Expected = dict[tuple[int, int], tuple[int, list[tuple[float, float, float, int]]]]


def naive(slot: list[int], ts: list[int], values: list[list[float]]) -> Expected:
    groups: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
    for s, t, v in zip(slot, ts, values, strict=True):
        groups[(s, (t // 60_000) * 60_000)].append(v)
    out = {}
    for key, rows in groups.items():
        cols = []
        for i in range(W):
            present = [r[i] for r in rows if not math.isnan(r[i])]
            cols.append(
                (
                    min(present, default=math.nan),
                    max(present, default=math.nan),
                    sum(present),
                    len(present),
                )
            )
        out[key] = (len(rows), cols)
    return out


readings = st.one_of(st.just(math.nan), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5), st.integers(0, 600_000), st.lists(readings, min_size=W, max_size=W)
        ),
        max_size=60,
    )
)
def test_rollup_kernel_matches_a_loop(rows: list[tuple[int, int, list[float]]]) -> None:
    slot = np.array([r[0] for r in rows], dtype=np.int64)
    ts = np.array([r[1] for r in rows], dtype=np.int64)
    values = np.array([r[2] for r in rows], dtype=np.float64).reshape(-1, W)
    got = rollup_minutes(slot, ts, values)
    expected = naive(slot.tolist(), ts.tolist(), values.tolist())
    assert len(got.slot) == len(expected)
    for j, (s, b) in enumerate(zip(got.slot.tolist(), got.bucket_ms.tolist(), strict=True)):
        samples, cols = expected[(s, b)]
        assert got.samples[j] == samples
        for i, (lo, hi, total, n) in enumerate(cols):
            assert got.count[j, i] == n
            assert math.isclose(got.total[j, i], total, rel_tol=1e-9, abs_tol=1e-6)
            if n:
                assert (got.minimum[j, i], got.maximum[j, i]) == (lo, hi)
            else:
                assert math.isnan(got.minimum[j, i])
                assert math.isnan(got.maximum[j, i])


@pytest.mark.integration
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
    rolled = query(
        db,
        f"""SELECT device_id, bucket, samples, {agg_cols} FROM telemetry_1m
                           WHERE device_id LIKE %s ORDER BY 1, 2""",
        (f"{site}-%",),
    )
    assert len(raw) >= 9
    assert rolled == raw, flavour
