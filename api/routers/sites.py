"""/api/v1/sites: the sites a caller may see, each with its summary."""

from __future__ import annotations

import zoneinfo
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, field_validator

from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, BadParameter, ErrorResponse
from api.jsonbody import JsonRoute
from api.params import DEFAULT_LIMIT, ID_REGEX, Cursor, Limit, decode_cursor, encode_cursor
from api.schemas import AlarmCount, Page, SiteStandard, SiteSummary, Text, not_reserved_site
from storage.queries import NotFoundError
from storage.queries import sites as sites_q
from storage.queries import stats as stats_q

_IANA_ZONES = frozenset(zoneinfo.available_timezones()) - {"localtime", "Factory"}

router = APIRouter(
    prefix="/api/v1/sites", tags=["sites"], responses=ERROR_RESPONSES, route_class=JsonRoute
)


async def _summaries(conn: ConnDep, rows: list[dict[str, object]]) -> list[SiteSummary]:
    ids = [str(r["id"]) for r in rows]
    figures = await stats_q.site_summaries(conn, sites=ids)
    local = await sites_q.site_settings(conn, sites=ids)
    out = []
    for row in rows:
        f = figures[str(row["id"])]
        tz_std = local.get(str(row["id"]), {})
        out.append(
            SiteSummary(
                site=str(row["id"]),
                name=row["name"],  # type: ignore[arg-type]
                devices=f["devices"],
                offline_devices=f["offline_devices"],
                open_alarms=[AlarmCount.model_validate(c) for c in f["open_alarms"]],
                suppressed_today=f["suppressed_today"],
                **tz_std,
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


class SiteIn(BaseModel):
    """A site's settings; a field left out keeps its value (new sites: UTC, EN)."""

    name: Annotated[Text, Field(min_length=1, max_length=200)] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(
        default=None,
        description="IANA time zone, e.g. Asia/Shanghai; the API keeps UTC, dashboards and "
        "notifications show local time",
        examples=["Asia/Shanghai"],
    )
    standard: SiteStandard | None = Field(
        default=None,
        description="EN or GB: which standards' default thresholds the site's devices follow "
        "(README: Standards)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Only the database's names: not `localtime` (the server's own zone),
        # `Factory`, nor the `posix/` and `right/` (leap seconds) copies, which
        # ZoneInfo also opens.
        if value not in _IANA_ZONES:
            raise ValueError(f"unknown time zone {value!r} (an IANA name like Asia/Shanghai)")
        return value


@router.put(
    "/{site_id}",
    response_model=SiteSummary,
    summary="Create a site or set its name, time zone and standard (admin)",
)
async def put_site(
    site_id: Annotated[str, Path(pattern=ID_REGEX)],
    body: SiteIn,
    conn: ConnDep,
    caller: CallerDep,
) -> SiteSummary:
    caller.require("admin")
    try:
        not_reserved_site(site_id)
    except ValueError as exc:
        raise BadParameter("site_id", str(exc), where="path") from None
    await sites_q.upsert_site(
        conn,
        scope=caller.scope,
        site=site_id,
        name=body.name,
        timezone=body.timezone,
        standard=body.standard,
    )
    rows = await stats_q.list_sites(conn, scope=caller.scope, site=site_id, limit=1)
    return (await _summaries(conn, rows))[0]
