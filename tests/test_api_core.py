"""Health, devices, telemetry and rejects against the real database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from api.params import encode_cursor
from storage.shards import SHARD_LOCK_CLASS
from tests.helpers import query, wait_for
from tests.test_api_support import (
    ISO_MS,
    client,
    device,
    insert_telemetry,
    live_server,
    register,
)


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


@pytest.fixture
def api(api_url: str, db: str) -> Iterator[object]:
    with client(api_url) as c:
        yield c


def _ingest_report(
    dsn: str,
    *,
    age_s: float,
    connected: bool = True,
    lag_ms: float = 12.5,
    instance: str = "ingest-1",
    backend_pid: int | None = None,
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ingest_stats (at, instance, messages, readings, events, rejects, "
            "duplicates, seq_gaps, batches, batch_latency_ms, queue_depth, lag_ms, "
            "broker_connected, backend_pid) VALUES (now() - make_interval(secs => %s), %s, "
            "10, 9, 1, 0, 0, 0, 3, 4.5, 7, %s, %s, %s)",
            (age_s, instance, lag_ms, connected, backend_pid),
        )


def _hold_every_shard(holder: psycopg.Connection[Any]) -> int:
    """Take every shard's lease on this session, as an ingest process would; the count."""
    row = holder.execute("SELECT value FROM firesafe_meta WHERE key = 'shards'").fetchone()
    assert row is not None
    count = int(row[0])
    for k in range(count):
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (SHARD_LOCK_CLASS, k))
    return count


# --- health -------------------------------------------------------------------


def test_health_without_ingest_is_degraded(api_url: str, db: str, flavour: str) -> None:
    with client(api_url, token=None) as anonymous:
        response = anonymous.get("/health")
        probe = anonymous.head("/health")  # uptime probes and load balancers
    assert probe.status_code == 200
    assert probe.content == b""
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is True
    assert body["database"]["flavour"] == flavour
    assert body["ingest"]["state"] == "absent"
    assert body["broker"]["connected"] is None
    assert "ingest" in body["problems"]  # why, without reading every part


def test_health_reports_fresh_ingest(api_url: str, db: str) -> None:
    _ingest_report(db, age_s=60)
    _ingest_report(db, age_s=1, lag_ms=42.0)
    with psycopg.connect(db, autocommit=True) as holder:  # an ingest holds every shard
        count = _hold_every_shard(holder)
        with client(api_url, token=None) as anonymous:
            body = anonymous.get("/health").json()
        with client(api_url) as admin:
            detailed = admin.get("/health").json()
        assert body["shards"]["owned"] == count
        # Which process holds them (host names, pids): staff only.
        assert body["shards"]["processes"] == []
        assert detailed["shards"]["processes"][0]["shards"] == list(range(count))
    # ok, unless the database's own background jobs fail (TimescaleDB 2.28.3 on
    # PostgreSQL 15.20 cannot run any: /health must say so).
    assert body["status"] == ("degraded" if body["failed_jobs"] else "ok")
    assert body["problems"] == (["failed_jobs"] if body["failed_jobs"] else [])
    assert body["broker"]["connected"] is True
    assert body["ingest"]["state"] == "ok"
    assert body["ingest"]["lag_ms"] == 42.0
    assert body["ingest"]["queue_depth"] == 7
    assert re.match(ISO_MS, body["ingest"]["last_report_at"])


def _health_with_ingest_fine(api_url: str, db: str, *, staff: bool = False) -> dict[str, Any]:
    """/health, anonymous (or with the admin token), with ingest reporting and
    every shard held."""
    _ingest_report(db, age_s=0)
    with psycopg.connect(db, autocommit=True) as holder:
        _hold_every_shard(holder)
        with client(api_url, **({} if staff else {"token": None})) as caller:
            return dict(caller.get("/health").json())


def test_health_says_when_notifications_do_not_leave(api_url: str, db: str, site: str) -> None:
    """A rule and no notifier running, or a notification overdue: alarms are not
    reaching people, and /health says so (everything else fine)."""
    from tests.helpers import query
    from tests.test_notify_support import add_rule, add_target, call_point, transition, write_alarms

    def health() -> dict[str, Any]:
        return _health_with_ingest_fine(api_url, db)

    def fine_but_for_notifications(body: dict[str, Any]) -> str:
        return "degraded" if body["failed_jobs"] else "ok"

    body = health()
    assert body["notifications"] == {
        "notifiers": 0,
        "rules": 0,
        "overdue": 0,
        "oldest_overdue_s": None,
        "failing": 0,
    }
    assert body["status"] == fine_but_for_notifications(body)  # no rule: none needed
    add_target(db, f"{site}-duty", url="http://127.0.0.1:9/duty")
    add_rule(db, f"{site}-fires", types=["fire"], targets=[f"{site}-duty"])
    try:
        body = health()
        assert body["notifications"]["rules"] == 1
        assert body["status"] == "degraded"  # a rule, and nobody to deliver
        with psycopg.connect(db, autocommit=True, application_name="firesafe-notify:test"):
            body = health()
            assert body["notifications"]["notifiers"] == 1
            assert body["status"] == fine_but_for_notifications(body)
            call_point(db, f"{site}-M1", site)
            write_alarms(db, transition(f"{site}-M1", site))  # queued for the rule's target
            query(
                db,
                "UPDATE notifications SET next_attempt_at = now() - interval '5 minutes' "
                "RETURNING id",
            )
            body = health()
            assert body["notifications"]["overdue"] == 1
            assert body["notifications"]["oldest_overdue_s"] >= 299
            assert body["status"] == "degraded"  # a notifier that does not deliver
            # Being delivered (claimed: its attempt counted, no outcome yet) is
            # neither overdue nor failing.
            query(
                db,
                "UPDATE notifications SET attempts = 1, lease_until = now() + interval '30 s' "
                "RETURNING id",
            )
            body = health()
            assert (body["notifications"]["overdue"], body["notifications"]["failing"]) == (0, 0)
            assert body["status"] == fine_but_for_notifications(body)
            # ... unless its notifier stopped renewing the claim long ago and no
            # other took it back (every notifier frozen, still connected).
            query(
                db,
                "UPDATE notifications SET lease_until = now() - interval '2 minutes' RETURNING id",
            )
            body = health()
            assert body["notifications"]["overdue"] == 1
            assert body["notifications"]["oldest_overdue_s"] >= 119
            assert body["status"] == "degraded"
            # Tried and failed: its target refuses it (the notifier is working); the
            # transitions queued behind it for that target wait, and are not overdue.
            query(
                db,
                "UPDATE notifications SET attempts = 3, lease_until = NULL, last_status = 503, "
                "last_error = 'HTTP 503' RETURNING id",
            )
            write_alarms(db, transition(f"{site}-M1", site, action="clear", reason="reset"))
            query(
                db,
                "UPDATE notifications SET next_attempt_at = now() - interval '5 minutes' "
                "WHERE attempts = 0 RETURNING id",
            )
            body = health()
            assert body["notifications"]["overdue"] == 0
            assert body["notifications"]["failing"] == 1
            assert body["status"] == "degraded"  # alarms do not reach that target
    finally:
        query(db, "DELETE FROM notifications RETURNING id")
        query(db, "DELETE FROM notify_rules WHERE id = %s RETURNING id", (f"{site}-fires",))
        query(db, "DELETE FROM notify_targets WHERE id = %s RETURNING id", (f"{site}-duty",))


def test_health_says_when_an_unregistered_device_reports_a_fire(api_url: str, db: str) -> None:
    """A fire panel or detector nobody registered (or under another site) gets
    only a reject: /health says so, counts them and names the latest."""
    from tests.helpers import query

    def health() -> dict[str, Any]:
        return _health_with_ingest_fine(api_url, db)

    def reject(topic: str, reason: str, payload: bytes, detail: str, age: str = "1 s") -> None:
        query(
            db,
            "INSERT INTO rejects (received_at, topic, reason, payload, detail) "
            "VALUES (now() - %s::interval, %s, %s, %s, %s) RETURNING id",
            (age, topic, reason, payload, detail),
        )

    body = health()
    assert body["unregistered_fires"]["count"] == 0
    fine = "degraded" if body["failed_jobs"] else "ok"
    assert body["status"] == fine
    # Not unregistered fires: an unknown device's reading, an hour-old panel fire, a
    # bad event (unreadable: see the end).
    reject("fs/v1/S1/X1/telemetry", "unknown_device", b'{"ts": 1}', "device X1 is not registered")
    old = "source address 0000000000AA is not registered: ...; it carries FIRE ALARMS: point 1/1/1"
    reject("fs/v1/_gateway/gb26875/reject", "unknown_device", b"@@", old, age="2 hours")
    reject("fs/v1/S1/X1/event", "bad_value", b'{"type": "fire_alarm"}', "ts missing")
    assert health()["unregistered_fires"]["count"] == 0
    panel = (
        "source address 0000000000BB is not registered: ...; it carries FIRE ALARMS: point 1/1/2"
    )
    reject("fs/v1/_gateway/gb26875/reject", "unknown_device", b"@@", panel, age="10 s")
    reject("fs/v1/S2/M9/event", "site_mismatch", b'{"type":"activated","ts":1}', "site S1")
    body = health()
    assert body["status"] == "degraded"
    assert "unregistered_fires" in body["problems"]
    assert body["unregistered_fires"]["count"] == 2
    # Without a token, nothing names a site or a device (an outside check read
    # another site's device off the topic).
    assert body["unregistered_fires"]["last_topic"] == "(shown with a token)"
    assert body["unregistered_fires"]["last_detail"] == "(shown with a token)"
    staff = _health_with_ingest_fine(api_url, db, staff=True)["unregistered_fires"]
    assert (staff["last_topic"], staff["last_detail"]) == ("fs/v1/S2/M9/event", "site S1")
    # The bad `fire_alarm` event above raised none either: it is an unreadable one.
    assert body["unreadable_fires"]["count"] == 1


def test_health_says_when_a_registered_devices_fire_alarm_was_bad_input(
    api_url: str, db: str
) -> None:
    """An outside check pressed a registered call point whose firmware sent `ts` in
    seconds (and, again, no `seq`, and "Activated"): three rejects, no alarm, and
    /health stayed ok. A fire alarm that raised none is counted as unreadable;
    a registered device's ordinary bad input is not."""
    from tests.helpers import query

    def reject(topic: str, reason: str, payload: bytes, detail: str) -> None:
        query(
            db,
            "INSERT INTO rejects (received_at, topic, reason, payload, detail, device_id) "
            "VALUES (now() - interval '1 s', %s, %s, %s, %s, 'CP3') RETURNING id",
            (topic, reason, payload, detail),
        )

    reject("fs/v1/S1/CP3/telemetry", "bad_value", b'{"ts": 1796650738}', "`ts` 1796650738 ...")
    reject("fs/v1/S1/CP3/event", "bad_payload", b'{"type": "reset"}', "no seq")
    body = _health_with_ingest_fine(api_url, db)
    assert body["unreadable_fires"]["count"] == 0
    reject("fs/v1/S1/CP3/event", "bad_value", b'{"ts": 1796650738, "type": "activated"}', "ts")
    reject("fs/v1/S1/CP3/event", "bad_payload", b'{"seq": 1, "type": "Activated"}', "type")
    reject("fs/v1/S1/SD3/event", "bad_payload", b'{"seq": 2, "type": "fire alarm"}', "type")
    reject("fs/v1/S1/SD3/event", "bad_payload", b'{"seq": 3, "type": "ACTIVATED "}', "type")
    panel = "points beyond the limit; it carries FIRE ALARMS: point 1/1/9, NOT RAISED"
    reject("fs/v1/_gateway/gb26875/reject", "bad_payload", b"@@", panel)
    body = _health_with_ingest_fine(api_url, db)
    assert body["status"] == "degraded"
    assert body["unreadable_fires"]["count"] == 5
    assert body["unregistered_fires"]["count"] == 0
    assert body["unreadable_fires"]["last_topic"] == "(shown with a token)"


def test_health_is_degraded_while_shards_are_unheld(api_url: str, db: str) -> None:
    _ingest_report(db, age_s=1)
    with client(api_url, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert body["status"] == "degraded"
    assert body["shards"]["unowned"] == list(range(body["shards"]["count"]))


def test_health_names_the_shards_of_a_process_that_stopped_reporting(api_url: str, db: str) -> None:
    """A process stopped with its connection alive still holds its leases: its
    shards are held, not processed, and /health must not say ok."""
    _ingest_report(db, age_s=1, instance="ingest-live")
    with psycopg.connect(db, autocommit=True) as holder:
        pid = holder.info.backend_pid
        _ingest_report(db, age_s=40, instance="ingest-stopped", backend_pid=pid)
        count = _hold_every_shard(holder)
        with client(api_url, token=None) as anonymous:
            assert anonymous.get("/health").json()["shards"]["processes"] == []
        with client(api_url, token="made-up") as stranger:
            assert stranger.get("/health").json()["shards"]["processes"] == []
        with client(api_url) as admin:
            body = admin.get("/health").json()
    assert body["status"] == "degraded"
    assert body["shards"]["unowned"] == []
    assert body["shards"]["stalled"] == list(range(count))
    (process,) = body["shards"]["processes"]
    assert process["instance"] == "ingest-stopped"
    assert process["report_age_s"] >= 40


def test_health_does_not_count_a_process_whose_database_session_is_gone(
    api_url: str, db: str
) -> None:
    """A recheck: a process killed outright still counted among the ingest
    instances for up to 15 s (its last report was young)."""
    with psycopg.connect(db, autocommit=True) as live:
        _ingest_report(db, age_s=1, instance="ingest-live", backend_pid=live.info.backend_pid)
        with psycopg.connect(db, autocommit=True) as gone:
            dead_pid = gone.info.backend_pid
        wait_for(
            lambda: not query(db, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (dead_pid,))
        )
        _ingest_report(db, age_s=0, instance="ingest-killed", backend_pid=dead_pid)
        with client(api_url, token=None) as anonymous:
            body = anonymous.get("/health").json()
        assert (body["ingest"]["state"], body["ingest"]["instances"]) == ("ok", 1)
    # And the last one gone: ingest is stale, however young its report.
    with client(api_url, token=None) as anonymous:
        body = wait_for(
            lambda: (b := anonymous.get("/health").json())["ingest"]["state"] == "stale" and b
        )
    assert body["status"] == "degraded"


def test_health_stale_ingest_and_lost_broker(api_url: str, db: str) -> None:
    _ingest_report(db, age_s=40)
    with client(api_url, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert (body["status"], body["ingest"]["state"]) == ("degraded", "stale")
    _ingest_report(db, age_s=0, connected=False)
    with client(api_url, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert (body["status"], body["ingest"]["state"]) == ("degraded", "ok")
    assert body["broker"]["connected"] is False
    # One process of two away from the broker: its shards' devices go unheard.
    _ingest_report(db, age_s=0, connected=True, instance="ingest-2")
    with client(api_url, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert body["broker"]["connected"] is False


# --- auth -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_requests_without_a_valid_token_are_401(api_url: str, db: str, token: str | None) -> None:
    with client(api_url, token=token) as c:
        response = c.get("/api/v1/devices")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


# --- devices -------------------------------------------------------------------------


def test_register_one_device_and_read_it_back(api) -> None:  # type: ignore[no-untyped-def]
    response = api.post(
        "/api/v1/devices", json=device("D1", name="Lobby", thresholds={"obscuration_alarm": 2.5})
    )
    assert response.status_code == 200, response.text
    [stored] = response.json()
    assert stored["id"] == "D1"
    assert stored["site"] == "S1"
    assert stored["kind"] == "smoke"
    assert stored["interval_s"] == 10.0  # the kind's default
    assert stored["thresholds"] == {"obscuration_alarm": 2.5}
    assert stored["state"] == "unknown"
    assert re.match(ISO_MS, stored["created_at"])
    detail = api.get("/api/v1/devices/D1").json()
    assert detail["name"] == "Lobby"
    assert detail["last_reading"] is None
    assert detail["open_alarms"] == []
    assert api.get("/api/v1/devices/NOPE").status_code == 404


def test_upsert_updates_and_creates_zones(api, db: str) -> None:  # type: ignore[no-untyped-def]
    register(api, device("D1"), device("D2", zone="Z2"))
    register(api, device("D1", site="S2", zone="Z9", kind="heat", interval_s=5), move_site=True)
    items = api.get("/api/v1/devices").json()["items"]
    assert [(d["id"], d["site"], d["zone"], d["kind"], d["interval_s"]) for d in items] == [
        ("D1", "S2", "Z9", "heat", 5.0),
        ("D2", "S1", "Z2", "smoke", 10.0),
    ]
    with psycopg.connect(db) as conn:
        zones = conn.execute("SELECT site_id, zone FROM zones ORDER BY 1, 2").fetchall()
    assert zones == [("S1", "Z1"), ("S1", "Z2"), ("S2", "Z9")]


def test_only_new_registers_the_new_and_leaves_the_registered_as_they_are(api, db: str) -> None:  # type: ignore[no-untyped-def]
    """What a gateway uses for its points (an outside check found it overwriting
    the floor, zone and name an admin had given a point)."""
    register(api, device("P1", zone="3F-east", name="3F east A", interval_s=31_622_400))
    r = api.post(
        "/api/v1/devices",
        params={"only_new": "true"},
        json=[device("P1", zone="P1", name="guess"), device("P2", zone="P2", name="new")],
    )
    assert r.status_code == 200, r.text
    assert [(d["id"], d["zone"], d["name"], d["interval_s"]) for d in r.json()] == [
        ("P1", "3F-east", "3F east A", 31_622_400.0),
        ("P2", "P2", "new", 10.0),
    ]
    assert api.get("/api/v1/devices/P1").json()["zone"] == "3F-east"
    with psycopg.connect(db) as conn:
        zones = conn.execute("SELECT zone FROM zones ORDER BY 1").fetchall()
    assert zones == [("3F-east",), ("P2",)]  # the guess made no zone of its own


def test_evac_routes_must_name_zones_of_the_same_floor(api) -> None:  # type: ignore[no-untyped-def]
    ok = api.post(
        "/api/v1/devices",
        json=[
            device("D1", zone="Z1"),
            device("E1", zone="Z2", kind="evac", routes={"left": "Z1", "right": "Z2"}),
        ],
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()[1]["routes"] == {"left": "Z1", "right": "Z2"}
    bad = api.post("/api/v1/devices", json=device("E2", kind="evac", routes={"left": "Z7"}))
    assert bad.status_code == 422
    assert "routes.left" in bad.json()["error"]["message"]
    assert api.get("/api/v1/devices/E2").status_code == 404  # nothing stored
    not_evac = api.post("/api/v1/devices", json=device("D3", routes={"left": "Z1"}))
    assert not_evac.status_code == 422


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "bad id!"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"site": ""}, "site"),
        ({"kind": "toaster"}, "kind"),
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": 0.000001}, "interval_s"),  # offline after 3 us
        ({"interval_s": -5}, "interval_s"),
        ({"thresholds": {"obscuration_alarm": "high"}}, "thresholds"),
        ({"thresholds": {"obscuration_alarm": True}}, "thresholds"),
        ({"thresholds": [1, 2]}, "thresholds"),
        ({"thresholds": {"drift_limit": 1.9}}, "drift_limit"),  # > 0.6 x 3.0: EN 54-7 4.8
        ({"thresholds": {"obscuration_alarm": 2.0, "drift_limit": 1.5}}, "drift_limit"),
        ({"zone": None}, "zone"),
    ],
)
def test_invalid_devices_are_422_naming_the_field(api, change, field) -> None:  # type: ignore[no-untyped-def]
    response = api.post("/api/v1/devices", json={**device("D1"), **change})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_body"
    assert field in error["message"]


def test_malformed_json_is_422(api) -> None:  # type: ignore[no-untyped-def]
    response = api.post(
        "/api/v1/devices", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_body"


def test_csv_import(api) -> None:  # type: ignore[no-untyped-def]
    text = (
        "id,site,building,floor,zone,kind,name,interval_s,thresholds,route_left,route_right\n"
        "C1,S1,B1,1,Z1,smoke,Hall,,,,\n"
        'C2,S1,B1,1,Z2,electrical,,5,"{""residual_current_ma"": 250}",,\n'
        "C3,S1,B1,1,Z2,evac,,,,Z1,Z2\n"
    )
    response = api.post(
        "/api/v1/devices", content=text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text
    stored = {d["id"]: d for d in response.json()}
    assert stored["C2"]["thresholds"] == {"residual_current_ma": 250.0}
    assert stored["C2"]["interval_s"] == 5.0
    assert stored["C3"]["routes"] == {"left": "Z1", "right": "Z2"}
    bad = api.post(
        "/api/v1/devices/import",
        content=b"id,site,building,floor,zone,kind\nC4,S1,B1,1,Z1,toaster\n",
        headers={"Content-Type": "text/csv"},
    )
    assert bad.status_code == 422
    assert "line 2" in bad.json()["error"]["message"]


@pytest.mark.parametrize(
    ("sheet", "says"),
    [
        (
            "id,site,building,floor,zone,kind,zoen\nC5,S1,B1,1,Z1,smoke,Z9\n",
            "unknown column(s) 'zoen'",
        ),
        (
            "id,id,site,building,floor,zone,kind\nC5,C6,S1,B1,1,Z1,smoke\n",
            "names column(s) id more",
        ),
        ("id,site,building,floor,zone,kind\nC5,S1,B1,1,Z1,smoke,extra\n", "line 2: more cells"),
        # 20,000 made-up columns: a short answer, not one naming them all.
        (
            "id,site,building,floor,zone,kind,"
            + ",".join(f"x{i}" for i in range(20_000))
            + "\nC5,S1,B1,1,Z1,smoke\n",
            "'x9', ... (+19990); known:",
        ),
    ],
)
def test_a_csv_sheet_that_would_not_be_stored_as_written_is_refused(  # type: ignore[no-untyped-def]
    api, sheet: str, says: str
) -> None:
    """An outside check: a column twice silently kept the last one, and unknown
    columns and extra cells were ignored (a typo's zone not stored)."""
    bad = api.post("/api/v1/devices", content=sheet.encode(), headers={"Content-Type": "text/csv"})
    assert bad.status_code == 422, bad.text
    assert says in bad.json()["error"]["message"]
    assert len(bad.text) < 2_000
    assert api.get("/api/v1/devices/C5").status_code == 404


def test_device_list_filters_and_pagination(api) -> None:  # type: ignore[no-untyped-def]
    register(
        api,
        *[
            device(
                f"D{i:02d}", site="S1" if i % 2 else "S2", kind="heat" if i % 3 == 0 else "smoke"
            )
            for i in range(25)
        ],
    )
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/devices", params=params).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"D{i:02d}" for i in range(25)]
    heat_s2 = api.get("/api/v1/devices", params={"site": "S2", "kind": "heat"}).json()["items"]
    assert [d["id"] for d in heat_s2] == ["D00", "D06", "D12", "D18", "D24"]
    assert api.get("/api/v1/devices", params={"state": "offline"}).json()["items"] == []
    bad = api.get("/api/v1/devices", params={"cursor": "garbage"})
    assert bad.status_code == 422
    assert "cursor" in bad.json()["error"]["message"]


# --- telemetry -----------------------------------------------------------------------


def _seed_readings(db: str, flavour: str, start: datetime, count: int) -> None:
    rows = [
        (
            start + timedelta(seconds=10 * i),
            i,
            {"obscuration": float(i), "temperature": 20.0, **({"pm25": 3.0} if i == 0 else {})},
        )
        for i in range(count)
    ]
    insert_telemetry(db, flavour, "D1", rows)


@pytest.mark.parametrize("bucket", ["1m", "1d"])
@pytest.mark.parametrize("micros", [2**63 - 1, -(2**63)])
def test_a_forged_bucket_cursor_out_of_range_is_a_bad_parameter(
    api: httpx.Client, bucket: str, micros: int
) -> None:
    register(api, device("D1"))
    forged = encode_cursor(f"buckets-{bucket}", micros)
    response = api.get("/api/v1/devices/D1/telemetry", params={"bucket": bucket, "cursor": forged})
    assert response.status_code == 422, response.text
    assert "cursor" in response.json()["error"]["message"]


def test_raw_telemetry_pages_and_ranges(api, db: str, flavour: str) -> None:  # type: ignore[no-untyped-def]
    register(api, device("D1"))
    start = datetime.now(UTC).replace(microsecond=123000) - timedelta(hours=1)
    _seed_readings(db, flavour, start, 30)
    first = api.get("/api/v1/devices/D1/telemetry", params={"limit": 12}).json()
    assert first["bucket"] is None
    assert first["items"][0]["v"] == {"obscuration": 0.0, "temperature": 20.0, "pm25": 3.0}
    assert re.match(ISO_MS, first["items"][0]["ts"])
    assert first["items"][0]["ts"].endswith(".123Z")
    got = [item["seq"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = api.get("/api/v1/devices/D1/telemetry", params={"limit": 12, "cursor": cursor})
        got += [item["seq"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
    assert got == list(range(30))
    since_ms = int((start + timedelta(seconds=100)).timestamp() * 1000)
    until_iso = (start + timedelta(seconds=200)).isoformat()
    ranged = api.get(
        "/api/v1/devices/D1/telemetry", params={"since": since_ms, "until": until_iso}
    ).json()["items"]
    assert [r["seq"] for r in ranged] == list(range(10, 20))
    newest = api.get("/api/v1/devices/D1/telemetry", params={"order": "desc", "limit": 1})
    assert newest.json()["items"][0]["seq"] == 29
    detail = api.get("/api/v1/devices/D1").json()
    assert detail["last_reading"]["seq"] == 29


def test_device_detail_says_what_ingest_counted_of_its_messages(api, db: str) -> None:  # type: ignore[no-untyped-def]
    """A device maker without Grafana sees lost, repeated and mis-dated messages
    (an outside check found them only in device_state)."""
    register(api, device("L1"), device("L2"))
    query(
        db,
        "INSERT INTO device_state (device_id, messages, seq_gaps, duplicates, out_of_order, "
        "quarantined, last_seen_at, last_ts) VALUES ('L1', 120, 7, 2, 5, 1, now(), "
        "now() + interval '10 min 3 s') RETURNING device_id",
    )
    link = api.get("/api/v1/devices/L1").json()["link"]
    assert link == {
        "messages": 120,
        "seq_gaps": 7,
        "duplicates": 2,
        "out_of_order": 5,
        "quarantined": 1,
        "clock_ahead_s": 603.0,  # a clock ten minutes fast
    }
    quiet = api.get("/api/v1/devices/L2").json()["link"]  # nothing received yet
    assert quiet.pop("clock_ahead_s") is None
    assert set(quiet.values()) == {0}


def test_bucketed_telemetry_weighted_average(api, db: str, flavour: str) -> None:  # type: ignore[no-untyped-def]
    register(api, device("D1"))
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    start = start.replace(minute=0)
    # 3 readings in the first minute, 1 in the second: the 5m average weights them.
    rows = [
        (start + timedelta(seconds=s), i, {"temperature": t})
        for i, (s, t) in enumerate([(0, 10.0), (10, 20.0), (20, 30.0), (70, 60.0)])
    ]
    insert_telemetry(db, flavour, "D1", rows)
    params = {"since": start.isoformat(), "until": (start + timedelta(hours=1)).isoformat()}
    one = api.get("/api/v1/devices/D1/telemetry", params={**params, "bucket": "1m"}).json()
    assert [b["v"]["temperature"]["avg"] for b in one["items"]] == [20.0, 60.0]
    five = api.get("/api/v1/devices/D1/telemetry", params={**params, "bucket": "5m"}).json()
    [bucket] = five["items"]
    assert bucket["v"]["temperature"] == {"min": 10.0, "max": 60.0, "avg": 30.0, "n": 4}
    assert bucket["ts"] == start.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    day = api.get("/api/v1/devices/D1/telemetry", params={"bucket": "1d"}).json()
    assert sum(b["v"]["temperature"]["n"] for b in day["items"]) == 4


def test_bucket_pagination_covers_the_range(api, db: str, flavour: str) -> None:  # type: ignore[no-untyped-def]
    register(api, device("D1"))
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    insert_telemetry(
        db,
        flavour,
        "D1",
        [(start + timedelta(minutes=m), m, {"co": float(m)}) for m in range(0, 120, 7)],
    )
    params = {
        "since": start.isoformat(),
        "until": (start + timedelta(hours=2)).isoformat(),
        "bucket": "1m",
        "limit": 10,
    }
    got: list[float] = []
    cursor = None
    for _ in range(50):
        page = api.get(
            "/api/v1/devices/D1/telemetry",
            params={**params, **({"cursor": cursor} if cursor else {})},
        ).json()
        got += [b["v"]["co"]["avg"] for b in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert got == [float(m) for m in range(0, 120, 7)]


def test_buckets_without_since_start_where_the_data_is(api, db: str, flavour: str) -> None:  # type: ignore[no-untyped-def]
    """The default range is the last day; readings only in its last hour used to
    give an empty first page with a cursor (the first `limit` minutes had none)."""
    register(api, device("D1"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = [now - timedelta(minutes=m) for m in (50, 30, 10)]
    insert_telemetry(db, flavour, "D1", [(t, i, {"co": float(i)}) for i, t in enumerate(minutes)])
    pages = []
    cursor = None
    for _ in range(10):
        params = {"bucket": "1m", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/devices/D1/telemetry", params=params).json()
        pages.append([b["v"]["co"]["avg"] for b in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # A page is a window of `limit` buckets starting at the next one with data:
    # never empty, and no cursor once nothing follows.
    assert pages == [[0.0], [1.0], [2.0]]
    empty = api.get(
        "/api/v1/devices/D1/telemetry", params={"bucket": "1m", "until": "2020-01-01T00:00:00Z"}
    ).json()
    assert empty == {**empty, "items": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("params", "name", "code"),
    [
        ({"since": "yesterday"}, "since", "invalid_parameter"),
        ({"until": "2026-13-45T00:00:00Z"}, "until", "invalid_parameter"),
        ({"limit": 0}, "limit", "invalid_parameter"),
        ({"limit": 1001}, "limit", "invalid_parameter"),
        ({"bucket": "2m"}, "bucket", "invalid_parameter"),
        (
            {"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "since",
            "invalid_parameter",
        ),
        (
            {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "bucket": "1m"},
            "since",
            "too_many_points",
        ),
        ({"since": "99999999999999999"}, "since", "invalid_parameter"),
    ],
)
def test_bad_telemetry_parameters_are_422(api, params, name, code) -> None:  # type: ignore[no-untyped-def]
    register(api, device("D1"))
    response = api.get("/api/v1/devices/D1/telemetry", params=params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert name in error["message"]


# --- rejects -------------------------------------------------------------------------


def test_rejects_list_text_and_base64(api, db: str) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        for i, (reason, payload) in enumerate(
            [
                ("invalid_json", b"{nope"),
                ("invalid_json", b"\xff\xfe\x00binary"),
                ("unknown_device", b'{"ts": 1, "seq": 1, "v": {}}'),
            ]
        ):
            conn.execute(
                "INSERT INTO rejects (received_at, topic, reason, payload, detail) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    now - timedelta(seconds=10 - i),
                    f"fs/v1/S1/D{i}/telemetry",
                    reason,
                    payload,
                    f"device 'D{i}' is not registered" if i == 2 else None,
                ),
            )
    items = api.get("/api/v1/rejects").json()["items"]
    assert [i["reason"] for i in items] == ["unknown_device", "invalid_json", "invalid_json"]
    assert items[2]["payload"] == "{nope"
    assert items[2]["encoding"] == "utf-8"
    assert items[1]["encoding"] == "base64"
    assert items[1]["payload"] == "//4AYmluYXJ5"
    assert set(items[0]) >= {"received_at", "topic", "reason", "payload"}
    only = api.get("/api/v1/rejects", params={"reason": "unknown_device"}).json()["items"]
    assert len(only) == 1
    # The detail in the caller's language, as written for an English one.
    assert only[0]["detail_label"] == only[0]["detail"] == "device 'D2' is not registered"
    zh = api.get(
        "/api/v1/rejects",
        params={"reason": "unknown_device"},
        headers={"Accept-Language": "zh-CN"},
    ).json()["items"]
    assert zh[0]["detail_label"] == "设备 'D2' 未注册"
    assert zh[0]["detail"] == "device 'D2' is not registered"
    assert items[1]["detail_label"] is None
    # A reason that is none of the contract's is a bad parameter, as a bad `type` is.
    bogus = api.get("/api/v1/rejects", params={"reason": "bogus"})
    assert bogus.status_code == 422, bogus.text
    assert "reason" in bogus.json()["error"]["message"]
    page1 = api.get("/api/v1/rejects", params={"limit": 2}).json()
    page2 = api.get("/api/v1/rejects", params={"limit": 2, "cursor": page1["next_cursor"]}).json()
    assert [i["id"] for i in page1["items"] + page2["items"]] == [i["id"] for i in items]
    assert page2["next_cursor"] is None


# --- operations ------------------------------------------------------------------------


def test_metrics_and_site_summary(api, db: str) -> None:  # type: ignore[no-untyped-def]
    from tests.test_api_support import insert_alarm

    register(api, device("D1"), device("D2"))
    _ingest_report(db, age_s=1)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO reject_counts VALUES ('invalid_json', 5), ('too_large', 2)")
        insert_alarm(conn, id="A1", device="D1", type="offline", verdict="confirmed")
        insert_alarm(
            conn,
            id="A2",
            device="D2",
            type="fire",
            verdict="suppressed",
            opened_at=datetime.now(UTC),
        )
    text = api.get("/metrics").text
    assert 'firesafe_rejects_total{reason="invalid_json"} 5.0' in text
    assert 'firesafe_open_alarms{type="offline",verdict="confirmed"} 1.0' in text
    assert 'firesafe_ingest_lag_ms{instance="ingest-1"} 12.5' in text
    summary = api.get("/api/v1/sites/S1/summary").json()
    assert summary["devices"] == 2
    assert summary["offline_devices"] == 1
    assert summary["suppressed_today"] == 1
    assert {(c["type"], c["verdict"], c["count"]) for c in summary["open_alarms"]} == {
        ("offline", "confirmed", 1),
        ("fire", "suppressed", 1),
    }
    offline = api.get("/api/v1/devices", params={"state": "offline"}).json()["items"]
    assert [d["id"] for d in offline] == ["D1"]
    assert api.get("/api/v1/sites/S9/summary").status_code == 404


def test_the_apis_reject_reasons_are_the_contracts() -> None:
    from typing import get_args

    from api.schemas import RejectReason
    from firesafe.contract import REJECT_REASONS

    assert get_args(RejectReason) == REJECT_REASONS


def test_a_uitd_id_ending_in_a_number_is_refused(api) -> None:  # type: ignore[no-untyped-def]
    """An outside check: uitd `Q`'s point 1/1/1 and uitd `Q_1`'s panel 1/1 were
    both `Q_1_1_1`, and one's fire was raised on the other's device."""
    uitd: dict[str, Any] = {"address": "000000000001", "interval_s": 30}
    r = api.post("/api/v1/devices", json=device("Q_1", kind="uitd", **uitd))
    assert r.status_code == 422
    assert "must not end in `_` and digits" in r.json()["error"]["message"]
    r = api.post("/api/v1/devices", json=device("Q-1", kind="uitd", **uitd))
    assert r.status_code == 200, r.text
