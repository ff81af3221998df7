"""The alarm stream's events match what the OpenAPI document says of them
(schemathesis 4 checks each text/event-stream event against `schema`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest

from tests.test_api_support import ADMIN, client, device, insert_alarm, live_server, register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url, heartbeat_s=0.5) as url:
        yield url


def _first_event(api_url: str, ready: threading.Event) -> dict[str, str]:
    """The first event with data, parsed field by field as an EventSource would."""
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=10)) as http,
        http.stream("GET", f"{api_url}/api/v1/alarms/stream", headers=ADMIN) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # heartbeat comment: not an event
            if line == "":
                if "data" in event:
                    return event
                event = {}  # e.g. the `retry:` hint alone: no data, no event
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "retry":
                ready.set()  # sent once the stream is subscribed
                continue
            event[key] = value
    raise AssertionError("the stream ended without an event")


def _with_components(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "components": spec["components"]}


def test_stream_events_match_the_declared_schema(api_url: str, db: str) -> None:
    with client(api_url) as api:
        register(api, device("D1"))
    spec = httpx.get(f"{api_url}/openapi.json", headers=ADMIN).json()
    declared = spec["paths"]["/api/v1/alarms/stream"]["get"]["responses"]["200"]["content"]
    assert list(declared) == ["text/event-stream"]
    event_schema = declared["text/event-stream"]["schema"]
    assert event_schema["properties"]["data"]["contentMediaType"] == "application/json"

    got: list[dict[str, str]] = []
    ready = threading.Event()
    reader = threading.Thread(target=lambda: got.append(_first_event(api_url, ready)))
    reader.start()
    assert ready.wait(10)
    with psycopg.connect(db, autocommit=True) as conn:
        insert_alarm(conn, id="SSE1", device="D1", site="S1", type="fault", verdict="confirmed")
    reader.join(10)
    [event] = got
    jsonschema.validate(event, _with_components(event_schema, spec))
    content_schema = event_schema["properties"]["data"]["contentSchema"]
    jsonschema.validate(json.loads(event["data"]), _with_components(content_schema, spec))
    assert event["event"] == "alarm"
