"""Fast JSON rendering of the hot list endpoints.

The alarm list and telemetry return up to 1000 items; validating them
through pydantic twice (model, then response_model) costs more than the
query. These endpoints build plain dicts in the documented shapes (the
pydantic models stay their OpenAPI schema, and the schemathesis test checks
the two agree) and serialize them once with orjson.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi.responses import Response

from api.errors import request_lang
from firesafe.i18n import label
from storage.queries.telemetry import Bucket, Reading

ALARM_FIELDS = (
    "id",
    "type",
    "verdict",
    "status",
    "device",
    "site",
    "building",
    "floor",
    "zone",
    "reason",
    "acknowledged_by",
    "cleared_by",
    "detail",
)
ALARM_TIMES = ("opened_at", "confirmed_at", "cleared_at", "acknowledged_at", "updated_at")


def iso_ms(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-25T22:31:06.123Z."""
    # isoformat is implemented in C; an aware UTC value always ends in +00:00.
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def maybe_iso_ms(value: datetime | None) -> str | None:
    return None if value is None else iso_ms(value)


# Label fields of AlarmOut (api.schemas): field -> (vocabulary, code field).
ALARM_LABELS = (
    ("type_label", "alarm_type", "type"),
    ("verdict_label", "verdict", "verdict"),
    ("status_label", "status", "status"),
    ("reason_label", "reason", "reason"),
)


def alarm(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ALARM_FIELDS}
    for k in ALARM_TIMES:
        out[k] = maybe_iso_ms(row[k])
    lang = request_lang.get()
    for field, vocabulary, code in ALARM_LABELS:
        out[field] = label(vocabulary, row[code], lang)
    return out


def reading(r: Reading) -> dict[str, Any]:
    return {"ts": iso_ms(r.ts), "seq": r.seq, "v": r.v}


def bucket(b: Bucket) -> dict[str, Any]:
    return {
        "ts": iso_ms(b.ts),
        "v": {k: {"min": a.min, "max": a.max, "avg": a.avg, "n": a.n} for k, a in b.v.items()},
    }


def json_response(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def page(items: Iterable[dict[str, Any]], next_cursor: str | None, **extra: Any) -> Response:
    return json_response({**extra, "items": list(items), "next_cursor": next_cursor})
