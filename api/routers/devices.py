"""/api/v1/devices: register (JSON or CSV), list, detail."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import TypeAdapter, ValidationError

from api import jsonbody
from api.deps import CallerDep, ConnDep, StateDep
from api.errors import ERROR_RESPONSES, BadBody, ErrorResponse, field_path, most_specific
from api.jsonbody import JsonBodyError, JsonRoute
from api.middleware import IMPORT_MAX_BODY_BYTES
from api.params import (
    DEFAULT_LIMIT,
    ID_REGEX,
    Cursor,
    Limit,
    NameParam,
    SiteParam,
    decode_cursor,
    encode_cursor,
)
from api.schemas import (
    AlarmOut,
    DeviceDetail,
    DeviceIn,
    DeviceOut,
    DeviceState,
    Kind,
    LinkStats,
    Page,
    Reading,
)
from storage.queries import alarms as alarm_q
from storage.queries import devices as device_q
from storage.queries import telemetry as telemetry_q
from storage.queries.alarms import AlarmFilter
from storage.queries.devices import DeviceSpec

router = APIRouter(
    prefix="/api/v1/devices", tags=["devices"], responses=ERROR_RESPONSES, route_class=JsonRoute
)

# One request registers a whole building's worth; larger imports go in several requests.
MAX_DEVICES_PER_REQUEST = 10_000
# Request bodies above this are refused (10 000 devices fit easily); the ASGI
# middleware enforces it before authentication, this check stays as a backstop.
MAX_BODY_BYTES = IMPORT_MAX_BODY_BYTES
# Open alarms shown on a device's detail page.
DETAIL_OPEN_ALARMS = 100
CSV_COLUMNS = (
    "id",
    "site",
    "building",
    "floor",
    "zone",
    "kind",
    "name",
    "interval_s",
    "thresholds",
    "route_left",
    "route_right",
)

DeviceId = Annotated[str, Path(pattern=ID_REGEX, description="Device id")]

_devices = TypeAdapter(DeviceIn | list[DeviceIn])
_device_list = TypeAdapter(list[DeviceIn])


def _request_body_schema() -> dict[str, Any]:
    schema = _devices.json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {
        "required": True,
        "content": {
            "application/json": {"schema": schema},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "id,site,building,floor,zone,kind,name,interval_s,thresholds,"
                "route_left,route_right\nD1,S1,B1,1,Z1,smoke,Lobby,,,,\n",
            },
        },
    }


def body_components() -> dict[str, Any]:
    """Schemas the request body refers to, for the app's OpenAPI components."""
    defs: dict[str, Any] = _devices.json_schema(ref_template="#/components/schemas/{model}").get(
        "$defs", {}
    )
    return defs


def _to_spec(device: DeviceIn) -> DeviceSpec:
    routes = None
    if device.routes is not None:
        routes = device.routes.model_dump(exclude_none=True)
    return DeviceSpec(
        id=device.id,
        site=device.site,
        building=device.building,
        floor=device.floor,
        zone=device.zone,
        kind=device.kind,
        name=device.name,
        interval_s=device.interval_s,
        thresholds=device.thresholds,
        routes=routes,
        address=device.address,
        utc_offset_min=device.utc_offset_min,
    )


def _errors_message(exc: ValidationError, csv_line: int | None = None) -> str:
    first = most_specific(exc.errors())
    loc = field_path(first["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    what = str(first["msg"]).removeprefix("Value error, ")  # a validator's own sentence
    if csv_line is None:
        where = f"body {loc}" if loc else "body"
    else:
        where = f"CSV line {csv_line}: {loc}" if loc else f"CSV line {csv_line}"
    return f"{where}: {what}{more}"


def parse_csv(text: str) -> list[DeviceIn]:
    """One device per row; header names from CSV_COLUMNS (id..kind required).

    `thresholds` is a JSON object; `route_left`/`route_right` fill `routes`;
    empty cells mean "not given". Errors name the line of the file (the
    header is line 1): a row's first line, a cell past the csv module's size
    limit at the line where it passes it.
    """
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows)
    except StopIteration:
        header = []
    except csv.Error as exc:
        raise BadBody(f"CSV line {rows.line_num}: {_csv_problem(exc)}") from exc
    missing = [c for c in CSV_COLUMNS[:6] if c not in header]
    if missing:
        raise BadBody(f"CSV header lacks column(s) {', '.join(missing)}")
    # A typo (`zoen`) or a column twice would be ignored, or the last one
    # silently kept: the device stored differs from the sheet.
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise BadBody(
            f"CSV header has unknown column(s) {_some(map(repr, unknown))}; "
            f"known: {', '.join(CSV_COLUMNS)}"
        )
    twice = sorted(c for c, n in Counter(header).items() if n > 1)
    if twice:
        raise BadBody(f"CSV header names column(s) {_some(twice)} more than once")
    return _csv_devices(header, _records(rows))


def _some(names: Iterable[str], shown: int = 10) -> str:
    """The first names of a list, and how many more: an error message stays
    short whatever the input (100,000 unknown columns made a 1 MB one)."""
    names = list(names)
    more = f", ... (+{len(names) - shown})" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _csv_problem(exc: csv.Error) -> str:
    """The csv module's error in our words (its English is not passed on)."""
    if str(exc).startswith("field larger than field limit"):
        return f"a cell is longer than {csv.field_size_limit()} characters"
    return "the line cannot be read as CSV"


def _records(rows: Any) -> Iterator[tuple[int, list[str]]]:
    """(line of the file where the record starts, its cells), blank lines skipped.
    csv.DictReader's own line_num lags a record behind on an error, and a
    record number is not a line once a quoted cell holds a line break."""
    while True:
        start = rows.line_num + 1
        try:
            cells = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BadBody(f"CSV line {rows.line_num}: {_csv_problem(exc)}") from exc
        if cells:
            yield start, cells


def _csv_devices(header: list[str], records: Iterator[tuple[int, list[str]]]) -> list[DeviceIn]:
    devices = []
    for line, cells in records:
        if len(cells) > len(header):
            raise BadBody(f"CSV line {line}: more cells than the header has columns")
        item: dict[str, Any] = {k: v for k, v in zip(header, cells, strict=False) if v != ""}
        if "thresholds" in item:
            try:
                item["thresholds"] = jsonbody.loads(item["thresholds"])
            except JsonBodyError as exc:
                raise BadBody(f"CSV line {line}: thresholds: {exc}") from exc
        if "interval_s" in item:
            try:
                item["interval_s"] = float(item["interval_s"])
            except ValueError as exc:
                raise BadBody(
                    f"CSV line {line}: interval_s: not a number: {item['interval_s']!r}"
                ) from exc
        routes = {
            side: item.pop(f"route_{side}") for side in ("left", "right") if f"route_{side}" in item
        }
        if routes:
            item["routes"] = routes
        try:
            devices.append(DeviceIn.model_validate(item))
        except ValidationError as exc:
            raise BadBody(_errors_message(exc, csv_line=line)) from exc
        if len(devices) > MAX_DEVICES_PER_REQUEST:
            raise BadBody(f"at most {MAX_DEVICES_PER_REQUEST} devices per request")
    return devices


async def _read_body(request: Request) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadBody(f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


MoveSite = Annotated[
    bool,
    Query(
        description="Allow moving registered devices to another site (else 409). The "
        "new site's managers see none of a moved device's history from before the move."
    ),
]


OnlyNew = Annotated[
    bool,
    Query(
        description="Register only the devices not registered yet; those registered "
        "already are left exactly as they are (floor, zone, name, thresholds...) and "
        "returned as stored. Gateways register their points this way."
    ),
]


async def _store(
    conn: ConnDep, devices: list[DeviceIn], move_site: bool, only_new: bool = False
) -> list[DeviceOut]:
    if not devices:
        return []
    seen: set[str] = set()
    for d in devices:  # an id twice would silently keep the last one
        if d.id in seen:
            raise BadBody(f"device {d.id!r} appears more than once in the request")
        seen.add(d.id)
    rows = await device_q.upsert_devices(
        conn, devices=[_to_spec(d) for d in devices], move_site=move_site, only_new=only_new
    )
    return [DeviceOut.from_row(r) for r in rows]


@router.post(
    "",
    response_model=list[DeviceOut],
    summary="Register or update devices (one, a list, or CSV)",
    description="Upsert by `id`; sites, buildings, floors and zones are created as needed. "
    "JSON: one device or a list; `text/csv`: a header row with "
    + ", ".join(CSV_COLUMNS)
    + " (no other column, each once). Returns the devices as stored, in request order. "
    "Admin only.",
    openapi_extra={"requestBody": _request_body_schema()},
    responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def post_devices(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    move_site: MoveSite = False,
    only_new: OnlyNew = False,
) -> list[DeviceOut]:
    caller.require("admin")
    # The body first, then a database connection: a client sending its body
    # slowly held a pooled connection all along (an outside check: 17 such
    # clients and every other request got a 503).
    body = await _read_body(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/csv":
        try:
            text = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadBody("CSV body is not UTF-8") from exc
        devices = parse_csv(text)
    else:
        try:
            parsed = _devices.validate_python(jsonbody.loads(body))
        except JsonBodyError as exc:
            raise BadBody(f"body: {exc}") from exc
        except ValidationError as exc:
            raise BadBody(_errors_message(exc)) from exc
        devices = parsed if isinstance(parsed, list) else [parsed]
        if len(devices) > MAX_DEVICES_PER_REQUEST:
            raise BadBody(f"at most {MAX_DEVICES_PER_REQUEST} devices per request")
    async with state.pool.connection() as conn:
        return await _store(conn, devices, move_site, only_new)


@router.post(
    "/import",
    response_model=list[DeviceOut],
    summary="Register or update devices from CSV",
    description=(
        "The same as POST /api/v1/devices with a `text/csv` body (UTF-8, a BOM is "
        "allowed). Admin only. The first line is a header naming the columns, in any "
        f"order: required {', '.join(CSV_COLUMNS[:6])}; optional "
        f"{', '.join(CSV_COLUMNS[6:])}. Each further line is one device, validated "
        "exactly as a DeviceIn object (an empty cell means not given; `thresholds` is a "
        'JSON object in a quoted cell, e.g. `"{""obscuration_alarm"": 3.5}"`; `route_left` and '
        "`route_right` fill `routes`). At most "
        f"{MAX_DEVICES_PER_REQUEST} devices and {MAX_BODY_BYTES} bytes per request. The "
        "import is all or nothing: the first bad line is refused with 422 naming its "
        "line number and field, and nothing is stored."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {
                    "schema": {
                        "type": "string",
                        "contentMediaType": "text/csv",
                        # The header line holds every required column.
                        "pattern": "^\ufeff?"
                        + "".join(f"(?=[^\\n]*\\b{c}\\b)" for c in CSV_COLUMNS[:6]),
                    },
                    "example": "id,site,building,floor,zone,kind,name\n"
                    "S1-SD1,S1,B1,2,Z3,smoke,Room 201\n",
                }
            },
        }
    },
    responses={409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}},
)
async def import_devices(
    request: Request, state: StateDep, caller: CallerDep, move_site: MoveSite = False
) -> list[DeviceOut]:
    caller.require("admin")
    try:
        text = (await _read_body(request)).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBody("CSV body is not UTF-8") from exc
    devices = parse_csv(text)
    async with state.pool.connection() as conn:  # (after the body: see post_devices)
        return await _store(conn, devices, move_site)


@router.get("", response_model=Page[DeviceOut], summary="List devices (ordered by id)")
async def list_devices(
    conn: ConnDep,
    caller: CallerDep,
    site: SiteParam = None,
    building: NameParam = None,
    floor: NameParam = None,
    zone: NameParam = None,
    kind: Annotated[Kind | None, Query()] = None,
    state: Annotated[DeviceState | None, Query(description="online, offline or unknown")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DeviceOut]:
    key = decode_cursor(cursor, "devices", (str,))
    rows = await device_q.list_devices(
        conn,
        scope=caller.scope,
        site=site,
        building=building,
        floor=floor,
        zone=zone,
        kind=kind,
        state=state,
        after_id=key[0] if key else None,
        limit=limit,
    )
    next_cursor = encode_cursor("devices", rows[-1]["id"]) if len(rows) == limit else None
    return Page[DeviceOut](items=[DeviceOut.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/{device_id}",
    response_model=DeviceDetail,
    responses={404: {"model": ErrorResponse}},
    summary="A device with its state, last reading and open alarms",
)
async def get_device(device_id: DeviceId, conn: ConnDep, caller: CallerDep) -> DeviceDetail:
    row = await device_q.get_device(conn, scope=caller.scope, device_id=device_id)
    floor = device_q.visible_from(caller.scope, row["site_since"])
    last = await telemetry_q.last_reading(conn, device_id=device_id)
    if last is not None and floor is not None and last.ts < floor:
        last = None  # sent while the device belonged to another site
    alarms = await alarm_q.list_alarms(
        conn,
        scope=caller.scope,
        filters=AlarmFilter(device=device_id),
        limit=DETAIL_OPEN_ALARMS,
        open_only=True,
    )
    base = DeviceOut.from_row(row).model_dump()
    return DeviceDetail(
        **base,
        last_ts=row["last_ts"] if last is not None or floor is None else None,
        on_mains=row["on_mains"],
        last_reading=Reading(ts=last.ts, seq=last.seq, v=last.v) if last else None,
        open_alarms=[AlarmOut.model_validate(a) for a in alarms],
        link=LinkStats.model_validate(row),
    )
