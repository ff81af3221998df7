"""/api/v1/sites: the sites a caller may see, each with its summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, ErrorResponse
from api.params import DEFAULT_LIMIT, ID_REGEX, Cursor, Limit, decode_cursor, encode_cursor
from api.schemas import AlarmCount, Page, SiteSummary
from storage.queries import NotFoundError
from storage.queries import stats as stats_q

router = APIRouter(prefix="/api/v1/sites", tags=["sites"], responses=ERROR_RESPONSES)


async def _summaries(conn: ConnDep, rows: list[dict[str, object]]) -> list[SiteSummary]:
    figures = await stats_q.site_summaries(conn, sites=[str(r["id"]) for r in rows])
    out = []
    for row in rows:
        f = figures[str(row["id"])]
        out.append(
            SiteSummary(
                site=str(row["id"]),
                name=row["name"],  # type: ignore[arg-type]
                devices=f["devices"],
                offline_devices=f["offline_devices"],
                open_alarms=[AlarmCount.model_validate(c) for c in f["open_alarms"]],
                suppressed_today=f["suppressed_today"],
            )
        )
    return out


@router.get(
    "",
    response_model=Page[SiteSummary],
    summary="Sites with their summary (a manager: its own sites)",
)
async def list_sites(
    conn: ConnDep, caller: CallerDep, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[SiteSummary]:
    key = decode_cursor(cursor, "sites", (str,))
    rows = await stats_q.list_sites(
        conn, scope=caller.scope, after_id=key[0] if key else None, limit=limit
    )
    next_cursor = encode_cursor("sites", rows[-1]["id"]) if len(rows) == limit else None
    return Page[SiteSummary](items=await _summaries(conn, rows), next_cursor=next_cursor)


@router.get(
    "/{site_id}/summary",
    response_model=SiteSummary,
    responses={404: {"model": ErrorResponse}},
    summary="Open alarms by type and verdict, offline devices, suppressed today",
)
async def site_summary(
    site_id: Annotated[str, Path(pattern=ID_REGEX)], conn: ConnDep, caller: CallerDep
) -> SiteSummary:
    caller.scope.check(site_id)
    rows = await stats_q.list_sites(conn, scope=caller.scope, site=site_id, limit=1)
    if not rows:
        raise NotFoundError(f"site {site_id!r} not found")
    return (await _summaries(conn, rows))[0]
