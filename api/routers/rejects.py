"""/api/v1/rejects: the bad input of contract section 3."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, localize, request_lang
from api.jsonbody import JsonRoute
from api.params import (
    DEFAULT_LIMIT,
    Cursor,
    Instant,
    Limit,
    check_range,
    encode_cursor,
    micros,
    parse_instant,
    time_key,
)
from api.schemas import Page, RejectOut, RejectReason
from firesafe.i18n import DEFAULT_LANG
from storage.queries import rejects as reject_q

router = APIRouter(
    prefix="/api/v1/rejects", tags=["rejects"], responses=ERROR_RESPONSES, route_class=JsonRoute
)


def _payload(raw: bytes) -> tuple[str, str]:
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def _translate(details: Sequence[str], lang: str) -> None:
    for detail in details:
        localize(detail, lang)  # (remembered: `detail_label` finds it)


def _reject(row: dict[str, Any]) -> RejectOut:
    payload, encoding = _payload(bytes(row["payload"]))
    return RejectOut(
        id=str(row["id"]),
        received_at=row["received_at"],
        topic=row["topic"],
        reason=row["reason"],
        payload=payload,
        encoding=encoding,  # type: ignore[arg-type]
        detail=row["detail"],
        device=row["device_id"],
        payload_size=row["payload_size"],
    )


@router.get(
    "",
    response_model=Page[RejectOut],
    summary="Rejected messages, newest first",
    description="Filter by `reason` and by arrival time (`since`/`until` on received_at). "
    "A manager sees the rejects published on its sites' topics. Counts per reason are "
    "in /metrics.",
)
async def list_rejects(
    conn: ConnDep,
    caller: CallerDep,
    reason: Annotated[RejectReason | None, Query()] = None,
    since: Instant = None,
    until: Instant = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[RejectOut]:
    since_at = parse_instant("since", since)
    until_at = parse_instant("until", until)
    check_range(since_at, until_at)
    after = time_key("rejects", cursor, int)
    rows = await reject_q.list_rejects(
        conn,
        scope=caller.scope,
        reason=reason,
        since=since_at,
        until=until_at,
        after=after,
        limit=limit,
    )
    lang = request_lang.get()
    details = [str(r["detail"]) for r in rows if r["detail"]]
    if lang != DEFAULT_LANG and details:
        # Translated template by template: in a worker thread, so a long list
        # does not hold the event loop (a recheck's 1,000 gateway rejects in
        # Chinese held /health for seconds); serializing finds them remembered.
        await asyncio.to_thread(_translate, details, lang)
    next_cursor = (
        encode_cursor("rejects", micros(rows[-1]["received_at"]), rows[-1]["id"])
        if len(rows) == limit
        else None
    )
    return Page[RejectOut](items=[_reject(r) for r in rows], next_cursor=next_cursor)
