"""The device registry: upsert (creating sites, buildings, floors and zones), list, detail."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from storage.queries.common import Conn, Scope, Where
from storage.queries.errors import ConflictError, InvalidInputError, NotFoundError

# A device is offline when supervision has an open `offline` alarm for it or
# its retained status topic says so; "unknown" until anything arrived.
# A device's own word `offline` (its status topic: the broker's will) holds
# until it is heard from again: telemetry after it clears the offline alarm,
# and the state with it (an outside check saw `offline` beside live data).
_STATE_SQL = """
    CASE
        WHEN (s.status = 'offline' AND NOT COALESCE(s.last_seen_at > s.status_at, false))
        OR EXISTS (
            SELECT 1 FROM alarms a
            WHERE a.device_id = d.id AND a.type = 'offline'
              AND a.status <> 'cleared' AND a.verdict <> 'suppressed'
        ) THEN 'offline'
        WHEN s.last_seen_at IS NULL THEN 'unknown'
        ELSE 'online'
    END
"""

_COLUMNS = f"""
    d.id, d.site_id AS site, d.building, d.floor, d.zone, d.kind, d.name, d.interval_s,
    d.thresholds, d.routes, d.address, d.utc_offset_min, d.created_at, d.updated_at,
    s.last_seen_at, s.last_ts, s.status AS reported_status, s.on_mains, d.site_since,
    {_STATE_SQL} AS state,
    coalesce(s.messages, 0) AS messages, coalesce(s.seq_gaps, 0) AS seq_gaps,
    coalesce(s.duplicates, 0) AS duplicates, coalesce(s.out_of_order, 0) AS out_of_order,
    coalesce(s.quarantined, 0) AS quarantined,
    CASE WHEN isfinite(s.last_ts) AND isfinite(s.last_seen_at)  -- (an older ingest stored
                                                                -- 'infinity')
         THEN round(extract(epoch FROM s.last_ts) - extract(epoch FROM s.last_seen_at), 1)::float8
    END AS clock_ahead_s
"""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One device as registered (validated by the caller)."""

    id: str
    site: str
    building: str
    floor: str
    zone: str
    kind: str
    name: str | None = None
    interval_s: float | None = None
    thresholds: dict[str, float] | None = None
    routes: dict[str, str] | None = None
    address: str | None = None  # uitd: GB/T 26875.3 source address (12 hex digits)
    utc_offset_min: int | None = None  # uitd: its clock's offset from UTC


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


# An id registered already: everything as given now (a move judged apart).
_UPDATE_DEVICE = sql.SQL(
    """
    UPDATE SET
        site_id = EXCLUDED.site_id, building = EXCLUDED.building,
        floor = EXCLUDED.floor, zone = EXCLUDED.zone, kind = EXCLUDED.kind,
        name = EXCLUDED.name, interval_s = EXCLUDED.interval_s,
        thresholds = EXCLUDED.thresholds, routes = EXCLUDED.routes,
        address = EXCLUDED.address, utc_offset_min = EXCLUDED.utc_offset_min,
        updated_at = now(),
        site_since = CASE WHEN devices.site_id <> EXCLUDED.site_id THEN GREATEST(
            now(),
            (SELECT max(t.ts) FROM telemetry t WHERE t.device_id = devices.id)
                + interval '1 millisecond',
            (SELECT max(e.ts) FROM device_events e WHERE e.device_id = devices.id)
                + interval '1 millisecond')
                          ELSE devices.site_since END
    """
)


async def upsert_devices(
    conn: Conn, *, devices: Sequence[DeviceSpec], move_site: bool = False, only_new: bool = False
) -> list[dict[str, Any]]:
    """Insert or update devices by id in one transaction; returns them as stored.
    `only_new`: insert the ones not registered yet and leave the others exactly
    as they are (a gateway registering its points never overwrites what an
    admin set: floor, zone, name, thresholds).

    Sites, buildings, floors and zones are created as needed. An evac
    device's routes must name zones of its own building and floor that
    exist, or are created by this same call; otherwise nothing is stored.
    A registered device named at another site is a ConflictError unless
    `move_site`: then its `site_since` becomes now, or just after the newest
    reading or event it has stored if that is later (a clock running ahead:
    what it sent for the old site must not show at the new one), and
    site-scoped callers see none of its history from before (`history_floor`).
    """
    # The last occurrence of an id wins, as if the devices were posted one by one
    # (and as one by one, naming it at two sites is a move).
    sites: dict[str, str] = {}
    for d in devices:
        if sites.setdefault(d.id, d.site) != d.site and not move_site:
            raise ConflictError(
                f"device {d.id!r} is listed at sites {sites[d.id]!r} and {d.site!r}: "
                "moving a device between sites needs move_site=true"
            )
    latest = {d.id: (i, d) for i, d in enumerate(devices)}
    rows = sorted(latest.values(), key=lambda item: item[0])
    asked = [d.id for _, d in rows]
    if only_new:
        cur = await conn.execute("SELECT id FROM devices WHERE id = ANY(%s::text[])", (asked,))
        have = {r["id"] for r in await cur.fetchall()}
        rows = [(i, d) for i, d in rows if d.id not in have]
    specs = [d for _, d in rows]
    zones = sorted({(d.site, d.building, d.floor, d.zone) for d in specs})
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO sites (id) SELECT DISTINCT unnest(%s::text[]) ORDER BY 1 "
            "ON CONFLICT DO NOTHING",
            ([z[0] for z in zones],),
        )
        await conn.execute(
            "INSERT INTO buildings (site_id, building) SELECT DISTINCT * "
            "FROM unnest(%s::text[], %s::text[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING",
            ([z[0] for z in zones], [z[1] for z in zones]),
        )
        await conn.execute(
            "INSERT INTO floors (site_id, building, floor) SELECT DISTINCT * "
            "FROM unnest(%s::text[], %s::text[], %s::text[]) ORDER BY 1, 2, 3 "
            "ON CONFLICT DO NOTHING",
            ([z[0] for z in zones], [z[1] for z in zones], [z[2] for z in zones]),
        )
        await conn.execute(
            "INSERT INTO zones (site_id, building, floor, zone) SELECT DISTINCT * "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) ORDER BY 1, 2, 3, 4 "
            "ON CONFLICT DO NOTHING",
            (
                [z[0] for z in zones],
                [z[1] for z in zones],
                [z[2] for z in zones],
                [z[3] for z in zones],
            ),
        )
        await _check_moves(conn, specs, move_site=move_site)
        await _check_routes(conn, rows)
        await _check_addresses(conn, rows)
        # Rows are written in id order: two registrations of overlapping devices
        # in other orders took each other's row locks and deadlocked (an outside
        # check: 1 request in 4 got a 503).
        specs = sorted(specs, key=lambda d: d.id)
        insert = sql.SQL(
            """
            INSERT INTO devices (id, site_id, building, floor, zone, kind, name, interval_s,
                                 thresholds, routes, address, utc_offset_min)
            SELECT t.id, t.site, t.building, t.floor, t.zone, t.kind, t.name, t.interval_s,
                   COALESCE(t.thresholds::jsonb, '{{}}'::jsonb), t.routes::jsonb, t.address,
                   t.utc_offset_min
            FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                        %s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::int[])
                 AS t(id, site, building, floor, zone, kind, name, interval_s, thresholds, routes,
                      address, utc_offset_min)
            ON CONFLICT (id) DO {}
            RETURNING id
            """
        ).format(
            sql.SQL("NOTHING")
            if only_new
            else _UPDATE_DEVICE
            if move_site
            # Checked above on what this transaction saw; a registration at
            # another site committed since (a move, a new device) is not
            # overwritten: an outside check saw devices moved back silently.
            else sql.SQL("{} WHERE devices.site_id = EXCLUDED.site_id").format(_UPDATE_DEVICE)
        )
        try:
            cur = await conn.execute(
                insert,
                (
                    [d.id for d in specs],
                    [d.site for d in specs],
                    [d.building for d in specs],
                    [d.floor for d in specs],
                    [d.zone for d in specs],
                    [d.kind for d in specs],
                    [d.name for d in specs],
                    [d.interval_s for d in specs],
                    [_dump(d.thresholds) for d in specs],
                    [_dump(d.routes) for d in specs],
                    [d.address for d in specs],
                    [d.utc_offset_min for d in specs],
                ),
            )
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name != "devices_address_idx":
                raise
            # Checked above; another registration took the address meanwhile.
            raise InvalidInputError(
                "address", "the address was registered for another device at the same moment"
            ) from exc
        written = {row["id"] for row in await cur.fetchall()}  # (a trigger notifies ingest)
        moved = sorted({d.id for d in specs} - written) if not only_new else []
        if moved:
            raise ConflictError(
                f"device {moved[0]!r} was registered at another site meanwhile: "
                "moving a device between sites needs move_site=true"
            )
    stored = await _select(
        conn,
        Where(params={"ids": asked}, parts=[sql.SQL("d.id = ANY(%(ids)s::text[])")]),
        order_limit="",
    )
    by_id = {row["id"]: row for row in stored}
    return [by_id[device_id] for device_id in asked]


async def _check_moves(conn: Conn, specs: Sequence[DeviceSpec], *, move_site: bool) -> None:
    """Refuse (409) moving a registered device to another site unless asked explicitly."""
    cur = await conn.execute(
        "SELECT d.id, d.site_id FROM devices d JOIN unnest(%s::text[], %s::text[]) AS t(id, site) "
        "ON t.id = d.id WHERE d.site_id <> t.site ORDER BY d.id FOR UPDATE OF d",
        ([d.id for d in specs], [d.site for d in specs]),
    )
    moved = await cur.fetchall()
    if moved and not move_site:
        first = moved[0]
        wanted = next(d.site for d in specs if d.id == first["id"])
        more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
        raise ConflictError(
            f"device {first['id']!r} is registered at site {first['site_id']!r}, not "
            f"{wanted!r}{more}: moving a device between sites needs move_site=true "
            "(its history before the move stays hidden from the new site's managers)"
        )


async def _check_routes(conn: Conn, rows: Sequence[tuple[int, DeviceSpec]]) -> None:
    wanted = [
        (index, side, d.site, d.building, d.floor, zone)
        for index, d in rows
        for side, zone in sorted((d.routes or {}).items())
    ]
    if not wanted:
        return
    cur = await conn.execute(
        """
        SELECT t.i, t.side, t.zone FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[],
                                               %s::text[], %s::text[])
             AS t(i, side, site, building, floor, zone)
        WHERE NOT EXISTS (SELECT 1 FROM zones z WHERE z.site_id = t.site
                          AND z.building = t.building AND z.floor = t.floor AND z.zone = t.zone)
        ORDER BY t.i, t.side
        """,
        tuple(list(col) for col in zip(*wanted, strict=True)),
    )
    missing = await cur.fetchone()
    if missing is not None:
        raise InvalidInputError(
            f"[{missing['i']}].routes.{missing['side']}",
            f"zone {missing['zone']!r} is not a zone of the device's building and floor "
            "(register a device in it first, or in the same request)",
        )


async def _check_addresses(conn: Conn, rows: Sequence[tuple[int, DeviceSpec]]) -> None:
    """A transmission device's address belongs to one device only (`rows`: the
    devices with their positions in the request)."""
    given = [(i, d) for i, d in rows if d.address is not None]
    seen: dict[str, str] = {}
    for i, d in given:
        assert d.address is not None
        if seen.setdefault(d.address, d.id) != d.id:
            raise InvalidInputError(f"[{i}].address", f"address {d.address} is given twice")
    if not given:
        return
    cur = await conn.execute(
        "SELECT id, address FROM devices WHERE address = ANY(%s::text[])",
        ([d.address for _, d in given],),
    )
    owners = {row["address"]: row["id"] for row in await cur.fetchall()}
    for i, d in given:
        owner = owners.get(d.address)
        if owner is not None and owner != d.id:
            raise InvalidInputError(
                f"[{i}].address", f"address {d.address} belongs to device {owner!r}"
            )


async def _select(conn: Conn, where: Where, *, order_limit: str) -> list[dict[str, Any]]:
    query = sql.SQL(
        "SELECT {cols} FROM devices d LEFT JOIN device_state s ON s.device_id = d.id {where} {tail}"
    ).format(cols=sql.SQL(_COLUMNS), where=where.clause(), tail=sql.SQL(order_limit))
    cur = await conn.execute(query, where.params)
    return await cur.fetchall()


async def list_devices(
    conn: Conn,
    *,
    scope: Scope,
    site: str | None = None,
    building: str | None = None,
    floor: str | None = None,
    zone: str | None = None,
    kind: str | None = None,
    state: str | None = None,
    after_id: str | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Devices ordered by id, after `after_id` (keyset)."""
    where = Where()
    where.scope("d.site_id", scope)
    where.eq("d.site_id", "site", site)
    where.eq("d.building", "building", building)
    where.eq("d.floor", "floor", floor)
    where.eq("d.zone", "zone", zone)
    where.eq("d.kind", "kind", kind)
    if state is not None:
        where.add(f"({_STATE_SQL}) = %(state)s", state=state)
    if after_id is not None:
        where.add("d.id > %(after_id)s", after_id=after_id)
    where.params["limit"] = limit
    return await _select(conn, where, order_limit="ORDER BY d.id LIMIT %(limit)s")


async def get_device(conn: Conn, *, scope: Scope, device_id: str) -> dict[str, Any]:
    """One device; NotFoundError, or OutOfScopeError for another site's device."""
    where = Where()
    where.eq("d.id", "id", device_id)
    rows = await _select(conn, where, order_limit="")
    if not rows:
        raise NotFoundError(f"device {device_id!r} not found")
    scope.check(rows[0]["site"], device=device_id)
    return rows[0]


async def history_floor(conn: Conn, *, scope: Scope, device_id: str) -> datetime | None:
    """The device's site checked against the scope (NotFoundError / OutOfScopeError),
    then the earliest instant of its history this caller may see: for a
    site-scoped caller (manager), when the device came to its current site
    (None: all of it)."""
    cur = await conn.execute("SELECT site_id, site_since FROM devices WHERE id = %s", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} not found")
    scope.check(row["site_id"], device=device_id)
    return visible_from(scope, row["site_since"])


def visible_from(scope: Scope, site_since: datetime | None) -> datetime | None:
    """The earliest instant of a device's history a caller may see: a site-scoped
    caller (manager), from when the device came to its current site; None: all."""
    return None if scope.sites is None else site_since


async def site_since(conn: Conn, *, device_id: str) -> tuple[str, datetime | None] | None:
    """(current site, when the device came to it) without a scope check; None if unknown."""
    cur = await conn.execute("SELECT site_id, site_since FROM devices WHERE id = %s", (device_id,))
    row = await cur.fetchone()
    return None if row is None else (row["site_id"], row["site_since"])


async def device_site(conn: Conn, *, scope: Scope, device_id: str) -> str:
    """The device's site, checked against the scope (NotFoundError / OutOfScopeError)."""
    cur = await conn.execute("SELECT site_id FROM devices WHERE id = %s", (device_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"device {device_id!r} not found")
    site: str = row["site_id"]
    scope.check(site, device=device_id)
    return site
