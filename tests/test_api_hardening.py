"""Hardening of the API (issue #10): what an attacker or a bad day must not break.

Against the real PostgreSQL; a database outage is a TCP proxy in front of it
that the test cuts and restores.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import logging
import queue
import re
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from pydantic import SecretStr, ValidationError

from api import deadline
from api import pool as api_pool
from api.app import create_app
from api.deadline import REQUEST_DEADLINE_S
from api.middleware import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, BodyTooLarge
from api.pool import POOL_MAX_SIZE
from api.routers.health import DB_ANSWER_S, DB_TIMEOUT_S
from api.stream import MAX_STREAMS_PER_TOKEN
from api.tasks import Supervisor
from firesafe.settings import Settings
from storage.queries.tokens import RESERVED_NAMES, is_reserved_name
from tests.netproxy import database_proxy
from tests.test_api_support import (
    ADMIN_TOKEN,
    client,
    device,
    insert_alarm,
    insert_telemetry,
    live_server,
    make_token,
    register,
)

# Bound on any single wait of these tests (a condition, not a measurement).
WAIT_S = 10.0


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


@pytest.fixture
def api(api_url: str, db: str) -> Iterator[httpx.Client]:
    with client(api_url) as c:
        yield c


def _wait(condition: Any, what: str) -> Any:
    """Poll `condition()` until truthy (bounded): waiting on state, not on time."""
    deadline = datetime.now(UTC) + timedelta(seconds=WAIT_S)
    while datetime.now(UTC) < deadline:
        value = condition()
        if value:
            return value
        threading.Event().wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- item 3: stored timestamps beyond Python's datetime ------------------------


def test_stored_timestamps_beyond_python_range_do_not_break_the_api(
    api: httpx.Client, db: str, flavour: str
) -> None:
    register(api, device("FAR1"), device("FAR2"))
    insert_telemetry(db, flavour, "FAR2", [(datetime.now(UTC), 1, {"obscuration": 0.1})])
    with psycopg.connect(db, autocommit=True) as conn:
        # As an older ingest stored them: a reading dated year 10000, a device
        # whose newest event time is 'infinity', an alarm opened in year 20000.
        conn.execute(
            "INSERT INTO telemetry (ts, device_id, seq, received_at, obscuration) "
            "VALUES ('10000-01-01T00:00:00Z', 'FAR1', 1, now(), 0.5)"
        )
        conn.execute(
            "INSERT INTO device_state (device_id, last_seen_at, last_ts, messages) "
            "VALUES ('FAR1', now(), 'infinity', 1)"
        )
        conn.execute(
            "INSERT INTO device_events (ts, device_id, seq, received_at, type) "
            "VALUES ('20000-01-01T00:00:00Z', 'FAR1', 2, now(), 'fire_alarm')"
        )
        conn.execute(
            "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, verdict, "
            "reason, opened_at, confirmed_at) VALUES ('FARA', 'FAR1', 'S1', 'B1', '1', 'Z1', "
            "'fire', 'confirmed', 'coincidence', '20000-01-01T00:00:00Z', '-infinity')"
        )
        conn.execute(
            "INSERT INTO alarm_log (alarm_id, action, actor) VALUES ('FARA', 'opened', 'system')"
        )
    top = "9999-12-31T23:59:59.999Z"
    listed = api.get("/api/v1/devices", params={"site": "S1"})
    assert listed.status_code == 200, listed.text
    one = api.get("/api/v1/devices/FAR1")
    assert one.status_code == 200, one.text
    assert one.json()["last_ts"] == top
    assert one.json()["last_reading"]["ts"] == top
    raw = api.get("/api/v1/devices/FAR1/telemetry", params={"order": "desc"})
    assert raw.status_code == 200, raw.text
    assert raw.json()["items"][0]["ts"] == top
    # Paging past the clamped row still works.
    first = api.get("/api/v1/devices/FAR1/telemetry", params={"limit": 1, "order": "desc"})
    assert first.status_code == 200
    bucketed = api.get(
        "/api/v1/devices/FAR1/telemetry", params={"bucket": "1d", "until": "9999-12-31T23:00:00Z"}
    )
    assert bucketed.status_code in (200, 422), bucketed.text
    alarms = api.get("/api/v1/alarms", params={"site": "S1"})
    assert alarms.status_code == 200, alarms.text
    far = next(a for a in alarms.json()["items"] if a["id"] == "FARA")
    assert far["opened_at"] == top
    assert far["confirmed_at"] == "0001-01-01T00:00:00.000Z"
    detail = api.get("/api/v1/alarms/FARA")
    assert detail.status_code == 200, detail.text
    assert detail.json()["evidence"]["until"] == top
    assert api.get("/api/v1/sites").status_code == 200


# --- item 7: the system's actor name -------------------------------------------


@pytest.mark.parametrize(
    # (an outside check: `ADMİN` passed Python's lower() and failed PostgreSQL's
    # CHECK with a 500; lookalikes were accepted)
    "name",
    ["system", "System", " system ", "admin", "ADMİN", "ſystem", "ａｄｍｉｎ", "sýstem"],
)
def test_reserved_token_names_are_refused(api: httpx.Client, name: str) -> None:
    response = api.post("/api/v1/tokens", json={"role": "operator", "name": name})
    assert response.status_code == 422, response.text
    assert "reserved" in response.json()["error"]["message"]


def test_lookalikes_of_reserved_token_names_are_refused(api: httpx.Client) -> None:
    """An outside check: `admın` (dotless i) and `ꜱystem` (small capital s) passed
    the NFKD folding; Unicode's confusable skeleton (TR39) catches them, Cyrillic
    letters and `rn` for `m` too. Names that merely contain a reserved one are fine."""
    lookalikes = [
        "adm\u0131n",  # dotless i
        "\ua731ystem",  # latin letter small capital s
        "\u0430dmin",  # Cyrillic a
        "\u0455\u0443\u0455t\u0435m",  # Cyrillic dze, u, e
        "\u0391DMIN",  # Greek capital alpha
        "adrnin",
        "ADMlN",
    ]
    for name in lookalikes:
        response = api.post("/api/v1/tokens", json={"role": "operator", "name": name})
        assert response.status_code == 422, (name, response.text)
        assert "reserved" in response.json()["error"]["message"]
    for name in ["Admiral", "systems", "sysadmin", "admi", "\u7ba1\u7406\u5458"]:  # 管理员
        response = api.post("/api/v1/tokens", json={"role": "operator", "name": name})
        assert response.status_code == 201, (name, response.text)


def test_the_api_refuses_every_name_the_databases_check_refuses(database_url: str) -> None:
    """The CHECK constraint compares lower(btrim(name)); PostgreSQL's lower()
    turns some non-ASCII letters into ASCII ones (`İ` -> `i` under C.UTF-8).
    The API's check must refuse each such name itself (a 422, not the
    constraint's error)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT i, lower(chr(i)) FROM generate_series(128, 196607) AS i "
            "WHERE (i < 55296 OR i > 57343) AND lower(chr(i)) ~ '^[a-z]$'"
        ).fetchall()
    checked = 0
    for code, letter in rows:
        for reserved in RESERVED_NAMES:
            if letter in reserved:
                name = reserved.replace(letter, chr(code))
                assert is_reserved_name(name), (hex(code), name)
                checked += 1
    assert checked or not rows


def test_the_gateways_reserved_site_is_refused_everywhere_a_site_is_made(
    api: httpx.Client,
) -> None:
    """The security check registered a device and a manager token on site
    `_gateway` (200, 201): that token then listed every gateway's rejects,
    raw frames and panels' addresses. `_gateway` is no site."""
    body = {"id": "GWX1", "site": "_gateway", "building": "B", "floor": "1", "zone": "Z"}
    checks = [
        api.post("/api/v1/devices", json={**body, "kind": "smoke"}),
        api.post("/api/v1/tokens", json={"role": "manager", "sites": ["_gateway"]}),
        api.put("/api/v1/sites/_gateway", json={"name": "x"}),
    ]
    for response in checks:
        assert response.status_code == 422, response.text
        assert "reserved" in response.json()["error"]["message"]
    assert "path parameter 'site_id'" in checks[2].json()["error"]["message"]
    zh = api.post(
        "/api/v1/devices", json={**body, "kind": "smoke"}, headers={"Accept-Language": "zh-CN"}
    )
    assert "保留" in zh.json()["error"]["message"], zh.text
    assert api.get("/api/v1/devices/GWX1").status_code == 404


def test_a_device_twice_in_one_request_is_refused(api: httpx.Client) -> None:
    """The security check's list with one id twice kept the last silently (200)."""
    one = {"id": "DUP1", "site": "S1", "building": "B", "floor": "1", "zone": "Z", "kind": "smoke"}
    r = api.post("/api/v1/devices", json=[one, {**one, "zone": "Z2"}])
    assert r.status_code == 422, r.text
    assert "DUP1" in r.json()["error"]["message"]
    csv = "id,site,building,floor,zone,kind\nDUP2,S1,B,1,Z,smoke\nDUP2,S1,B,1,Z,heat\n"
    r = api.post("/api/v1/devices", content=csv, headers={"Content-Type": "text/csv"})
    assert r.status_code == 422, r.text
    zh = api.post("/api/v1/devices", json=[one, one], headers={"Accept-Language": "zh-CN"})
    assert "不止一次" in zh.json()["error"]["message"]
    assert api.get("/api/v1/devices/DUP1").status_code == 404


def test_the_database_refuses_a_token_named_system(api: httpx.Client, db: str) -> None:
    with (
        psycopg.connect(db, autocommit=True) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO api_tokens (name, role, token_hash) VALUES ('system', 'operator', 'x')"
        )


def test_a_clear_is_never_recorded_as_the_system(api_url: str, api: httpx.Client, db: str) -> None:
    register(api, device("SYS1"))
    operator = make_token(api_url, "operator", name="systems-desk")
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="SYSA", device="SYS1", verdict="confirmed")
    with client(api_url, token=operator) as op:
        assert op.post("/api/v1/alarms/SYSA/clear", json={}).status_code == 200
    with psycopg.connect(db) as conn:
        actors = [r[0] for r in conn.execute("SELECT actor FROM alarm_log WHERE alarm_id = 'SYSA'")]
    assert actors == ["system", "systems-desk"]


# --- item 13: token expiry -----------------------------------------------------


def test_tokens_expire(api_url: str, api: httpx.Client, db: str) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = api.post(
        "/api/v1/tokens", json={"role": "operator", "name": "temp", "expires_at": soon}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["expires_at"].startswith(soon[:16])
    with client(api_url, token=body["token"]) as temp:
        assert temp.get("/api/v1/alarms").status_code == 200
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(
                "UPDATE api_tokens SET expires_at = now() - interval '1 s' WHERE id = %s",
                (body["id"],),
            )
        expired = temp.get("/api/v1/alarms")
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]["message"]
    listed = {t["id"]: t for t in api.get("/api/v1/tokens").json()["items"]}
    assert listed[body["id"]]["expires_at"] is not None
    past = api.post(
        "/api/v1/tokens",
        json={"role": "operator", "name": "late", "expires_at": "2020-01-01T00:00:00Z"},
    )
    assert past.status_code == 422


# --- item 8: streams of revoked tokens, streams per token ----------------------


def _open_stream(api_url: str, token: str, events: queue.Queue[Any]) -> threading.Event:
    """Read an SSE stream in a thread: ('status', code), then ('line', text)... ('end',)."""
    stop = threading.Event()

    def run() -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(5, read=60)) as http,
                http.stream(
                    "GET",
                    f"{api_url}/api/v1/alarms/stream",
                    headers={"Authorization": f"Bearer {token}"},
                ) as response,
            ):
                events.put(("status", response.status_code))
                for line in response.iter_lines():
                    events.put(("line", line))
                    if stop.is_set():
                        return
        except httpx.HTTPError as exc:
            events.put(("error", repr(exc)))
        events.put(("end",))

    threading.Thread(target=run, daemon=True).start()
    return stop


def _until(events: queue.Queue[Any], wanted: tuple[str, ...]) -> list[Any]:
    seen = []
    while True:
        item = events.get(timeout=WAIT_S)
        seen.append(item)
        if item[: len(wanted)] == wanted or item[0] == "end":
            return seen


@pytest.mark.parametrize("how", ["revoked", "expired"])
def test_a_revoked_or_expired_tokens_stream_is_closed(
    api_url: str, api: httpx.Client, db: str, how: str
) -> None:
    token = make_token(api_url, "operator", name=f"wall-{how}")
    token_id = next(
        t["id"] for t in api.get("/api/v1/tokens").json()["items"] if t["name"] == f"wall-{how}"
    )
    events: queue.Queue[Any] = queue.Queue()
    _open_stream(api_url, token, events)
    assert events.get(timeout=WAIT_S) == ("status", 200)
    assert events.get(timeout=WAIT_S)[1].startswith("retry:")
    if how == "revoked":
        assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 204
    else:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("UPDATE api_tokens SET expires_at = now() WHERE id = %s", (token_id,))
    # Heartbeats come every 15 s: the close must come first, within seconds.
    seen = _until(events, ("line", "event: close"))
    assert seen[-1] == ("line", "event: close"), seen
    assert "token_revoked_or_expired" in events.get(timeout=WAIT_S)[1]
    assert _until(events, ("end",))[-1] == ("end",)


def _raw_stream(api_url: str, token: str) -> tuple[socket.socket, int]:
    """An SSE request on a raw socket: (the open socket, the response status)."""
    host, port = api_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    sock.sendall(
        f"GET /api/v1/alarms/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "connection closed before a status line"
        head += chunk
    return sock, int(head.split(b" ", 2)[1])


def test_streams_per_token_are_capped(api_url: str, api: httpx.Client) -> None:
    token = make_token(api_url, "operator", name="many-walls")
    other = make_token(api_url, "operator", name="other-wall")
    socks = []
    try:
        for _ in range(MAX_STREAMS_PER_TOKEN):
            sock, status = _raw_stream(api_url, token)
            socks.append(sock)
            assert status == 200
        with client(api_url, token=token) as same:
            refused = same.get("/api/v1/alarms/stream")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_streams"
        # Another token is not affected.
        sock, status = _raw_stream(api_url, other)
        socks.append(sock)
        assert status == 200
        # Closing a stream frees its place.
        clients = api.get("/health").json()["alarm_stream"]["clients"]
        socks.pop(0).close()
        _wait(
            lambda: api.get("/health").json()["alarm_stream"]["clients"] < clients,
            "the closed stream to be released",
        )
        sock, status = _raw_stream(api_url, token)
        socks.append(sock)
        assert status == 200
    finally:
        for sock in socks:
            sock.close()


# --- item 9: request bodies bounded before authentication ----------------------


def _raw_post(api_url: str, path: str, headers: str, body_chunks: Iterator[bytes]) -> bytes:
    """Send a request on a raw socket, stop sending as soon as the server answers,
    return the response head (a server that reads on would leave us blocked here)."""
    host, port = api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n".encode())
        for chunk in body_chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed: fine
                break
        data = b""
        while b"\r\n\r\n" not in data:
            got = sock.recv(65536)
            if not got:
                break
            data += got
        return data


def test_a_huge_body_without_a_token_is_refused_unread(api_url: str) -> None:
    gib = 1024**3
    # A declared gigabyte: refused from the headers, before a byte of it is read.
    head = _raw_post(
        api_url,
        "/api/v1/alarms/X/ack",
        f"Content-Type: application/json\r\nContent-Length: {gib}\r\n",
        iter([b"{" + b" " * 65536]),
    )
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    # Chunked, no length: reading stops at the limit (1 MiB), long before 64 MiB.
    chunk = b"x" * 65536
    chunked = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(1024))
    head = _raw_post(
        api_url,
        "/api/v1/tokens",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        chunked,
    )
    assert head.startswith(b"HTTP/1.1 413"), head[:200]


def test_the_limit_is_larger_only_for_device_registration(api: httpx.Client) -> None:
    big = b"[" + b" " * (2 * DEFAULT_MAX_BODY_BYTES) + b"]"
    ok = api.post("/api/v1/devices", content=big, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200, ok.text  # an empty list, with a lot of white space
    refused = api.post(
        "/api/v1/alarms/X/ack", content=big, headers={"Content-Type": "application/json"}
    )
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "too_large"
    # One request id, the one in the body (an outside check saw the header twice).
    ids = refused.headers.get_list("x-request-id")
    assert ids == [refused.json()["error"]["request_id"]]
    # In the caller's language too (an outside check: English, no Content-Language).
    zh = api.post(
        "/api/v1/alarms/X/ack",
        content=big,
        headers={"Content-Type": "application/json", "Accept-Language": "zh-CN"},
    )
    assert zh.status_code == 413
    assert zh.headers["content-language"] == "zh-CN"
    assert "请求" in zh.json()["error"]["message"], zh.json()


def test_the_middleware_never_hands_the_app_an_oversized_body() -> None:
    """ASGI level: a declared oversized body never reaches the app; a streamed one
    is cut at the first chunk past the limit, and nothing after it is read."""
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append("app")
        while True:
            message = await receive()
            calls.append(f"chunk {len(message.get('body', b''))}")
            if not message.get("more_body"):
                break

    async def run(headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, int]:
        sent: list[Any] = []
        served = 0

        async def receive() -> dict[str, Any]:
            nonlocal served
            served += 1
            return {"type": "http.request", "body": b"x" * 65536, "more_body": served < chunks}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/api/v1/tokens", "headers": headers}
        try:
            await BodyLimitMiddleware(app)(scope, receive, send)
        except BodyTooLarge:  # the app's exception middleware answers it with 413
            return 413, served
        return sent[0]["status"], served

    status, served = asyncio.run(run([(b"content-length", str(1024**3).encode())], 16384))
    assert (status, served, calls) == (413, 0, [])
    status, served = asyncio.run(run([], 16384))
    assert status == 413
    assert served == DEFAULT_MAX_BODY_BYTES // 65536 + 1  # stopped right past the limit


def test_the_deadline_bounds_the_wait_for_a_response_not_its_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ASGI level: a handler that has not started its response by the deadline
    gets a 503 (and is cancelled); one that has started streams to its end."""
    monkeypatch.setattr(deadline, "REQUEST_DEADLINE_S", 0.2)
    cancelled: list[str] = []

    async def slow_to_start(scope: Any, receive: Any, send: Any) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(scope["path"])
            raise

    async def slow_body(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"b", b"c"):
            await asyncio.sleep(0.15)
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def run(app: Any, path: str) -> list[Any]:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "state": {}}
        await deadline.DeadlineMiddleware(app)(scope, receive, send)
        await asyncio.sleep(0.05)  # the abandoned handler's cancellation
        return sent

    refused = asyncio.run(run(slow_to_start, "/api/v1/alarms"))
    assert refused[0]["status"] == 503
    assert orjson.loads(refused[1]["body"])["error"]["code"] == "unavailable"
    assert cancelled == ["/api/v1/alarms"]
    streamed = asyncio.run(run(slow_body, "/api/v1/telemetry"))
    assert streamed[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in streamed[1:]) == b"abc"


def test_a_body_that_does_not_arrive_is_a_408_not_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outside check: a body shorter than its Content-Length, the
    connection left open, got a 503 "database unavailable" after 10 s and a
    warning blaming the database. The body's own wait is the client's."""
    monkeypatch.setattr(deadline, "REQUEST_DEADLINE_S", 0.2)

    async def reads_the_body(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(5)  # (then the database would not answer either)

    async def run(parts: list[dict[str, Any]]) -> list[Any]:
        sent: list[Any] = []
        queue = list(parts)

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            await asyncio.sleep(60)  # the client sends nothing more
            return {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        headers = [(b"content-length", b"100")]
        scope = {"type": "http", "method": "POST", "path": "/api/v1/tokens",
                 "headers": headers, "state": {}}  # fmt: skip
        await deadline.DeadlineMiddleware(reads_the_body)(scope, receive, send)
        await asyncio.sleep(0.05)
        return sent

    short = asyncio.run(run([{"type": "http.request", "body": b"x" * 10, "more_body": True}]))
    assert short[0]["status"] == 408
    assert orjson.loads(short[1]["body"])["error"]["code"] == "request_timeout"
    whole = asyncio.run(run([{"type": "http.request", "body": b"x" * 100}]))
    assert whole[0]["status"] == 503  # the body came: the wait is the database's
    # An endpoint with a long deadline (bulk registration) waits for its body
    # only as long as any: the body's deadline is its own.
    monkeypatch.setattr(deadline, "BODY_DEADLINE_S", 0.2)
    monkeypatch.setattr(deadline, "REQUEST_DEADLINES", {("POST", "/api/v1/tokens"): 3.0})
    started = time.monotonic()
    short = asyncio.run(run([{"type": "http.request", "body": b"x" * 10, "more_body": True}]))
    assert short[0]["status"] == 408
    assert time.monotonic() - started < 1.5


def test_clients_sending_device_bodies_slowly_hold_no_database_connection(
    api_url: str, api: httpx.Client
) -> None:
    """An outside check: POST /api/v1/devices took its pooled connection before
    reading the body; 17 clients sending theirs slowly (a 60 s deadline) and
    every other request got a 503 'database unavailable'."""
    import socket

    from api.pool import POOL_MAX_SIZE

    host, port = api_url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(POOL_MAX_SIZE + 4):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(
                b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n"
                b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n[{"
            )
            slow.append(sock)
        time.sleep(0.5)  # every handler is waiting for its body
        started = time.monotonic()
        response = api.get("/api/v1/devices")
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 3.0
    finally:
        for sock in slow:
            sock.close()


def test_a_nul_in_free_text_is_refused_by_name(api: httpx.Client) -> None:
    """An outside check: a NUL in a site's name got 'a value is out of the range
    the database accepts' (the database's refusal) with a parameter's code."""
    for lang, expected in (("en", "must not contain a NUL character"), ("zh-CN", "NUL 字符")):
        refused = api.put(
            "/api/v1/sites/S1", json={"name": "Tower\x00A"}, headers={"Accept-Language": lang}
        )
        assert refused.status_code == 422, refused.text
        assert expected in refused.json()["error"]["message"], refused.text


def test_only_iana_time_zones_and_ascii_digits_are_taken(api: httpx.Client) -> None:
    """An outside check: `localtime` (the server's own zone), `Factory` and the
    `right/` copies were taken as a site's time zone, and `since=１２` (full-
    width digits) as epoch 12 ms."""
    for zone in ("localtime", "Factory", "right/UTC", "posix/Asia/Shanghai", "posixrules"):
        refused = api.put("/api/v1/sites/TZ1", json={"timezone": zone})
        assert refused.status_code == 422, (zone, refused.text)
        assert "unknown time zone" in refused.text
    assert api.put("/api/v1/sites/TZ1", json={"timezone": "Asia/Shanghai"}).status_code == 200
    refused = api.get("/api/v1/alarms", params={"since": "１２"})
    assert refused.status_code == 422, refused.text
    assert "since" in refused.text
    assert api.get("/api/v1/alarms", params={"since": "12"}).status_code == 200


# --- item 12: weak admin tokens ------------------------------------------------


@pytest.mark.parametrize(
    "token", ["a", "short-but-random-7c1f", "change-me-admin-token", "CHANGE-ME-" + "x" * 40]
)
def test_weak_admin_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValidationError, match="FIRESAFE_ADMIN_TOKEN"):
        Settings(admin_token=SecretStr(token))
    assert Settings(admin_token=SecretStr("f" * 32)).admin_token is not None


def test_the_api_does_not_start_with_a_placeholder_token(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "firesafe.cli", "api"],
        env={
            "PATH": "/usr/bin:/bin",
            "FIRESAFE_DATABASE_URL": database_url,
            "FIRESAFE_ADMIN_TOKEN": "change-me-admin-token",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "FIRESAFE_ADMIN_TOKEN" in done.stderr
    assert "openssl rand" in done.stderr


# --- item 15: errors, thresholds, docs, site moves, outages --------------------


def _leaky(app: FastAPI) -> None:
    @app.get("/api/v1/_leak")
    async def leak() -> None:
        raise psycopg.errors.UndefinedTable('relation "secret_table_x" does not exist')


def test_database_error_text_never_reaches_the_client(
    database_url: str, migration: object, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        live_server(database_url, customize=_leaky) as url,
        client(url) as api,
        caplog.at_level(logging.ERROR, logger="api.errors"),
    ):
        response = api.get("/api/v1/_leak")
    assert response.status_code == 500
    error = response.json()["error"]
    assert "secret_table_x" not in response.text
    assert error["code"] == "internal"
    assert error["request_id"] == response.headers["x-request-id"]
    assert any(error["request_id"] in r.getMessage() for r in caplog.records)
    assert any("secret_table_x" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


@pytest.mark.parametrize(
    ("kind", "thresholds", "wanted"),
    [
        ("smoke", {"obscuration_alarm": 2.5}, 200),
        ("smoke", {"residual_current_ma": 300}, 422),  # not a smoke detector's
        ("smoke", {"obscuration_alarm": -1}, 422),
        ("heat", {"no_such_threshold": 1}, 422),
        ("electrical", {"residual_current_ma": 5000}, 422),  # beyond 20-1000 mA
        ("mcp", {"obscuration_alarm": 3}, 422),
        ("smoke", {"obscuration_alarm": 1e308}, 422),  # would never alarm
        ("heat", {"static_c": 20}, 422),  # would alarm on a warm day
        ("electrical", {"cable_temperature_c": 70}, 200),
    ],
)
def test_thresholds_are_validated(
    api: httpx.Client, kind: str, thresholds: dict[str, float], wanted: int
) -> None:
    response = api.post("/api/v1/devices", json=device("TH1", kind=kind, thresholds=thresholds))
    assert response.status_code == wanted, response.text
    if wanted == 422:
        message = response.json()["error"]["message"]
        assert next(iter(thresholds)) in message
        assert "function-after" not in message  # no validator internals
        assert "[" not in message.split(":")[0]


def test_openapi_and_docs_need_a_token_unless_public(api_url: str, database_url: str) -> None:
    with client(api_url, token=None) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/docs").status_code == 404
        assert anonymous.get("/health").status_code == 200
    with client(api_url) as admin:
        schema = admin.get("/openapi.json")
    assert schema.status_code == 200
    assert "/api/v1/alarms" in schema.json()["paths"]
    with live_server(database_url, public_docs=True) as url, client(url, token=None) as anon:
        assert anon.get("/openapi.json").status_code == 200
        assert anon.get("/docs").status_code == 200


def test_moving_a_device_to_another_site_hides_its_history(
    api_url: str, api: httpx.Client, db: str, flavour: str
) -> None:
    register(api, device("MV1", site="S1"))
    before = datetime.now(UTC) - timedelta(minutes=10)
    insert_telemetry(db, flavour, "MV1", [(before, 1, {"obscuration": 0.2})])
    moved = api.post("/api/v1/devices", json=device("MV1", site="S2"))
    assert moved.status_code == 409
    assert "move_site" in moved.json()["error"]["message"]
    assert api.get("/api/v1/devices/MV1").json()["site"] == "S1"
    twice = api.post("/api/v1/devices", json=[device("MV1", site="S1"), device("MV1", site="S2")])
    assert twice.status_code == 422, twice.text  # an id twice: no move sneaks through
    assert api.get("/api/v1/devices/MV1").json()["site"] == "S1"
    register(api, device("MV1", site="S2"), move_site=True)
    after = datetime.now(UTC) + timedelta(minutes=1)
    insert_telemetry(db, flavour, "MV1", [(after, 2, {"obscuration": 0.3})])
    s2 = make_token(api_url, "manager", ["S2"], name="s2-manager")
    s1 = make_token(api_url, "manager", ["S1"], name="s1-manager")
    with client(api_url, token=s2) as manager:
        seen = manager.get("/api/v1/devices/MV1/telemetry")
        assert seen.status_code == 200
        assert [r["seq"] for r in seen.json()["items"]] == [2]
        early = manager.get(
            "/api/v1/devices/MV1/telemetry",
            params={"until": (before + timedelta(seconds=1)).isoformat()},
        )
        assert early.json()["items"] == []
    with client(api_url, token=s1) as old_manager:
        assert old_manager.get("/api/v1/devices/MV1/telemetry").status_code == 403
    everything = api.get("/api/v1/devices/MV1/telemetry").json()["items"]
    assert [r["seq"] for r in everything] == [1, 2]


def test_a_moved_device_with_a_clock_ahead_shows_nothing_of_its_old_site(
    api_url: str, api: httpx.Client, db: str, flavour: str
) -> None:
    """Readings sent for the old site but dated after the move (its clock runs
    an hour ahead) stay with the old site: the new site's manager sees neither
    them nor them as the device's last reading."""
    register(api, device("MV2", site="S1"))
    ahead = datetime.now(UTC) + timedelta(hours=1)
    insert_telemetry(db, flavour, "MV2", [(ahead, 1, {"obscuration": 0.2})])
    register(api, device("MV2", site="S2"), move_site=True)
    s2 = make_token(api_url, "manager", ["S2"], name="s2-manager-ahead")
    with client(api_url, token=s2) as manager:
        assert manager.get("/api/v1/devices/MV2/telemetry").json()["items"] == []
        buckets = manager.get(
            "/api/v1/devices/MV2/telemetry",
            params={"bucket": "1h", "until": (ahead + timedelta(hours=2)).isoformat()},
        )
        assert buckets.json()["items"] == []
        detail = manager.get("/api/v1/devices/MV2").json()
        assert detail["last_reading"] is None
        assert detail["last_ts"] is None
    insert_telemetry(db, flavour, "MV2", [(ahead + timedelta(minutes=1), 2, {"obscuration": 0.3})])
    with client(api_url, token=s2) as manager:
        seen = manager.get(
            "/api/v1/devices/MV2/telemetry",
            params={"until": (ahead + timedelta(hours=1)).isoformat()},
        )
        assert [r["seq"] for r in seen.json()["items"]] == [2]
        assert manager.get("/api/v1/devices/MV2").json()["last_reading"]["seq"] == 2
    assert api.get("/api/v1/devices/MV2").json()["last_reading"]["seq"] == 2


def test_during_a_database_outage_calls_fail_fast_and_health_is_degraded(
    database_url: str, migration: object, db: str
) -> None:
    proxy, via_proxy = database_proxy(database_url)
    with live_server(via_proxy) as url, client(url) as api:
        assert api.get("/api/v1/devices").status_code == 200
        _wait(lambda: api.get("/health").json()["alarm_stream"]["listening"], "LISTEN")
        events: queue.Queue[Any] = queue.Queue()
        _open_stream(url, ADMIN_TOKEN, events)
        assert events.get(timeout=WAIT_S) == ("status", 200)
        proxy.cut()
        # The client's own timeout (10 s) is far below psycopg's default 30 s wait.
        down = api.get("/api/v1/devices")
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "unavailable"
        assert "Retry-After" in down.headers
        health = api.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["database"]["ok"] is False
        assert "database" in health.json()["problems"]
        # Why, for staff: what a connection attempt said, not only "PoolTimeout"
        # (an outside check had to read ingest's log to learn it was refused).
        detail = health.json()["database"]["error_detail"]
        assert detail, health.json()["database"]
        assert detail != "(shown with a token)"
        with client(url, token=None) as anonymous:
            hidden = anonymous.get("/health").json()["database"]["error_detail"]
        assert hidden in (None, "(shown with a token)")
        # The open stream is told and closed instead of heartbeats forever...
        seen = _until(events, ("line", "event: close"))
        assert seen[-1] == ("line", "event: close"), seen
        assert "live_feed_down" in events.get(timeout=WAIT_S)[1]
        # ...and new streams are refused while the feed is down.
        _wait(lambda: not api.get("/health").json()["alarm_stream"]["listening"], "LISTEN down")
        assert api.get("/api/v1/alarms/stream").status_code == 503
        proxy.restore()
        # Back by itself: the pool reconnects, the listener is restarted.
        _wait(lambda: api.get("/api/v1/devices").status_code == 200, "the pool to recover")
        _wait(lambda: api.get("/health").json()["alarm_stream"]["listening"], "LISTEN again")
    proxy.close()


def test_after_a_database_outage_the_api_answers_as_soon_as_the_server_does(
    database_url: str, migration: object, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outside check: after an outage psycopg_pool retried each lost
    connection with a growing backoff (1, 2, 4 ... 64 s), so a busy API (its
    pool grown to the most it may hold, so none is added) answered 503 for
    up to half the outage's length after the server was back (30 s after a
    90 s outage); and after a quick restart the idle connections were all
    dead, found one per try with 1 s and 2 s sleeps between them, so the
    first requests got 503 after 3 s while the server answered. Both are over
    within a moment of the server answering now."""
    monkeypatch.setattr(api_pool, "POOL_MIN_SIZE", POOL_MAX_SIZE)  # a busy API's pool
    proxy, via_proxy = database_proxy(database_url)
    with live_server(via_proxy) as url, client(url) as api:
        assert api.get("/api/v1/devices").status_code == 200
        # A quick restart: every idle connection dead, the server answering.
        proxy.cut()
        proxy.restore()
        time.sleep(1.0)
        assert [api.get("/api/v1/devices").status_code for _ in range(3)] == [200, 200, 200]

        proxy.cut()
        for _ in range(3):  # requests find the connections lost: retried, backing off
            assert api.get("/api/v1/devices").status_code == 503
        time.sleep(6.0)  # past the 5 s a lost connection is retried: the pool shrank
        proxy.restore()
        _wait(lambda: api.get("/api/v1/devices").status_code == 200, "the pool to recover")
    proxy.close()


def test_the_api_waits_at_start_for_a_database_still_starting(
    database_url: str, migration: object, db: str
) -> None:
    """Started before its database answers (a compose file, a reboot), the API
    keeps trying for its start-up's 30 s, not only for the 5 s a connection
    lost later is retried."""
    proxy, via_proxy = database_proxy(database_url)
    proxy.cut()
    threading.Timer(6.0, proxy.restore).start()
    with live_server(via_proxy) as url, client(url) as api:
        assert api.get("/api/v1/devices").status_code == 200
    proxy.close()


def test_a_connection_cut_off_without_a_reset_is_given_up_by_the_sweep(
    database_url: str, migration: object, db: str
) -> None:
    """A recheck's open question: the sweep tests every idle connection one
    after another, each taken out of the pool meanwhile; one cut off without a
    reset (a network partition) would hold them all until TCP gives up, up to
    minutes after the network healed. A check now gives up after 1 s."""
    proxy, via_proxy = database_proxy(database_url)

    async def scenario() -> tuple[int, int, float]:
        api = api_pool.ApiPool(via_proxy)
        await api.open()
        try:
            idle = api.pool.get_stats()["pool_available"]
            proxy.hold()  # nothing answers, nothing is reset
            began = time.monotonic()
            async with asyncio.timeout(20):  # (without a bound on each check: for ever)
                await api.pool.check()
            took = time.monotonic() - began
            lost = api.pool.get_stats().get("connections_lost", 0)
            proxy.release()
            async with api.pool.connection() as conn:
                await conn.execute("SELECT 1")
            return idle, lost, took
        finally:
            proxy.release()
            await api.close()

    idle, lost, took = asyncio.run(scenario())
    assert idle == api_pool.POOL_MIN_SIZE
    assert lost == idle
    # 1 s each (psycopg's polite cancel took 11 s each: 22 s for these two)
    assert took < 4 * api_pool.CHECK_TIMEOUT_S * idle
    proxy.close()


def test_a_dead_background_task_is_restarted_and_visible() -> None:
    async def scenario() -> tuple[int, str | None, str]:
        runs = 0
        second_run = asyncio.Event()

        async def flaky() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise RuntimeError("listener bug")
            second_run.set()
            await asyncio.Event().wait()

        supervisor = Supervisor()
        supervisor.restart_min_s = 0.01
        supervisor.add("listener", flaky)
        task = asyncio.create_task(supervisor.run())
        await asyncio.wait_for(second_run.wait(), WAIT_S)
        state = supervisor.states["listener"]
        result = (state.restarts, state.last_error, state.state)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert supervisor.states["listener"].state == "stopped"
        return result

    restarts, error, state = asyncio.run(scenario())
    assert restarts == 1
    assert error == "RuntimeError: listener bug"
    assert state == "running"


def test_health_shows_the_background_tasks(api_url: str, db: str) -> None:
    with client(api_url, token=None) as anonymous:
        body = anonymous.get("/health").json()
    assert set(body["tasks"]) == {"alarm-listener", "token-watcher"}
    assert all(t["state"] == "running" for t in body["tasks"].values())
    assert body["alarm_stream"]["listening"] is True


# --- item 13: least-privilege database roles (migration 0050) ------------------

# Every table and view the Grafana dashboards read (grafana/dashboard_kit/).
DASHBOARD_RELATIONS = (
    "alarms",
    "devices",
    "device_state",
    "device_events",
    "device_overview",
    "device_thresholds",
    "kind_readings",
    "sites",
    "buildings",
    "floors",
    "zones",
    "telemetry",
    "telemetry_1m",
    "ingest_stats",
    "linkage_commands",
    "reject_counts",
    "unraised_fire_rejects",
)


@pytest.fixture
def logins(db: str) -> Iterator[dict[str, str]]:
    """A login role in each group role, as a deployment makes them: group -> DSN."""
    suffix = secrets.token_hex(4)
    names = {g: f"t_{suffix}_{g}" for g in ("firesafe_ingest", "firesafe_api", "firesafe_grafana")}
    with psycopg.connect(db, autocommit=True) as conn:
        for group, name in names.items():
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                    sql.Identifier(name), sql.Identifier(group)
                )
            )
    try:
        yield {g: pg_conninfo.make_conninfo(db, user=n) for g, n in names.items()}
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _denied(dsn: str, query: str) -> bool:
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(query)
        except psycopg.errors.InsufficientPrivilege:
            return True
        finally:
            conn.rollback()
    return False


def test_grafana_reads_dashboards_but_not_tokens_or_payloads(logins: dict[str, str]) -> None:
    grafana = logins["firesafe_grafana"]
    assert _denied(grafana, "SELECT token_hash FROM api_tokens")
    assert _denied(grafana, "SELECT payload FROM rejects")
    assert _denied(grafana, "SELECT * FROM rejects")
    assert _denied(grafana, "INSERT INTO sites (id) VALUES ('G1')")
    with psycopg.connect(grafana) as conn:
        conn.execute("SELECT received_at, topic, reason, detail, device_id FROM rejects")
        for relation in DASHBOARD_RELATIONS:
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(relation)))


def test_ingest_writes_data_but_never_reads_tokens(logins: dict[str, str]) -> None:
    ingest = logins["firesafe_ingest"]
    assert _denied(ingest, "SELECT token_hash FROM api_tokens")
    assert _denied(ingest, "CREATE TABLE t_intruder (x int)")
    with psycopg.connect(ingest) as conn:
        conn.execute(
            "INSERT INTO rejects (received_at, topic, reason, payload) "
            "VALUES (now(), 't', 'bad_topic', 'x')"
        )
        conn.execute("SELECT * FROM devices LIMIT 1")
        conn.rollback()


def test_the_api_runs_on_its_own_role(logins: dict[str, str], db: str) -> None:
    api_dsn = logins["firesafe_api"]
    assert _denied(api_dsn, "CREATE TABLE t_intruder (x int)")
    with live_server(api_dsn) as url, client(url) as api:
        register(api, device("RL1"))
        token = make_token(url, "manager", ["S1"], name="role-check")
        with psycopg.connect(db, autocommit=True) as conn:
            insert_alarm(conn, id="RLA", device="RL1", verdict="confirmed")
        with client(url, token=token) as manager:
            assert manager.get("/api/v1/alarms").status_code == 200
            assert manager.post("/api/v1/alarms/RLA/ack", json={}).status_code == 200
        assert api.get("/api/v1/rejects").status_code == 200
        assert api.get("/health").json()["database"]["ok"] is True


def test_more_callers_than_connections_are_all_answered(api_url: str) -> None:
    """Three times as many requests at once as the pool has connections, each
    token looked up in the database (a manager's, and made-up ones): every one
    is answered, none with 503. The lookup once took a second connection while
    the request held one: with every connection held by requests waiting for
    their lookup, the whole API answered 503, whoever asked."""
    manager = make_token(api_url, "manager", ["S1"], name="many-at-once")

    async def everyone() -> list[int]:
        limits = httpx.Limits(max_connections=6 * POOL_MAX_SIZE)
        async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as c:

            async def one(i: int) -> int:
                token = manager if i % 2 else f"made-up-token-{i}"
                auth = {"Authorization": f"Bearer {token}"}
                return (await c.get("/api/v1/sites", headers=auth)).status_code

            return await asyncio.gather(*(one(i) for i in range(6 * POOL_MAX_SIZE)))

    codes = asyncio.run(everyone())
    assert codes.count(200) == 3 * POOL_MAX_SIZE
    assert codes.count(401) == 3 * POOL_MAX_SIZE


def test_a_manager_learns_nothing_of_another_sites_devices(
    api_url: str, api: httpx.Client, db: str
) -> None:
    """Asking for another site's device or alarm gets 403 without naming that
    site; a reject on the manager's own topics that names another site's device
    (a gateway topic carrying its id) is not listed to it."""
    register(api, device("MINE1", site="S1"), device("THEIRS1", site="S2"))
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="A-THEIRS", device="THEIRS1", site="S2")
    s1 = make_token(api_url, "manager", ["S1"], name="s1-curious")
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO rejects (received_at, topic, reason, payload, payload_size, detail) "
            "VALUES (now(), 'fs/v1/S1/gateway/THEIRS1/batch', 'site_mismatch', 'x', 70000, "
            "'gateway ''THEIRS1'' is registered at site ''S2'', not ''S1''')"
        )
        conn.execute(
            "INSERT INTO rejects (received_at, topic, reason, payload, payload_size, detail) "
            "VALUES (now(), 'fs/v1/S1/MINE1/telemetry', 'invalid_json', 'x', 70000, 'cut')"
        )
    with client(api_url, token=s1) as manager:
        for path in ("/api/v1/devices/THEIRS1", "/api/v1/alarms/A-THEIRS"):
            denied = manager.get(path)
            assert denied.status_code == 403, path
            assert "S2" not in denied.text
        items = manager.get("/api/v1/rejects").json()["items"]
    assert [(r["topic"], r["payload_size"]) for r in items] == [("fs/v1/S1/MINE1/telemetry", 70000)]


def test_body_errors_name_the_field_at_fault_and_say_json_alike(api: httpx.Client) -> None:
    """A list whose item misses fields is told which field, not "should be an
    object"; broken JSON reads the same on every endpoint, offset in words."""
    r = api.post("/api/v1/devices", json=[{"id": "X1"}])
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert message.startswith("body 0."), message
    assert "Field required" in message
    broken = b'{"note": '
    headers = {"Content-Type": "application/json"}
    for path in ("/api/v1/devices", "/api/v1/alarms/none/ack"):
        r = api.post(path, content=broken, headers=headers)
        assert r.status_code == 422, (path, r.text)
        message = r.json()["error"]["message"]
        assert message == "body: not valid JSON: a value was expected at line 1, column 10"


ZH = {"Accept-Language": "zh-CN"}
JSON = {"Content-Type": "application/json"}
# Two English words in a row: text no template covered (an error left in English).
ENGLISH = re.compile(r"[A-Za-z]{3,} [A-Za-z]{3,}")


# (an outside check: orjson's, pydantic's and json's own English reached
# Chinese callers; each is a stable sentence with its place now)
NOT_JSON: list[tuple[bytes, str, str | None]] = [
    (
        b'{"note": ',
        "body: not valid JSON: a value was expected at line 1, column 10",
        "请求体：不是有效的 JSON：第 1 行第 10 列处缺少一个值",
    ),
    (
        b'[\n  {"id": "X1",\n   "site" "S1"}]',
        "body: not valid JSON: a colon was expected after the key at line 3, column 11",
        "请求体：不是有效的 JSON：第 3 行第 11 列处键之后应为冒号",
    ),
    (
        b'{"note": "a"} x',
        "body: not valid JSON: more text after the value at line 1, column 15",
        "请求体：不是有效的 JSON：第 1 行第 15 列处值之后还有多余的内容",
    ),
    (
        b'{"note": NaN}',
        "body: not valid JSON: NaN and Infinity are not JSON numbers",
        "请求体：不是有效的 JSON：NaN 和 Infinity 不是 JSON 数值",
    ),
    (
        b'{"note": "\xff"}',
        "body: not valid JSON: not UTF-8 (byte 11)",
        "请求体：不是有效的 JSON：不是 UTF-8 编码（第 11 字节处）",
    ),
    (
        b'{"note": "\\ud800"}',
        "body: not valid JSON: an unpaired surrogate escape in a string",
        None,
    ),
    (b"[" * 100_000, "body: not valid JSON: nested too deeply", None),
]


def test_a_body_that_is_not_json_is_told_where_in_the_callers_language(api: httpx.Client) -> None:
    for (body, english, chinese), path in itertools.product(
        NOT_JSON, ("/api/v1/devices", "/api/v1/alarms/none/ack", "/api/v1/tokens")
    ):
        en = api.post(path, content=body, headers=JSON)
        assert en.status_code == 422, (path, en.text)
        assert en.json()["error"] == {
            "code": "invalid_body",
            "message": english,
            "request_id": en.headers["x-request-id"],
        }
        zh = api.post(path, content=body, headers={**JSON, **ZH}).json()["error"]["message"]
        assert not ENGLISH.search(zh), (path, zh)
        if chinese is not None:
            assert zh == chinese, path


def test_a_key_given_twice_in_a_json_body_is_a_422_naming_it(api: httpx.Client) -> None:
    """An outside check: the last of two equal keys won silently (a device's
    zone, a token's name...). Refused at the edge, for every JSON body."""
    device = '"id": "DK1", "site": "S1", "building": "B", "floor": "1", "kind": "smoke"'
    cases = [
        ("POST", "/api/v1/devices", f'{{{device}, "zone": "Z1", "zone": "Z2"}}', "zone"),
        ("POST", "/api/v1/devices", f'[{{{device}, "zone": "Z1", "zone": "Z1"}}]', "zone"),
        (
            "POST",
            "/api/v1/devices",
            f'{{{device}, "zone": "Z", "thresholds": {{"persist_s": 5, "persist_s": 9}}}}',
            "persist_s",
        ),
        ("POST", "/api/v1/tokens", '{"role": "operator", "name": "ann", "name": "bob"}', "name"),
        ("PUT", "/api/v1/sites/S1", '{"name": "A", "name": "B"}', "name"),
        ("POST", "/api/v1/alarms/A1/ack", '{"note": "a", "note": "b"}', "note"),
        (
            "POST",
            "/api/v1/notifications/targets",
            '{"id": "t", "kind": "webhook", "url": "http://8.8.8.8/", "url": "http://h/"}',
            "url",
        ),
        (
            "POST",
            "/api/v1/notifications/rules",
            '{"id": "r", "types": ["fire"], "targets": ["t"], "targets": ["u"]}',
            "targets",
        ),
    ]
    for method, path, body, key in cases:
        r = api.request(method, path, content=body.encode(), headers=JSON)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_body"
        assert r.json()["error"]["message"] == f"body: duplicate key '{key}' in an object", path
        zh = api.request(method, path, content=body.encode(), headers={**JSON, **ZH})
        assert zh.json()["error"]["message"] == f"请求体：同一对象中的键 '{key}' 出现了不止一次"
    assert api.get("/api/v1/devices/DK1").status_code == 404
    assert api.get("/api/v1/sites").json()["items"] == []
    # The same key in two objects is no duplicate, and "a" and "\u0061" are one key.
    two = f'[{{{device}, "zone": "Z"}}, {{{device.replace("DK1", "DK2")}, "zone": "Z"}}]'
    assert api.post("/api/v1/devices", content=two.encode(), headers=JSON).status_code == 200
    escaped = b'{"note": "a", "\\u006eote": "b"}'
    r = api.post("/api/v1/alarms/A1/ack", content=escaped, headers=JSON)
    assert r.json()["error"]["message"] == "body: duplicate key 'note' in an object"


def test_every_route_reads_json_bodies_at_the_edge() -> None:
    """Duplicate keys are refused by api.jsonbody's request class: a router
    made without `route_class=JsonRoute` would let them through unseen."""
    from api.jsonbody import JsonRoute

    def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
        for route in routes:  # (FastAPI keeps an included router as one route)
            if (included := getattr(route, "original_router", None)) is not None:
                yield from api_routes(included.routes)
            elif isinstance(route, APIRoute):
                yield route

    settings = Settings(database_url="postgresql://unused/x", admin_token=SecretStr(ADMIN_TOKEN))
    routes = list(api_routes(create_app(settings).routes))
    assert len(routes) > 20
    assert [r.path for r in routes if not isinstance(r, JsonRoute)] == []


def test_a_hung_database_gets_503_and_degraded_health_within_seconds(
    database_url: str, migration: object, db: str
) -> None:
    """A database that stops answering (a stopped process, a frozen VM) gives
    no error at all: requests must not wait for it as long as it hangs."""
    proxy, via_proxy = database_proxy(database_url)
    with live_server(via_proxy) as url, client(url) as api:
        api.timeout = httpx.Timeout(60.0)
        assert api.get("/api/v1/devices").status_code == 200
        proxy.hold()
        try:
            started = time.monotonic()
            health = api.get("/health")
            health_s = time.monotonic() - started
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert health.json()["database"]["ok"] is False
            started = time.monotonic()
            down = api.get("/api/v1/devices")
            down_s = time.monotonic() - started
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "unavailable"
            assert "Retry-After" in down.headers
            # Bounded by the deadlines, with margins for a loaded machine.
            assert health_s < DB_TIMEOUT_S + DB_ANSWER_S + 5, health_s
            assert down_s < REQUEST_DEADLINE_S + 5, down_s
        finally:
            proxy.release()
        _wait(lambda: api.get("/api/v1/devices").status_code == 200, "the pool to recover")
        _wait(lambda: api.get("/health").json()["database"]["ok"], "health to recover")
    proxy.close()


def test_a_client_gone_mid_body_is_no_server_error(
    database_url: str, migration: object, caplog: pytest.LogCaptureFixture
) -> None:
    """An outside check: an admin client that closed its connection in the
    middle of a device registration's body left two ERROR tracebacks in the
    log (one from the API, one from uvicorn). It is the client's doing: one
    INFO line; the API serves the next request."""
    with (
        live_server(database_url) as url,
        caplog.at_level(logging.INFO),
    ):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=WAIT_S) as sock:
            sock.sendall(
                b"POST /api/v1/devices HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                + b'[{"id":'
            )
        deadline_at = time.monotonic() + WAIT_S
        while time.monotonic() < deadline_at and not any(
            "disconnected before the end of its body" in r.getMessage() for r in caplog.records
        ):
            time.sleep(0.05)
        with client(url) as api:
            assert api.get("/api/v1/devices").status_code == 200
    assert any("disconnected before the end of its body" in r.getMessage() for r in caplog.records)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_forged_cursor_with_a_nul_is_a_422_naming_it(api: httpx.Client) -> None:
    forged = "WyJhbGFybXMiLDE3OTY1ODU2MDg5MjIwMDAsIlx1MDAwMCJd"  # ["alarms",...,"\u0000"]
    response = api.get("/api/v1/alarms", params={"cursor": forged, "limit": 1})
    assert response.status_code == 422
    assert "'cursor'" in response.json()["error"]["message"]


def test_a_query_parameter_given_twice_is_a_422_naming_it(api: httpx.Client) -> None:
    """An outside check: `?site=S001&site=S002` used only the last, silently."""
    response = api.get("/api/v1/alarms?site=S1&site=S2")
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "query parameter 'site': given more than once"
    assert api.get("/api/v1/alarms?site=S1&status=active").status_code == 200


def test_csv_errors_name_the_line_of_the_file_in_the_callers_language(
    api: httpx.Client,
) -> None:
    """An outside check: a cell past the csv module's size limit was reported a
    line early, and a bad number or thresholds cell reached Chinese callers as
    Python's English (`could not convert string to float`). Lines are the
    file's, the header being line 1, also after a cell holding a line break."""
    head = "id,site,building,floor,zone,kind,name,interval_s,thresholds\n"
    first = 'C1,S1,B,1,Z,smoke,"two\nlines",,\n'  # lines 2 and 3
    limit = csv.field_size_limit()
    cases = [
        (
            head + "C0,S1,B,1,Z,smoke,ok,,\n" + f"C2,S1,B,1,Z,smoke,{'x' * (limit + 1)},,\n",
            f"CSV line 3: a cell is longer than {limit} characters",
            f"CSV 第 3 行：有单元格超过 {limit} 个字符",
        ),
        (
            head + first + f"C2,S1,B,1,Z,smoke,{'x' * (limit + 1)},,\n",
            f"CSV line 4: a cell is longer than {limit} characters",
            f"CSV 第 4 行：有单元格超过 {limit} 个字符",
        ),
        (
            head + first + "\nC2,S1,B,1,Z,smokey,,,\n",  # (a blank line 4)
            None,
            None,
        ),
        (
            head + "C2,S1,B,1,Z,smoke,,fast,\n",
            "CSV line 2: interval_s: not a number: 'fast'",
            "CSV 第 2 行：interval_s：不是数字：'fast'",
        ),
        (
            head + first + 'C2,S1,B,1,Z,smoke,,,"{""persist_s"": }"\n',
            "CSV line 4: thresholds: not valid JSON: a value was expected at line 1, column 15",
            "CSV 第 4 行：thresholds：不是有效的 JSON：第 1 行第 15 列处缺少一个值",
        ),
        (
            head + 'C2,S1,B,1,Z,smoke,,,"{""persist_s"": 5, ""persist_s"": 9}"\n',
            "CSV line 2: thresholds: duplicate key 'persist_s' in an object",
            "CSV 第 2 行：thresholds：同一对象中的键 'persist_s' 出现了不止一次",
        ),
    ]
    csv_type = {"Content-Type": "text/csv"}
    for text, english, chinese in cases:
        for path in ("/api/v1/devices", "/api/v1/devices/import"):
            en = api.post(path, content=text.encode(), headers=csv_type)
            assert en.status_code == 422, en.text
            message = en.json()["error"]["message"]
            zh = api.post(path, content=text.encode(), headers={**csv_type, **ZH})
            zh_message = zh.json()["error"]["message"]
            if english is None:  # a field of line 5
                assert message.startswith("CSV line 5: kind: "), message
                assert zh_message.startswith("CSV 第 5 行：kind："), zh_message
                continue
            assert message == english
            assert zh_message == chinese
    assert api.get("/api/v1/devices").json()["items"] == []
