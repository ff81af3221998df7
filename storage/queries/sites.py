"""Site settings: time zone and standard (the rest of a site comes from its devices)."""

from __future__ import annotations

from typing import Any

from storage.queries.common import Conn, Scope


async def site_settings(conn: Conn, *, sites: list[str]) -> dict[str, dict[str, Any]]:
    """site id -> {"timezone", "standard"} for the given (already scope-checked) sites."""
    cur = await conn.execute(
        "SELECT id, timezone, standard FROM sites WHERE id = ANY(%s)", (sites,)
    )
    return {
        str(r["id"]): {"timezone": r["timezone"], "standard": r["standard"]}
        for r in await cur.fetchall()
    }


async def upsert_site(
    conn: Conn,
    *,
    scope: Scope,
    site: str,
    name: str | None,
    timezone: str | None,
    standard: str | None,
) -> None:
    """Create the site or change the given fields (None = leave as is).

    `timezone` must be known to PostgreSQL too (dashboards convert with AT
    TIME ZONE): an unknown one raises psycopg.DataError before anything changes.
    """
    scope.check(site)
    async with conn.transaction():
        if timezone is not None:
            await conn.execute("SELECT now() AT TIME ZONE %s", (timezone,))
        await conn.execute(
            """
            INSERT INTO sites (id, name, timezone, standard)
            VALUES (%(id)s, %(name)s, COALESCE(%(tz)s, 'UTC'), COALESCE(%(std)s, 'EN'))
            ON CONFLICT (id) DO UPDATE SET
                name = COALESCE(%(name)s, sites.name),
                timezone = COALESCE(%(tz)s, sites.timezone),
                standard = COALESCE(%(std)s, sites.standard)
            """,
            {"id": site, "name": name, "tz": timezone, "std": standard},
        )
        if standard is not None:
            # Ingest reloads its registry when a device changes: a new standard
            # changes the site's devices' thresholds, so mark them changed.
            await conn.execute("UPDATE devices SET updated_at = now() WHERE site_id = %s", (site,))
