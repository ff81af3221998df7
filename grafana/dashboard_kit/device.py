# ruff: noqa: E501  (SQL reads better unwrapped)
"""The device dashboard (uid firesafe-device): one device's readings
against its alarm thresholds, its events and alarms.
"""

from __future__ import annotations

import re

from firesafe.contract import READINGS

from .kit import (
    RAW_RANGE_LIMIT,
    Json,
    _,
    annotation,
    dashboard,
    label,
    label_sql,
    local_time,
    panel,
    place_vars,
    quote,
    table,
    target,
    tz_var,
    variable,
)


def reading_values(alias: str, suffix: str = "") -> str:
    return ", ".join(f"('{r}', {alias}.{r}{suffix})" for r in READINGS)


def device() -> Json:
    raw_readings = reading_values("t")
    rollup = ", ".join(f"('{r}', m.{r}_avg * m.{r}_n, m.{r}_n)" for r in READINGS)
    readings = panel(
        "timeseries",
        "${reading:text}",  # (the reading's name in the dashboard's language)
        [
            target(f"""
                SELECT $__timeGroupAlias(t.ts, $__interval), {label_sql("reading", "r.reading")} AS metric, avg(r.value) AS value
                FROM telemetry t
                CROSS JOIN LATERAL (VALUES {raw_readings}) AS r(reading, value)
                WHERE t.device_id = '$device' AND $__timeFilter(t.ts)
                  AND r.reading IN ($reading) AND r.value IS NOT NULL
                  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz <= {RAW_RANGE_LIMIT}
                GROUP BY 1, 2
                UNION ALL
                SELECT $__timeGroupAlias(m.bucket, $__interval), {label_sql("reading", "r.reading")}, sum(r.total) / sum(r.n)
                FROM telemetry_1m m
                CROSS JOIN LATERAL (VALUES {rollup}) AS r(reading, total, n)
                WHERE m.device_id = '$device' AND $__timeFilter(m.bucket)
                  AND r.reading IN ($reading) AND r.n > 0
                  AND $__timeTo()::timestamptz - $__timeFrom()::timestamptz > {RAW_RANGE_LIMIT}
                GROUP BY 1, 2
                ORDER BY 1, 2
                """),
            target(
                f"""
                SELECT x.time, '{quote(_("limit: "))}' || {label_sql("threshold", "th.name")} AS metric, th.value
                FROM device_thresholds th
                CROSS JOIN (VALUES ($__timeFrom()::timestamptz), ($__timeTo()::timestamptz)) AS x(time)
                WHERE th.device_id = '$device' AND th.reading IN ($reading)
                ORDER BY 1, 2
                """,
                "table",
                "B",
            ),
        ],
        description="The device's reading averaged per interval (raw readings up to 24 h, the "
        "1-minute rollup for longer ranges), with its alarm thresholds as dashed "
        'lines ("limit: ..."): the registry\'s `thresholds` or the detection '
        "engine's defaults for its kind (view threshold_defaults).",
        interval="10s",
        repeat="reading",
        custom={"drawStyle": "line", "lineWidth": 2, "fillOpacity": 5, "spanNulls": False},
        options={
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": f"^{re.escape(_('limit'))}: .*"},
                "properties": [
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                ],
            },
            {
                "matcher": {
                    "id": "byRegexp",
                    "options": f"^{re.escape(_('limit'))}: (?:.*pre_alarm|{re.escape(label('threshold', 'obscuration_pre_alarm'))})$",
                },
                "properties": [
                    {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}},
                ],
            },
        ],
    )
    info = table(
        "Device",
        f"""
        SELECT o.device_id AS device, o.name, {label_sql("kind", "o.kind")} AS kind, o.site_id AS site, o.building, o.floor, o.zone,
               o.interval_s AS "interval (s)", {label_sql("connectivity", "o.connectivity")} AS connectivity,
               {local_time("o.last_seen_at")} AS "last seen",
               {local_time("o.last_ts")} AS "newest reading", o.messages, o.seq_gaps AS "seq gaps",
               o.duplicates, o.on_mains AS "on mains"
        FROM device_overview o
        WHERE o.device_id = '$device'
        """,
    )
    limits = table(
        "Thresholds",
        f"""
        SELECT {label_sql("threshold", "th.name")} AS name, {label_sql("reading", "th.reading")} AS reading, th.value,
               CASE WHEN th.from_registry THEN '{quote(_("registry"))}' ELSE '{quote(_("default"))}' END AS source
        FROM device_thresholds th
        WHERE th.device_id = '$device'
        ORDER BY th.reading, th.value
        """,
    )
    events = table(
        "Events",
        f"""
        SELECT {local_time("e.ts")} AS "device time", {label_sql("event", "e.type")} AS type, e.detail, e.seq,
               {local_time("e.received_at")} AS received
        FROM device_events e
        WHERE e.device_id = '$device' AND $__timeFilter(e.ts)
        ORDER BY e.ts DESC
        LIMIT 200
        """,
    )
    alarms = table(
        "Alarms",
        f"""
        SELECT {local_time("a.opened_at")} AS "opened", {label_sql("alarm_type", "a.type")} AS type,
               {label_sql("verdict", "a.verdict")} AS verdict, {label_sql("status", "a.status")} AS status,
               {label_sql("reason", "a.reason")} AS reason, {local_time("a.confirmed_at")} AS confirmed,
               {local_time("a.cleared_at")} AS cleared, a.cleared_by AS "cleared by"
        FROM alarms a
        WHERE a.device_id = '$device' AND $__timeFilter(a.opened_at)
        ORDER BY a.opened_at DESC
        LIMIT 200
        """,
    )
    event_anno = annotation(
        "Device events",
        f"""
        SELECT e.ts AS time, {label_sql("event", "e.type")} || coalesce(': ' || e.detail, '') AS text,
               {label_sql("event", "e.type")} AS tags
        FROM device_events e
        WHERE e.device_id = '$device' AND $__timeFilter(e.ts)
        ORDER BY e.ts
        """,
        "purple",
    )
    alarm_anno = annotation(
        "Alarms",
        f"""
        SELECT a.opened_at AS time, a.cleared_at AS timeend,
               {label_sql("alarm_type", "a.type")} || ' ' || {label_sql("verdict", "a.verdict")} || ' (' || {label_sql("reason", "a.reason")} || ')' AS text,
               {label_sql("alarm_type", "a.type")} || ',' || {label_sql("verdict", "a.verdict")} AS tags
        FROM alarms a
        WHERE a.device_id = '$device' AND $__timeFilter(a.opened_at)
        ORDER BY a.opened_at
        """,
        "red",
    )
    variables = [
        *place_vars(single_site=True),
        variable(
            "device",
            "Device",
            f"""
            SELECT id AS __value, id || ' — ' || {label_sql("kind", "kind")} || coalesce(' (' || name || ')', '') AS __text
            FROM devices
            WHERE site_id = '$site' AND building IN ($building) AND floor IN ($floor)
              AND zone IN ($zone)
            ORDER BY id
            """,
            multi=False,
            include_all=False,
        ),
        tz_var(),
        variable(
            "reading",
            "Reading",
            f"""
            SELECT k.reading AS __value, {label_sql("reading", "k.reading")} AS __text
            FROM kind_readings k JOIN devices d ON d.kind = k.kind
            WHERE d.id = '$device' ORDER BY 1
            """,
        ),
    ]
    return dashboard(
        "firesafe-device",
        "Firesafe — Device",
        description="One device: its readings against its alarm thresholds, events and alarms.",
        tags=["device"],
        time_from="now-6h",
        refresh="1m",
        variables=variables,
        annotations=[event_anno, alarm_anno],
        rows=[
            [(info, 16, 5), (limits, 8, 5)],
            [(readings, 12, 9)],
            [(events, 12, 9), (alarms, 12, 9)],
        ],
    )
