"""Helpers of the API tests: a live uvicorn server and direct SQL seeding (as ingest writes)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app
from firesafe.contract import READINGS
from firesafe.settings import Settings
from tests.helpers import refresh_rollup

ADMIN_TOKEN = "test-admin-token-0123456789abcdef0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ISO_MS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(
    database_url: str,
    *,
    heartbeat_s: float = 15.0,
    public_docs: bool = False,
    customize: Callable[[FastAPI], None] | None = None,
) -> Iterator[str]:
    """The app under uvicorn in a thread; yields its base URL."""
    settings = Settings(
        database_url=database_url,
        admin_token=SecretStr(ADMIN_TOKEN),
        api_public_docs=public_docs,
    )
    port = _free_port()
    app = create_app(settings, heartbeat_s=heartbeat_s)
    if customize is not None:
        customize(app)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("API test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def client(base_url: str, token: str | None = ADMIN_TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=10)


def device(
    id: str, site: str = "S1", zone: str = "Z1", kind: str = "smoke", **extra: Any
) -> dict[str, Any]:
    return {
        "id": id,
        "site": site,
        "building": "B1",
        "floor": "1",
        "zone": zone,
        "kind": kind,
        **extra,
    }


def register(
    api: httpx.Client, *devices: dict[str, Any], move_site: bool = False
) -> list[dict[str, Any]]:
    response = api.post(
        "/api/v1/devices",
        json=list(devices),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        params={"move_site": "true"} if move_site else None,
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def insert_telemetry(
    dsn: str, flavour: str, device_id: str, rows: Sequence[tuple[datetime, int, dict[str, float]]]
) -> None:
    """Readings as ingest stores them, and their 1-minute buckets as a reader
    finds them once the rollup has run: rebuilt on plain PostgreSQL, refreshed
    on TimescaleDB. Left to the refresh policy, a run that fails half way (as
    2.28.3's do on PostgreSQL 15.20, see /health) can move the aggregate's
    watermark past rows it never materialised, and a test reads that instead."""
    cols = ", ".join(READINGS)
    marks = ", ".join(["%s"] * len(READINGS))
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            for ts, seq, v in rows:
                known = [v.get(name) for name in READINGS]
                extra = {k: x for k, x in v.items() if k not in READINGS} or None
                conn.execute(
                    f"INSERT INTO telemetry (ts, device_id, seq, received_at, {cols}, extra) "
                    f"VALUES (%s, %s, %s, now(), {marks}, %s)",
                    (ts, device_id, seq, *known, orjson.dumps(extra).decode() if extra else None),
                )
        if flavour == "plain":
            rebuild_rollup(conn)
        else:
            refresh_rollup(conn, "CALL refresh_continuous_aggregate('telemetry_1m', NULL, NULL)")


def rebuild_rollup(conn: psycopg.Connection[Any]) -> None:
    parts = ", ".join(f"min({r}), max({r}), sum({r}), count({r})" for r in READINGS)
    names = ", ".join(f"{r}_min, {r}_max, {r}_sum, {r}_n" for r in READINGS)
    conn.execute("TRUNCATE telemetry_rollup_1m")
    conn.execute(
        f"INSERT INTO telemetry_rollup_1m (bucket, device_id, samples, {names}) "
        f"SELECT date_trunc('minute', ts), device_id, count(*), {parts} "
        "FROM telemetry GROUP BY 1, 2"
    )


def insert_alarm(
    conn: psycopg.Connection[Any],
    *,
    id: str,
    device: str,
    site: str = "S1",
    type: str = "fire",
    verdict: str = "pending",
    status: str = "active",
    opened_at: datetime | None = None,
    zone: str = "Z1",
) -> None:
    """An alarm and its 'opened' log entry, as ingest writes them."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, verdict, "
            "status, reason, opened_at) VALUES (%s, %s, %s, 'B1', '1', %s, %s, %s, %s, "
            "'coincidence', %s)",
            (
                id,
                device,
                site,
                zone,
                type,
                verdict,
                status,
                opened_at or datetime.now(UTC) - timedelta(minutes=1),
            ),
        )
        conn.execute(
            "INSERT INTO alarm_log (alarm_id, action, actor) VALUES (%s, 'opened', 'system')",
            (id,),
        )


def make_token(api_url: str, role: str, sites: Sequence[str] = (), name: str | None = None) -> str:
    with client(api_url) as api:
        response = api.post(
            "/api/v1/tokens",
            json={"role": role, "sites": list(sites), "name": name or f"{role}-test"},
        )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token
