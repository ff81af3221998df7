"""The registration example of README "Add a site's devices" (and its copies
in docs/production*.md and the Chinese README), sent as written to a live
API: the newcomer check found it refused (its exit sign's routes named
zones no device was in)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.test_api_support import client, live_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
COPIES = ("README.md", "README.zh-CN.md", "docs/production.md", "docs/production.zh-CN.md")
# `curl ... -X METHOD https://localhost:8443/PATH \ ... -d 'BODY'`
CURL = re.compile(
    r"curl [^\n]*-X (POST|PUT) https://localhost:8443(/api/v1/\S+) \\\n.*?-d '(.*?)'", re.S
)


def examples(name: str) -> list[tuple[str, str, object]]:
    text = (ROOT / name).read_text()
    at = text.index("S7-B1-F2-SD01")  # the section's first example
    found = [
        (m[1], m[2], orjson.loads(m[3])) for m in CURL.finditer(text, text.rfind("```", 0, at))
    ]
    return [e for e in found if "/sites/S7" in e[1] or e[1].endswith("/devices")][:2]


@pytest.fixture(scope="module")
def api_url(database_url: str, migration: object) -> Iterator[str]:
    with live_server(database_url) as url:
        yield url


def test_the_registration_example_works_as_written(api_url: str, db: str) -> None:
    written = examples("README.md")
    assert [(method, path) for method, path, _ in written] == [
        ("POST", "/api/v1/devices"),
        ("PUT", "/api/v1/sites/S7"),
    ]
    for other in COPIES[1:]:
        assert examples(other) == written, other
    with client(api_url) as api:
        for method, path, body in written:
            response = api.request(method, path, json=body)
            assert response.status_code in (200, 201), response.text
        sign = api.get("/api/v1/devices/S7-B1-F2-EX01").json()
        assert sign["routes"] == {"left": "Z2", "right": "Z4"}
