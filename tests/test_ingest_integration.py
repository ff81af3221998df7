"""Ingest against the real broker and database: every topic and kind of the
contract, gateway batches, duplicates, reordering, bad input, restarts."""

from __future__ import annotations

import signal
import time

import orjson
import pytest

from firesafe.settings import Settings
from tests.helpers import (
    Publisher,
    create_session,
    drain,
    ingest_process,
    query,
    register,
    running_ingest,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.integration


def devices(site: str) -> list[dict[str, object]]:
    base = {"site": site, "building": "B1", "floor": "1"}
    return [
        {**base, "id": f"{site}-smoke", "zone": "Z1", "kind": "smoke"},
        {**base, "id": f"{site}-heat", "zone": "Z1", "kind": "heat"},
        {**base, "id": f"{site}-multi", "zone": "Z2", "kind": "multi"},
        {**base, "id": f"{site}-mcp", "zone": "Z2", "kind": "mcp"},
        {**base, "id": f"{site}-elec", "zone": "Z3", "kind": "electrical"},
        {
            **base,
            "id": f"{site}-evac",
            "zone": "Z3",
            "kind": "evac",
            "routes": {"left": "Z1", "right": "Z2"},
        },
    ]


READINGS = {
    "smoke": {"obscuration": 0.2, "temperature": 21.5},
    "heat": {"temperature": 22.25},
    "multi": {"obscuration": 0.1, "temperature": 21.0, "co": 1.5, "humidity": 45.0},
    "mcp": {},
    "electrical": {
        "residual_current": 12.0,
        "cable_temperature": 30.5,
        "current": 8.0,
        "voltage": 230.0,
    },
    "evac": {"battery": 98.0, "mains": 1, "lamp_ok": 1},
}
EVENTS = {
    "smoke": "fault",
    "heat": "restore",
    "multi": "fault",
    "mcp": "reset",
    "electrical": "fault",
    "evac": "self_test_pass",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def count(db: str, sql: str, *params: object) -> int:
    return int(query(db, sql, params)[0][0])


def test_every_kind_and_topic_is_stored(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, devices(site))
    t0 = now_ms()
    with running_ingest(ingest_settings):
        for i, d in enumerate(devices(site)):
            kind = str(d["kind"])
            publisher.send(
                f"fs/v1/{site}/{d['id']}/telemetry", {"ts": t0 + i, "seq": 1, "v": READINGS[kind]}
            )
            publisher.send(
                f"fs/v1/{site}/{d['id']}/event",
                {"ts": t0 + i + 1, "seq": 2, "type": EVENTS[kind], "detail": "test"},
            )
            publisher.send(f"fs/v1/{site}/{d['id']}/status", "online", retain=True)
        publisher.send(
            f"fs/v1/{site}/gateway/GW1/batch",
            {
                "ts": t0 + 100,
                "readings": [
                    {"device": f"{site}-smoke", "ts": t0 + 50, "seq": 3, "v": {"obscuration": 0.3}},
                    {"device": f"{site}-heat", "ts": t0 + 51, "seq": 3, "v": {"temperature": 23.0}},
                ],
            },
        )
        wait_for(
            lambda: (
                count(db, "SELECT count(*) FROM telemetry WHERE device_id LIKE %s", f"{site}-%")
                == 8
            )
        )
        wait_for(
            lambda: (
                count(db, "SELECT count(*) FROM device_events WHERE device_id LIKE %s", f"{site}-%")
                == 6
            )
        )
        # device_state is folded in every few seconds
        wait_for(
            lambda: (
                count(
                    db,
                    "SELECT count(*) FROM device_state WHERE device_id LIKE %s "
                    "AND status = 'online'",
                    f"{site}-%",
                )
                == 6
            ),
            timeout=15,
        )
    # Every value comes back exactly as sent.
    for d in devices(site):
        kind = str(d["kind"])
        cols = ", ".join(READINGS[kind]) or "1"
        row = query(
            db, f"SELECT {cols}, seq FROM telemetry WHERE device_id = %s AND seq = 1", (d["id"],)
        )[0]
        assert list(row[:-1]) == [float(v) for v in READINGS[kind].values()] or kind == "mcp"
    kinds = query(
        db,
        "SELECT device_id, type, detail FROM device_events WHERE device_id LIKE %s",
        (f"{site}-%",),
    )
    assert {(r[0].split("-", 1)[1], r[1]) for r in kinds} == {
        ("smoke", "fault"),
        ("heat", "restore"),
        ("multi", "fault"),
        ("mcp", "reset"),
        ("elec", "fault"),
        ("evac", "self_test_pass"),
    }
    assert count(db, "SELECT count(*) FROM rejects WHERE topic LIKE %s", f"fs/v1/{site}/%") == 0
    ts = query(
        db,
        "SELECT ts, received_at FROM telemetry WHERE device_id = %s AND seq = 3",
        (f"{site}-smoke",),
    )[0]
    assert int(ts[0].timestamp() * 1000) == t0 + 50  # event time, to the millisecond


def test_duplicates_are_stored_once_and_reordering_is_kept(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, devices(site))
    dev = f"{site}-smoke"
    t0 = now_ms()
    with running_ingest(ingest_settings):
        reading = {"ts": t0, "seq": 10, "v": {"obscuration": 0.1}}
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", reading)
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", reading)  # same batch or the next
        publisher.send(
            f"fs/v1/{site}/gateway/G/batch", {"ts": t0, "readings": [{"device": dev, **reading}]}
        )  # same key through a gateway
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + 2000, "seq": 12, "v": {}})
        publisher.send(
            f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + 1000, "seq": 11, "v": {}}
        )  # late
        wait_for(lambda: count(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", dev) == 3)
        drain(db, publisher, site)  # everything above committed
        # and once more after everything was committed
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", reading)
        wait_for(
            lambda: (
                count(db, "SELECT duplicates FROM device_state WHERE device_id = %s", dev) >= 3
                if query(db, "SELECT 1 FROM device_state WHERE device_id = %s", (dev,))
                else False
            )
        )
    seqs = [
        r[0]
        for r in query(db, "SELECT seq FROM telemetry WHERE device_id = %s ORDER BY ts", (dev,))
    ]
    assert seqs == [10, 11, 12]
    state = query(
        db, "SELECT seq_gaps, out_of_order, last_seq FROM device_state WHERE device_id = %s", (dev,)
    )[0]
    # 11 was missing when 12 came (a gap: the counter never goes back, whatever
    # the batch cuts), then came late (reordering), and 12 stays the newest.
    assert state == (1, 1, 12)


def test_seq_gaps_are_counted(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, devices(site))
    dev = f"{site}-heat"
    t0 = now_ms()
    with running_ingest(ingest_settings):
        for i, seq in enumerate([1, 2, 5, 6, 10]):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": seq, "v": {}})
        wait_for(
            lambda: (
                query(db, "SELECT seq_gaps FROM device_state WHERE device_id = %s", (dev,))
                == [(5,)]
            )
        )


BAD = [
    ("telemetry", b"{not json", "invalid_json"),
    ("telemetry", orjson.dumps({"seq": 1, "v": {}}), "missing_ts"),
    ("telemetry", orjson.dumps({"ts": 1, "seq": 1, "v": {"obscuration": "x"}}), "bad_value"),
    ("telemetry", orjson.dumps({"ts": 1, "seq": 1, "v": {"obscuration": None}}), "bad_value"),
    ("telemetry", b'{"ts": 1, "seq": 1, "v": {"temperature": 1e999}}', "invalid_json"),
    ("telemetry", b'{"ts":1,"seq":1,"v":{},"x":"' + b"a" * 66000 + b'"}', "too_large"),
    ("telemetry", b"\xff\xfe\x00garbage", "invalid_json"),
]


def test_bad_input_is_kept_and_counted_and_the_rest_stored(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, devices(site))
    register(
        db,
        [
            {
                "id": f"{site}-other",
                "site": f"{site}x",
                "building": "B",
                "floor": "1",
                "zone": "Z",
                "kind": "heat",
            }
        ],
    )
    dev = f"{site}-multi"
    t0 = now_ms()
    with running_ingest(ingest_settings):
        for i, (what, payload, _) in enumerate(BAD):
            publisher.send(f"fs/v1/{site}/{dev}/{what}", payload)
            publisher.send(
                f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {"co": float(i)}}
            )
        publisher.send(f"fs/v1/{site}/nobody/telemetry", {"ts": t0, "seq": 1, "v": {}})
        publisher.send(f"fs/v1/{site}/{site}-other/telemetry", {"ts": t0, "seq": 1, "v": {}})
        publisher.send(
            f"fs/v1/{site}/gateway/G/batch",
            {
                "ts": t0,
                "readings": [
                    {"device": f"{site}-heat", "ts": t0, "seq": 1, "v": {"temperature": True}},
                    {"device": f"{site}-heat", "ts": t0 + 1, "seq": 2, "v": {"temperature": 20}},
                ],
            },
        )
        publisher.send(f"fs/v1/{site}/{dev}/bogus", b"{}")
        expected = len(BAD) + 4
        wait_for(
            lambda: (
                count(db, "SELECT count(*) FROM rejects WHERE topic LIKE %s", f"fs/v1/{site}/%")
                == expected
            )
        )
        wait_for(
            lambda: (
                count(db, "SELECT count(*) FROM telemetry WHERE device_id LIKE %s", f"{site}-%")
                == len(BAD) + 1
            )
        )
    rows = query(
        db,
        "SELECT topic, reason, payload, detail FROM rejects WHERE topic LIKE %s ORDER BY id",
        (f"fs/v1/{site}/%",),
    )
    reasons = [r[1] for r in rows]
    assert reasons[: len(BAD)] == [b[2] for b in BAD]
    assert sorted(reasons[len(BAD) :]) == sorted(
        ["unknown_device", "site_mismatch", "bad_value", "bad_topic"]
    )
    # Raw bytes kept: whole up to 4 KiB, else the head and the original length.
    assert [bytes(r[2]) for r in rows[: len(BAD)]] == [b[1][:4096] for b in BAD]
    sizes = query(
        db, "SELECT payload_size FROM rejects WHERE topic LIKE %s ORDER BY id", (f"fs/v1/{site}/%",)
    )
    assert [s[0] for s in sizes[: len(BAD)]] == [len(b[1]) for b in BAD]
    assert all(r[3] for r in rows)
    counts = dict(query(db, "SELECT reason, count FROM reject_counts"))
    assert counts["invalid_json"] >= 3
    assert counts["bad_value"] >= 3


@pytest.mark.usefixtures("full_broker")
def test_restart_loses_nothing_and_stores_once(
    db: str, ingest_settings: Settings, publisher: Publisher, site: str
) -> None:
    register(db, devices(site))
    dev = f"{site}-smoke"
    t0 = now_ms()
    with running_ingest(ingest_settings):
        for i in range(50):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
    # Ingest is down: the broker keeps these for its persistent session.
    for i in range(50, 400):
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
    with running_ingest(ingest_settings):
        for i in range(400, 450):
            publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 + i, "seq": i, "v": {}})
        wait_for(
            lambda: count(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", dev) == 450,
            timeout=30,
        )
    assert count(db, "SELECT count(DISTINCT seq) FROM telemetry WHERE device_id = %s", dev) == 450


@pytest.mark.usefixtures("full_broker")
def test_kill_9_between_receipt_and_commit_loses_nothing(
    db: str, ingest_settings: Settings, mqtt_url: str, site: str
) -> None:
    """A real `firesafe ingest` process killed with SIGKILL mid-stream."""
    register(db, devices(site))
    dev = f"{site}-heat"
    total = 600
    t0 = now_ms()
    create_session(mqtt_url, ingest_settings.mqtt_client_id)
    proc = ingest_process(ingest_settings)
    publisher = Publisher(mqtt_url)
    try:
        publisher.send(f"fs/v1/{site}/{dev}/telemetry", {"ts": t0 - 1, "seq": 0, "v": {}})
        wait_for(
            lambda: count(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", dev) == 1,
            timeout=30,
        )
        for i in range(1, total):
            publisher.send(
                f"fs/v1/{site}/{dev}/telemetry",
                {"ts": t0 + i, "seq": i, "v": {"temperature": 20.0}},
                qos=1,
            )
            if i == total // 2:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        proc = ingest_process(ingest_settings)
        wait_for(
            lambda: count(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", dev) == total,
            timeout=40,
        )
        drain(db, publisher, site)  # redeliveries after the restart were committed too
        assert count(db, "SELECT count(*) FROM telemetry WHERE device_id = %s", dev) == total
    finally:
        publisher.close()
        returncode = stop_process(proc)
    assert returncode == 0
