# ruff: noqa: E501  (SQL reads better unwrapped)
"""The site dashboard (uid firesafe-site): one site, its floors and zones,
their devices' state, the alarm timeline.
"""

from __future__ import annotations

from .kit import (
    Json,
    _,
    annotation,
    dashboard,
    device_link,
    is_open,
    label_sql,
    local_time,
    place_vars,
    quote,
    site_filter,
    stat,
    table,
    timeseries,
    tz_var,
)


def site() -> Json:
    f = site_filter("o", single_site=True)
    counts = stat(
        "Devices",
        f"""
        SELECT count(*) AS "Devices",
               count(*) FILTER (WHERE o.connectivity = 'online') AS "Online",
               count(*) FILTER (WHERE o.connectivity IN ('offline', 'silent')) AS "Offline / silent",
               count(*) FILTER (WHERE o.connectivity = 'never seen') AS "Never seen"
        FROM device_overview o
        WHERE {f}
        """,
        thresholds=[(None, "blue")],
    )
    zones = table(
        "Floors and zones",
        f"""
        SELECT z.building, z.floor, z.zone, coalesce(z.name, z.zone) AS name, z.zone_type AS type,
               count(DISTINCT o.device_id) AS devices,
               count(DISTINCT o.device_id) FILTER (WHERE o.connectivity = 'online') AS online,
               count(DISTINCT a.id) FILTER (WHERE a.type = 'fire') AS fire,
               count(DISTINCT a.id) FILTER (WHERE a.type = 'pre_alarm') AS pre_alarm,
               count(DISTINCT a.id) FILTER (WHERE a.type = 'electrical') AS electrical,
               count(DISTINCT a.id) FILTER (WHERE a.type IN ('fault', 'evac_fault')) AS faults,
               count(DISTINCT a.id) FILTER (WHERE a.type = 'offline') AS offline
        FROM zones z
        LEFT JOIN device_overview o
          ON o.site_id = z.site_id AND o.building = z.building AND o.floor = z.floor AND o.zone = z.zone
        LEFT JOIN alarms a ON a.device_id = o.device_id AND {is_open("a")}
        WHERE {site_filter("z", single_site=True)}
        GROUP BY z.building, z.floor, z.zone, z.name, z.zone_type
        ORDER BY z.building, z.floor, z.zone
        """,
        description="Every zone of the selected floors with its devices and open alarms.",
    )
    devices = table(
        "Devices and their state",
        f"""
        SELECT o.device_id AS device, o.name, {label_sql("kind", "o.kind")} AS kind, o.building, o.floor, o.zone,
               {label_sql("connectivity", "o.connectivity")} AS connectivity,
               {local_time("o.last_seen_at")} AS "last seen", o.on_mains AS "on mains", o.seq_gaps AS "seq gaps",
               string_agg({label_sql("alarm_type", "a.type")} || ' ' || {label_sql("verdict", "a.verdict")}, ', ' ORDER BY a.type) AS "open alarms"
        FROM device_overview o
        LEFT JOIN alarms a ON a.device_id = o.device_id AND {is_open("a")}
        WHERE {f}
        GROUP BY o.device_id, o.name, o.kind, o.building, o.floor, o.zone, o.connectivity,
                 o.last_seen_at, o.on_mains, o.seq_gaps
        ORDER BY o.building, o.floor, o.zone, o.device_id
        """,
        links=[device_link()],
    )
    timeline = timeseries(
        "Alarm timeline by zone",
        f"""
        SELECT $__timeGroupAlias(a.opened_at, $__interval),
               a.building || '/' || a.floor || '/' || a.zone AS metric, count(*) AS value
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type <> 'pre_alarm' AND {site_filter("a", single_site=True)}
        GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        bars=True,
        interval="5m",
        description="Alarms (pre-alarms left out) opened per interval, per zone.",
    )
    alarm_list = table(
        "Alarms in range",
        f"""
        SELECT {local_time("a.opened_at")} AS "opened", {label_sql("alarm_type", "a.type")} AS type,
               {label_sql("verdict", "a.verdict")} AS verdict, {label_sql("status", "a.status")} AS status,
               {label_sql("reason", "a.reason")} AS reason, a.device_id AS device,
               a.building, a.floor, a.zone, {local_time("a.confirmed_at")} AS confirmed,
               {local_time("a.cleared_at")} AS cleared, a.acknowledged_by AS "acknowledged by"
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND {site_filter("a", single_site=True)}
        ORDER BY a.opened_at DESC
        LIMIT 500
        """,
        links=[device_link()],
    )
    anno = annotation(
        "Alarms",
        f"""
        SELECT a.opened_at AS time, a.cleared_at AS timeend,
               {label_sql("alarm_type", "a.type")} || ' ' || {label_sql("verdict", "a.verdict")} || ': ' || a.device_id || ' ' || '{quote(_("in"))}' || ' ' || a.building || '/'
                 || a.floor || '/' || a.zone || ' (' || {label_sql("reason", "a.reason")} || ')' AS text,
               {label_sql("alarm_type", "a.type")} || ',' || {label_sql("verdict", "a.verdict")} AS tags
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type IN ('fire', 'electrical', 'fault', 'evac_fault')
          AND {site_filter("a", single_site=True)}
        ORDER BY a.opened_at
        """,
        "orange",
    )
    return dashboard(
        "firesafe-site",
        "Firesafe — Site",
        description="One site: its floors and zones, their devices' state, the alarm timeline.",
        tags=["site"],
        time_from="now-24h",
        refresh="30s",
        variables=[*place_vars(single_site=True), tz_var()],
        annotations=[anno],
        rows=[
            [(counts, 24, 4)],
            [(zones, 24, 9)],
            [(timeline, 24, 8)],
            [(devices, 24, 10)],
            [(alarm_list, 24, 10)],
        ],
    )
