"""Alarms, roles and sites, keyset pagination under concurrent inserts, and the SSE stream."""

from __future__ import annotations

import queue
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.test_api_support import (
    ADMIN_TOKEN,
    client,
    device,
    insert_alarm,
    live_server,
    make_token,
    register,
)

# Short heartbeats so the stream test sees one quickly.
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url, heartbeat_s=HEARTBEAT_S) as url:
        yield url


@pytest.fixture
def estate(api_url: str, db: str) -> dict[str, str]:
    """Two sites, a device and an open fire alarm on each, rejects on each; role tokens."""
    with client(api_url) as api:
        register(api, device("D1", site="S1"), device("D2", site="S2"))
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="A1", device="D1", site="S1")
        insert_alarm(conn, id="A2", device="D2", site="S2")
        for site in ("S1", "S2"):
            conn.execute(
                "INSERT INTO rejects (received_at, topic, reason, payload) "
                "VALUES (now(), %s, 'invalid_json', 'x')",
                (f"fs/v1/{site}/X/telemetry",),
            )
    return {
        "admin": ADMIN_TOKEN,
        "operator": make_token(api_url, "operator", name="op-ann"),
        "manager": make_token(api_url, "manager", ["S1"], name="mgr-bob"),
    }


# --- roles x endpoints -------------------------------------------------------------

OK, FORBIDDEN = 200, 403
ALL_OK = {"admin": OK, "operator": OK, "manager": OK}
OWN_SITE_ONLY = {"admin": OK, "operator": OK, "manager": FORBIDDEN}
ADMIN_ONLY = {"admin": OK, "operator": FORBIDDEN, "manager": FORBIDDEN}

MATRIX: list[tuple[str, str, Any, dict[str, int]]] = [
    ("GET", "/api/v1/devices/D1", None, ALL_OK),
    ("GET", "/api/v1/devices/D2", None, OWN_SITE_ONLY),
    ("GET", "/api/v1/devices/D1/telemetry", None, ALL_OK),
    ("GET", "/api/v1/devices/D2/telemetry", None, OWN_SITE_ONLY),
    ("GET", "/api/v1/devices/D2/telemetry?bucket=1h", None, OWN_SITE_ONLY),
    ("POST", "/api/v1/devices", device("D3", site="S1"), ADMIN_ONLY),
    ("GET", "/api/v1/alarms/A1", None, ALL_OK),
    ("GET", "/api/v1/alarms/A2", None, OWN_SITE_ONLY),
    ("POST", "/api/v1/alarms/A1/ack", {"note": "on it"}, ALL_OK),
    ("POST", "/api/v1/alarms/A2/ack", {"note": "on it"}, OWN_SITE_ONLY),
    ("POST", "/api/v1/alarms/A1/clear", {"note": "false alarm"}, ADMIN_ONLY | {"operator": OK}),
    ("POST", "/api/v1/alarms/A2/clear", None, ADMIN_ONLY | {"operator": OK}),
    ("GET", "/api/v1/sites/S1/summary", None, ALL_OK),
    ("GET", "/api/v1/sites/S2/summary", None, OWN_SITE_ONLY),
    ("GET", "/metrics", None, ADMIN_ONLY | {"operator": OK}),
    ("POST", "/api/v1/tokens", {"role": "operator", "name": "x"}, ADMIN_ONLY | {"admin": 201}),
    ("GET", "/api/v1/tokens", None, ADMIN_ONLY),
]


@pytest.mark.parametrize("role", ["admin", "operator", "manager"])
@pytest.mark.parametrize(
    ("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
def test_role_matrix(
    api_url: str,
    estate: dict[str, str],
    role: str,
    method: str,
    path: str,
    body: Any,
    expected: dict[str, int],
) -> None:
    with client(api_url, token=estate[role]) as api:
        response = api.request(method, path, json=body)
    assert response.status_code == expected[role], response.text
    if response.status_code == FORBIDDEN:
        assert response.json()["error"]["code"] == "forbidden"
        assert "alarm" not in response.json()["error"]  # no row leaks into the error


@pytest.mark.parametrize("role", ["admin", "operator", "manager"])
def test_lists_show_only_the_callers_sites(api_url: str, estate: dict[str, str], role: str) -> None:
    everything = role != "manager"
    with client(api_url, token=estate[role]) as api:
        devices = {d["id"] for d in api.get("/api/v1/devices").json()["items"]}
        alarms = {a["id"] for a in api.get("/api/v1/alarms").json()["items"]}
        other = api.get("/api/v1/alarms", params={"site": "S2"}).json()["items"]
        rejects = {r["topic"] for r in api.get("/api/v1/rejects").json()["items"]}
        sites = {s["site"] for s in api.get("/api/v1/sites").json()["items"]}
        offline = api.get("/api/v1/devices", params={"site": "S2"}).json()["items"]
    assert devices == ({"D1", "D2"} if everything else {"D1"})
    assert alarms == ({"A1", "A2"} if everything else {"A1"})
    assert len(other) == (1 if everything else 0)
    assert len(offline) == (1 if everything else 0)
    assert rejects == (
        {"fs/v1/S1/X/telemetry", "fs/v1/S2/X/telemetry"} if everything else {"fs/v1/S1/X/telemetry"}
    )
    assert sites == ({"S1", "S2"} if everything else {"S1"})


def test_revoked_token_is_refused(api_url: str, estate: dict[str, str]) -> None:
    with client(api_url) as admin:
        created = admin.post(
            "/api/v1/tokens", json={"role": "manager", "sites": ["S1"], "name": "temp"}
        ).json()
        with client(api_url, token=created["token"]) as temp:
            assert temp.get("/api/v1/alarms").status_code == 200
            assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
            assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 204
            assert temp.get("/api/v1/alarms").status_code == 401
        assert admin.delete("/api/v1/tokens/no-such-token").status_code == 404
        bad = admin.post("/api/v1/tokens", json={"role": "manager", "sites": [], "name": "m"})
        assert bad.status_code == 422


# --- alarms --------------------------------------------------------------------------


def test_ack_and_clear_are_recorded_once(api_url: str, estate: dict[str, str], db: str) -> None:
    with client(api_url, token=estate["manager"]) as manager:
        first = manager.post("/api/v1/alarms/A1/ack", json={"note": "looking"})
        again = manager.post("/api/v1/alarms/A1/ack", json={"note": "still looking"})
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "acknowledged"
    assert first.json()["acknowledged_by"] == "mgr-bob"
    with client(api_url, token=estate["operator"]) as operator:
        cleared = operator.post("/api/v1/alarms/A1/clear", json={"note": "steam"})
        assert operator.post("/api/v1/alarms/A1/clear").status_code == 200
        late_ack = operator.post("/api/v1/alarms/A1/ack")
        detail = operator.get("/api/v1/alarms/A1").json()
    assert cleared.json()["status"] == "cleared"
    assert cleared.json()["cleared_by"] == "op-ann"
    assert cleared.json()["cleared_at"] is not None
    assert late_ack.status_code == 409
    assert [(e["action"], e["actor"], e["note"]) for e in detail["log"]] == [
        ("opened", "system", None),
        ("acknowledged", "mgr-bob", "looking"),
        ("cleared", "op-ann", "steam"),
    ]
    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT count(*) FROM alarm_log WHERE alarm_id = 'A1'").fetchone()
    assert row is not None
    (count,) = row
    assert count == 3
    with client(api_url) as admin:
        assert admin.post("/api/v1/alarms/NOPE/ack").status_code == 404


def test_alarm_detail_has_evidence(
    api_url: str, estate: dict[str, str], db: str, flavour: str
) -> None:
    from tests.test_api_support import insert_telemetry

    with psycopg.connect(db) as conn:
        row = conn.execute("SELECT opened_at FROM alarms WHERE id = 'A1'").fetchone()
    assert row is not None
    (opened,) = row
    insert_telemetry(
        db,
        flavour,
        "D1",
        [
            (opened - timedelta(minutes=10), 1, {"obscuration": 0.1}),
            (opened - timedelta(seconds=30), 2, {"obscuration": 2.0}),
            (opened, 3, {"obscuration": 4.0}),
        ],
    )
    with client(api_url) as api:
        detail = api.get("/api/v1/alarms/A1").json()
    assert [r["seq"] for r in detail["evidence"]["readings"]] == [2, 3]
    assert detail["type"] == "fire"
    assert detail["site"] == "S1"


def test_alarm_filters(api_url: str, estate: dict[str, str], db: str) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="F1", device="D1", type="fault", verdict="confirmed", opened_at=base)
        insert_alarm(
            conn,
            id="F2",
            device="D1",
            type="offline",
            verdict="confirmed",
            status="cleared",
            opened_at=base + timedelta(hours=1),
        )
    with client(api_url) as api:

        def ids(**params: Any) -> list[str]:
            response = api.get("/api/v1/alarms", params=params)
            assert response.status_code == 200, response.text
            return [a["id"] for a in response.json()["items"]]

        assert ids(type="fault") == ["F1"]
        assert ids(status="cleared") == ["F2"]
        assert ids(verdict="confirmed") == ["F2", "F1"]
        assert ids(device="D1", since="2026-01-01T00:30:00Z") == ["A1", "F2"]
        assert ids(until=str(int((base + timedelta(minutes=1)).timestamp() * 1000))) == ["F1"]
        assert ids(site="S1", zone="Z1", building="B1") == ["A1", "F2", "F1"]
        bad = api.get("/api/v1/alarms", params={"status": "open"})
        assert bad.status_code == 422
        assert "status" in bad.json()["error"]["message"]
        offline = api.get("/api/v1/devices", params={"state": "offline"}).json()["items"]
        assert offline == []  # F2 is cleared


def test_pagination_never_skips_or_repeats_under_concurrent_inserts(
    api_url: str, estate: dict[str, str], db: str
) -> None:
    rng = random.Random(7)
    base = datetime.now(UTC) - timedelta(days=1)
    # Many alarms share an opened_at: the id must break ties.
    with psycopg.connect(db, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY alarms (id, device_id, site_id, building, floor, zone, type, verdict, status, "
            "reason, opened_at) FROM STDIN"
        ) as copy:
            for i in range(400):
                copy.write_row(
                    (
                        f"P{i:04d}",
                        "D1",
                        "S1",
                        "B1",
                        "1",
                        "Z1",
                        "pre_alarm",
                        "pending",
                        "cleared",
                        "transient",
                        base + timedelta(seconds=rng.randrange(60)),
                    )
                )
        rows = conn.execute("SELECT id FROM alarms WHERE site_id = 'S1'").fetchall()
        existing = {row[0] for row in rows}
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(db, autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                # Newer, older and tied opened_at values, all while we page.
                at = base + timedelta(seconds=rng.randrange(-30, 90))
                insert_alarm(
                    conn,
                    id=f"N{n:05d}",
                    device="D1",
                    type="pre_alarm",
                    status="cleared",
                    opened_at=at,
                )
                n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen: list[str] = []
        cursor = None
        with client(api_url) as api:
            while True:
                params: dict[str, Any] = {"limit": 17, "site": "S1"}
                if cursor:
                    params["cursor"] = cursor
                page = api.get("/api/v1/alarms", params=params).json()
                seen += [a["id"] for a in page["items"]]
                keys = [(a["opened_at"], a["id"]) for a in page["items"]]
                assert keys == sorted(keys, reverse=True)
                cursor = page["next_cursor"]
                if cursor is None:
                    break
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "a row was repeated"
    assert existing <= set(seen), f"skipped {sorted(existing - set(seen))[:5]}"


# --- live stream -------------------------------------------------------------------------


def _read_stream(
    url: str,
    token: str,
    events: queue.Queue[Any],
    stop: threading.Event,
    headers: dict[str, str] | None = None,
) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=5)) as http,
        http.stream(
            "GET", url, headers={"Authorization": f"Bearer {token}", **(headers or {})}
        ) as response,
    ):
        events.put(("status", response.status_code, response.headers.get("content-type")))
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith(":"):
                events.put(("heartbeat",))
            elif line.startswith("retry:"):
                events.put(("ready",))
            elif line == "" and event:
                events.put(("event", event["id"], orjson.loads(event["data"])))
                event = {}
            elif ": " in line:
                key, value = line.split(": ", 1)
                event[key] = value


def _collect(events: queue.Queue[Any], want: int, timeout: float = 10) -> list[Any]:
    got: list[Any] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout)
    while len(got) < want and datetime.now(UTC) < deadline:
        try:
            item = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if item[0] == "event":
            got.append(item)
    return got


def test_stream_delivers_alarm_changes_for_the_callers_sites(
    api_url: str, estate: dict[str, str], db: str
) -> None:
    events: queue.Queue[Any] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_stream,
        args=(f"{api_url}/api/v1/alarms/stream", estate["manager"], events, stop),
        daemon=True,
    )
    reader.start()
    assert events.get(timeout=10) == ("status", 200, "text/event-stream; charset=utf-8")
    assert events.get(timeout=10) == ("ready",)
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="LIVE2", device="D2", site="S2", type="fault", verdict="confirmed")
        insert_alarm(conn, id="LIVE1", device="D1", site="S1", type="fault", verdict="confirmed")
    with client(api_url, token=estate["operator"]) as operator:
        assert operator.post("/api/v1/alarms/LIVE1/ack", json={"note": "seen"}).status_code == 200
    got = _collect(events, 2)
    assert [(e[2]["alarm"]["id"], e[2]["action"]) for e in got] == [
        ("LIVE1", "opened"),
        ("LIVE1", "acknowledged"),
    ]
    assert got[1][2]["actor"] == "op-ann"
    assert got[1][2]["alarm"]["status"] == "acknowledged"
    heartbeat_deadline = datetime.now(UTC) + timedelta(seconds=5)
    while datetime.now(UTC) < heartbeat_deadline:
        if events.get(timeout=5)[0] == "heartbeat":
            break
    else:
        pytest.fail("no heartbeat")
    stop.set()

    # Resume from the first event: only what came after it, still filtered.
    resumed: queue.Queue[Any] = queue.Queue()
    stop2 = threading.Event()
    threading.Thread(
        target=_read_stream,
        args=(
            f"{api_url}/api/v1/alarms/stream?type=fault",
            estate["manager"],
            resumed,
            stop2,
            {"Last-Event-ID": got[0][1]},
        ),
        daemon=True,
    ).start()
    replay = _collect(resumed, 1)
    stop2.set()
    assert [(e[2]["alarm"]["id"], e[2]["action"]) for e in replay] == [("LIVE1", "acknowledged")]


def test_a_last_event_id_that_is_no_log_id_is_a_422(api_url: str) -> None:
    """An outside check: `Last-Event-ID: -1` replayed every change; `+5` and
    `1_0` passed int() as well."""

    with client(api_url) as api:

        def error(value: bytes, lang: str) -> dict[str, str]:
            headers = {b"Last-Event-ID": value, b"Accept-Language": lang.encode()}
            with api.stream("GET", "/api/v1/alarms/stream", headers=headers) as response:
                assert response.status_code == 422, value  # (not a stream: read no further)
                found: dict[str, str] = orjson.loads(response.read())["error"]
                return found

        for text in ["-1", "+5", "1_0", "1.0", "x", "9223372036854775808", "٣"]:
            value = text.encode()
            en = error(value, "en")
            assert en["code"] == "invalid_parameter"
            assert en["message"] == (
                "header parameter 'Last-Event-ID': must be an alarm_log id (a non-negative integer)"
            )
        zh = error(b"-1", "zh-CN")["message"]
        assert zh == "请求头 'Last-Event-ID'：应为 alarm_log 的 id（非负整数）"
