"""/api/v1/alarms: list, live stream (SSE), detail, acknowledge, clear, confirm, dismiss."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from api import render
from api.dbtypes import shift
from api.deps import CallerDep, ConnDep, StateDep
from api.errors import ERROR_RESPONSES, BadParameter, ErrorResponse
from api.jsonbody import JsonRoute
from api.params import (
    DEFAULT_LIMIT,
    NAME_REGEX,
    Cursor,
    DeviceParam,
    Instant,
    Limit,
    NameParam,
    SiteParam,
    check_range,
    encode_cursor,
    micros,
    parse_instant,
    time_key,
)
from api.schemas import (
    AlarmChange,
    AlarmDetail,
    AlarmLogEntry,
    AlarmOut,
    AlarmType,
    DeviceEvent,
    Evidence,
    LinkageCommand,
    NoteIn,
    Page,
    Reading,
    Status,
    Verdict,
)
from api.state import AppState
from api.stream import MAX_STREAMS_PER_TOKEN, TOKEN_CHECK_S, Subscription
from storage.queries import Scope
from storage.queries import alarms as alarm_q
from storage.queries import devices as device_q
from storage.queries import telemetry as telemetry_q
from storage.queries.alarms import AlarmFilter

router = APIRouter(
    prefix="/api/v1/alarms", tags=["alarms"], responses=ERROR_RESPONSES, route_class=JsonRoute
)

# Evidence window around an alarm: enough to see the rise that opened it.
EVIDENCE_BEFORE = timedelta(minutes=5)
EVIDENCE_AFTER = timedelta(minutes=5)
EVIDENCE_MAX_READINGS = 500
EVIDENCE_MAX_EVENTS = 100
# Rows read per query while a stream catches up.
STREAM_BATCH = 500
# Tells EventSource clients how soon to reconnect (ms).
SSE_RETRY_MS = 3000
# Last-Event-ID: an alarm_log id (bigserial) as the stream sent it, digits only.
_LOG_ID = re.compile(r"[0-9]{1,19}")
MAX_LOG_ID = 2**63 - 1

AlarmId = Annotated[str, Path(pattern=NAME_REGEX, description="Alarm id")]


def _alarm_change_schema() -> dict[str, Any]:
    """AlarmChange's JSON Schema, its nested models referring to the components
    (AlarmOut is there already: the alarm list returns it)."""
    schema = AlarmChange.model_json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schema.pop("$defs", None)
    return schema


# One event of the stream, as OpenAPI 3.1 can say it (3.2 names this `itemSchema`;
# tools such as schemathesis read `schema` of text/event-stream per event):
# `id` the alarm_log id, `event: alarm`, `data` an AlarmChange as JSON.
# Heartbeats are comments and the `retry:` hint carries no data: neither is an event.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "event", "data"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "alarm_log id"},
        "event": {"type": "string", "const": "alarm"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": _alarm_change_schema(),
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}
SSE_RESPONSE: dict[str, Any] = {
    "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
    "description": "An endless text/event-stream, one event per alarm change",
}


def _filters(
    site: SiteParam = None,
    building: NameParam = None,
    zone: NameParam = None,
    device: DeviceParam = None,
    type: Annotated[AlarmType | None, Query()] = None,
    verdict: Annotated[Verdict | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
) -> AlarmFilter:
    return AlarmFilter(
        site=site,
        building=building,
        zone=zone,
        device=device,
        type=type,
        verdict=verdict,
        status=status,
    )


@router.get(
    "",
    response_model=Page[AlarmOut],
    summary="Alarms, newest first (opened_at desc, id desc)",
    description="`since`/`until` filter on opened_at (since inclusive, until exclusive).",
)
async def list_alarms(
    conn: ConnDep,
    caller: CallerDep,
    site: SiteParam = None,
    building: NameParam = None,
    zone: NameParam = None,
    device: DeviceParam = None,
    type: Annotated[AlarmType | None, Query()] = None,
    verdict: Annotated[Verdict | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    since: Instant = None,
    until: Instant = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    since_at = parse_instant("since", since)
    until_at = parse_instant("until", until)
    check_range(since_at, until_at)
    after = time_key("alarms", cursor, str)
    rows = await alarm_q.list_alarms(
        conn,
        scope=caller.scope,
        filters=_filters(site, building, zone, device, type, verdict, status),
        since=since_at,
        until=until_at,
        after=after,
        limit=limit,
    )
    next_cursor = (
        encode_cursor("alarms", micros(rows[-1]["opened_at"]), rows[-1]["id"])
        if len(rows) == limit
        else None
    )
    return render.page(map(render.alarm, rows), next_cursor)


def _change(row: dict[str, Any]) -> bytes:
    change = AlarmChange(
        log_id=row["log_id"],
        at=row["log_at"],
        action=row["action"],
        actor=row["actor"],
        note=row["note"],
        alarm=AlarmOut.model_validate(row),
    )
    return (
        f"id: {row['log_id']}\nevent: alarm\ndata: ".encode()
        + change.model_dump_json().encode()
        + b"\n\n"
    )


async def _events(
    state: AppState,
    request: Request,
    sub: Subscription,
    scope: Scope,
    filters: AlarmFilter,
    last_id: int | None,
) -> AsyncIterator[bytes]:
    sent_recent: set[int] = set()
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        if last_id is not None:
            sub.request_resync()
        while True:
            if sub.closed is not None:
                # Token revoked/expired, or the live feed is down: say why and end.
                yield b"event: close\ndata: " + orjson.dumps({"reason": sub.closed}) + b"\n\n"
                return
            if sub.resync:
                sub.resync = False
                sub.drain()
                cursor_id = last_id if last_id is not None else 0
                while True:
                    async with state.pool.connection() as conn:
                        rows = await alarm_q.changes(
                            conn,
                            scope=scope,
                            filters=filters,
                            after_log_id=cursor_id,
                            limit=STREAM_BATCH,
                        )
                    for row in rows:
                        if row["log_id"] not in sent_recent:
                            sent_recent.add(row["log_id"])
                            yield _change(row)
                        last_id = max(last_id or 0, row["log_id"])
                    if len(rows) < STREAM_BATCH:
                        break
                    cursor_id = rows[-1]["log_id"]
                continue
            try:
                await asyncio.wait_for(sub.wake.wait(), timeout=state.heartbeat_s)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": heartbeat\n\n"
                continue
            ids = [i for i in sub.drain() if i not in sent_recent]
            if not ids or sub.resync or sub.closed is not None:
                continue
            async with state.pool.connection() as conn:
                rows = await alarm_q.changes(
                    conn, scope=scope, filters=filters, log_ids=ids, limit=len(ids)
                )
            for row in rows:
                sent_recent.add(row["log_id"])
                yield _change(row)
            # Ids only matter to the catch-up; keep the set small.
            newest = max(ids)
            last_id = max(last_id or 0, newest)
            if len(sent_recent) > 10 * STREAM_BATCH:
                sent_recent = {i for i in sent_recent if i > newest - STREAM_BATCH}
    finally:
        state.hub.unsubscribe(sub)


def _last_event_id(header: str | None) -> int | None:
    """The alarm_log id a reconnecting client last saw. Only the digits of an id
    the stream sent: `-1` replayed everything and `+5`, `1_0` or ` 5` passed
    int() (an outside check), an id past bigint was the database's 422."""
    if header is None:
        return None
    if _LOG_ID.fullmatch(header) is None or int(header) > MAX_LOG_ID:
        raise BadParameter(
            "Last-Event-ID", "must be an alarm_log id (a non-negative integer)", where="header"
        )
    return int(header)


@router.get(
    "/stream",
    summary="Live alarm changes (Server-Sent Events)",
    description="Each event: `id` = alarm_log id, `event: alarm`, `data` = AlarmChange JSON. "
    "Same filters as the list (role and sites apply). Heartbeat comments keep the "
    "connection open; reconnect with `Last-Event-ID` (the last `id` received; anything "
    "else, a negative number say, is a 422) to receive what was missed. "
    'The stream ends with `event: close` (`data` {"reason"}) when its token is revoked '
    f"or expires (within {TOKEN_CHECK_S:g} s) or the live feed is down (reconnect). "
    f"At most {MAX_STREAMS_PER_TOKEN} streams per token (429 past it); 503 while the "
    "live feed is down.",
    response_class=StreamingResponse,
    responses={
        200: SSE_RESPONSE,
        429: {"model": ErrorResponse, "description": "Too many open streams for this token"},
    },
)
async def stream_alarms(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    site: SiteParam = None,
    building: NameParam = None,
    zone: NameParam = None,
    device: DeviceParam = None,
    type: Annotated[AlarmType | None, Query()] = None,
    verdict: Annotated[Verdict | None, Query()] = None,
    status: Annotated[Status | None, Query()] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    last_id = _last_event_id(last_event_id)
    sub = state.hub.subscribe(caller.stream_key, caller.token_id)
    events = _events(
        state,
        request,
        sub,
        caller.scope,
        _filters(site, building, zone, device, type, verdict, status),
        last_id,
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{alarm_id}",
    response_model=AlarmDetail,
    responses={404: {"model": ErrorResponse}},
    summary="An alarm with its audit trail and the readings around it",
)
async def get_alarm(alarm_id: AlarmId, conn: ConnDep, caller: CallerDep) -> AlarmDetail:
    row = await alarm_q.get_alarm(conn, scope=caller.scope, alarm_id=alarm_id)
    log_rows = await alarm_q.alarm_log(conn, alarm_id=alarm_id)
    command_rows = await alarm_q.alarm_commands(conn, alarm_id=alarm_id)
    since = shift(row["opened_at"], -EVIDENCE_BEFORE)
    until = shift(max(row["confirmed_at"] or row["opened_at"], row["opened_at"]), EVIDENCE_AFTER)
    if row["device"] is None:  # a site-level alarm: no device of its own to show
        return AlarmDetail(
            **AlarmOut.model_validate(row).model_dump(),
            log=[AlarmLogEntry.model_validate(r) for r in log_rows],
            commands=[LinkageCommand.model_validate(r) for r in command_rows],
            evidence=Evidence(since=since, until=until, readings=[], events=[]),
        )
    if caller.scope.sites is not None:
        # A device moved between sites: each site's managers see its own period only.
        moved = await device_q.site_since(conn, device_id=row["device"])
        if moved is not None and moved[1] is not None:
            if moved[0] == row["site"]:
                since = max(since, moved[1])
            else:
                until = min(until, moved[1])
            until = max(until, since)
    readings = await telemetry_q.raw_readings(
        conn,
        device_id=row["device"],
        since=since,
        until=until,
        after=None,
        descending=False,
        limit=EVIDENCE_MAX_READINGS,
    )
    events = await alarm_q.device_events(
        conn, device_id=row["device"], since=since, until=until, limit=EVIDENCE_MAX_EVENTS
    )
    return AlarmDetail(
        **AlarmOut.model_validate(row).model_dump(),
        log=[AlarmLogEntry.model_validate(r) for r in log_rows],
        commands=[LinkageCommand.model_validate(r) for r in command_rows],
        evidence=Evidence(
            since=since,
            until=until,
            readings=[Reading(ts=r.ts, seq=r.seq, v=r.v) for r in readings],
            events=[DeviceEvent.model_validate(e) for e in events],
        ),
    )


NoteBody = Annotated[NoteIn | None, Body()]


@router.post(
    "/{alarm_id}/ack",
    response_model=AlarmOut,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    summary="Acknowledge (any role within its sites); again is a no-op",
    description="Recorded in the audit trail with the token's name; 409 when the "
    "alarm is already cleared.",
)
async def ack_alarm(
    alarm_id: AlarmId, conn: ConnDep, caller: CallerDep, body: NoteBody = None
) -> AlarmOut:
    caller.require("admin", "operator", "manager")
    row, _ = await alarm_q.acknowledge(
        conn,
        scope=caller.scope,
        alarm_id=alarm_id,
        actor=caller.name,
        note=body.note if body else None,
    )
    return AlarmOut.model_validate(row)


@router.post(
    "/{alarm_id}/clear",
    response_model=AlarmOut,
    responses={404: {"model": ErrorResponse}},
    summary="Clear (admin, operator); again is a no-op",
    description="Recorded in the audit trail with the token's name. Managers may "
    "acknowledge but not clear.",
)
async def clear_alarm(
    alarm_id: AlarmId, conn: ConnDep, caller: CallerDep, body: NoteBody = None
) -> AlarmOut:
    caller.require("admin", "operator")
    row, _ = await alarm_q.clear(
        conn,
        scope=caller.scope,
        alarm_id=alarm_id,
        actor=caller.name,
        note=body.note if body else None,
    )
    return AlarmOut.model_validate(row)


@router.post(
    "/{alarm_id}/confirm",
    response_model=AlarmOut,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    summary="Confirm a pending fire or electrical alarm (admin, operator); again is a no-op",
    description="A person verified the fire: verdict `confirmed`, reason `operator`, "
    "recorded in the audit trail with the token's name and the note, streamed like every "
    "change, and evacuation linkage follows as for any confirmed fire. 409 when the alarm "
    "is not pending (already judged or cleared) or of a type without verification.",
)
async def confirm_alarm(
    alarm_id: AlarmId, conn: ConnDep, caller: CallerDep, body: NoteBody = None
) -> AlarmOut:
    caller.require("admin", "operator")
    row, _ = await alarm_q.verify(
        conn,
        scope=caller.scope,
        alarm_id=alarm_id,
        actor=caller.name,
        note=body.note if body else None,
        verdict="confirmed",
    )
    return AlarmOut.model_validate(row)


@router.post(
    "/{alarm_id}/dismiss",
    response_model=AlarmOut,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
    summary="Dismiss a pending fire or electrical alarm as false (admin, operator)",
    description="A person judged it a false alarm: verdict `suppressed`, reason `operator`, "
    "status `cleared`; audited with the token's name and the note. A confirmed alarm "
    "cannot be dismissed (it latches until cleared): 409. Again is a no-op.",
)
async def dismiss_alarm(
    alarm_id: AlarmId, conn: ConnDep, caller: CallerDep, body: NoteBody = None
) -> AlarmOut:
    caller.require("admin", "operator")
    row, _ = await alarm_q.verify(
        conn,
        scope=caller.scope,
        alarm_id=alarm_id,
        actor=caller.name,
        note=body.note if body else None,
        verdict="suppressed",
    )
    return AlarmOut.model_validate(row)
