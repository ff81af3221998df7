# ruff: noqa: E501  (SQL reads better unwrapped)
"""The evacuation-readiness dashboard (uid firesafe-evacuation): emergency
lighting and dynamic exit signs (batteries, self-tests, lamps).
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
    panel,
    place_vars,
    quote,
    shown,
    site_filter,
    sql,
    stat,
    table,
    target,
    timeseries,
)


def evacuation() -> Json:
    f = site_filter("d")
    evac_join = "JOIN devices d ON d.id = {a}.device_id AND d.kind = 'evac'"
    on_battery = stat(
        "On battery now",
        f"""
        SELECT count(*) AS "on battery"
        FROM device_overview o
        WHERE o.kind = 'evac' AND o.on_mains = false AND {site_filter("o")}
        """,
        description="Evac units whose latest report says mains is lost (running on battery).",
        thresholds=[(None, "green"), (1, "orange")],
    )
    failed_tests = stat(
        "Failed self-tests",
        f"""
        SELECT count(*) AS "failed self-tests"
        FROM device_events e
        {evac_join.format(a="e")}
        WHERE $__timeFilter(e.ts) AND e.type = 'self_test_fail' AND {f}
        """,
        description="self_test_fail events in the range.",
        thresholds=[(None, "green"), (1, "red")],
    )
    lamp = stat(
        "Lamp faults",
        f"""
        SELECT count(DISTINCT m.device_id) AS "lamp faults"
        FROM telemetry_1m m
        {evac_join.format(a="m")}
        WHERE $__timeFilter(m.bucket) AND m.lamp_ok_min = 0 AND {f}
        """,
        description="Units that reported lamp_ok = 0 at least once in the range.",
        thresholds=[(None, "green"), (1, "red")],
    )
    under_command = f"""
        SELECT DISTINCT ON (c.device_id) c.device_id AS device, d.building, d.floor, d.zone,
               {label_sql("command", "c.cmd")} AS cmd, {label_sql("direction", "c.direction")} AS direction,
               c.at AS since, c.alarm_id AS alarm
        FROM linkage_commands c
        {evac_join.format(a="c")}
        WHERE c.at > $__timeTo()::timestamptz - interval '30 days' AND c.at <= $__timeTo() AND {f}
        ORDER BY c.device_id, c.at DESC
    """
    commanded_count = stat(
        "Signs under emergency command",
        f"SELECT count(*) AS \"under command\" FROM ({sql(under_command)}) last WHERE last.cmd <> '{shown('command', 'normal')}'",
        description="Evac units whose latest linkage command (looking back 30 days from the "
        "end of the range) is not `normal`.",
        thresholds=[(None, "green"), (1, "red")],
    )
    battery_levels = panel(
        "bargauge",
        "Battery levels (lowest first)",
        [
            target(
                f"""
            SELECT last.device, last.battery
            FROM (
                SELECT DISTINCT ON (m.device_id) m.device_id AS device, m.battery_avg AS battery
                FROM telemetry_1m m
                {evac_join.format(a="m")}
                WHERE $__timeFilter(m.bucket) AND m.battery_n > 0 AND {f}
                ORDER BY m.device_id, m.bucket DESC
            ) last
            ORDER BY last.battery, last.device
            LIMIT 30
            """,
                "table",
            )
        ],
        description="Latest battery charge per unit in the range. Red below the default "
        "battery_low_pct threshold (30 %).",
        unit="percent",
        thresholds=[(None, "red"), (30, "orange"), (60, "green")],
        options={
            "orientation": "horizontal",
            "displayMode": "basic",
            "showUnfilled": True,
            "reduceOptions": {"values": True, "calcs": [], "fields": "/^battery$/"},
        },
    )
    battery_trend = timeseries(
        "Battery charge (lowest and average)",
        f"""
        SELECT $__timeGroupAlias(m.bucket, $__interval),
               min(m.battery_min) AS lowest,
               sum(m.battery_avg * m.battery_n) / sum(m.battery_n) AS average
        FROM telemetry_1m m
        {evac_join.format(a="m")}
        WHERE $__timeFilter(m.bucket) AND m.battery_n > 0 AND {f}
        GROUP BY 1
        ORDER BY 1
        """,
        unit="percent",
        interval="1m",
    )
    mains = timeseries(
        "Units on battery and with lamp faults",
        f"""
        SELECT $__timeGroupAlias(m.bucket, $__interval),
               count(DISTINCT m.device_id) FILTER (WHERE m.mains_min = 0) AS "on battery",
               count(DISTINCT m.device_id) FILTER (WHERE m.lamp_ok_min = 0) AS "lamp fault"
        FROM telemetry_1m m
        {evac_join.format(a="m")}
        WHERE $__timeFilter(m.bucket) AND {f}
        GROUP BY 1
        ORDER BY 1
        """,
        interval="1m",
        description="Units that reported mains lost (mains = 0) or a lamp fault (lamp_ok = 0) "
        "per interval. Mains loss is a state, not an alarm.",
    )
    tests = table(
        "Self-tests and faults",
        f"""
        SELECT e.ts AS time, e.device_id AS device, d.building, d.floor, d.zone,
               {label_sql("event", "e.type")} AS type, e.detail
        FROM device_events e
        {evac_join.format(a="e")}
        WHERE $__timeFilter(e.ts)
          AND e.type IN ('self_test_fail', 'self_test_pass', 'fault', 'restore') AND {f}
        ORDER BY e.ts DESC
        LIMIT 200
        """,
        links=[device_link()],
    )
    commanded = table(
        "Signs under linkage command",
        f"SELECT * FROM ({sql(under_command)}) last WHERE last.cmd <> '{shown('command', 'normal')}' ORDER BY last.since, last.device",
        description="Evac units whose latest command is an emergency one: the direction the "
        "sign points (away from the fire zone) or off (route not to be used).",
        links=[device_link()],
    )
    open_faults = table(
        "Open evacuation faults",
        f"""
        SELECT a.device_id AS device, a.building, a.floor, a.zone, {label_sql("reason", "a.reason")} AS reason,
               a.opened_at AS since, {label_sql("status", "a.status")} AS status
        FROM alarms a
        WHERE a.type = 'evac_fault' AND {is_open("a")} AND {site_filter("a")}
        ORDER BY a.opened_at
        """,
        links=[device_link()],
    )
    anno = annotation(
        "Linkage commands",
        f"""
        SELECT c.at AS time,
               {label_sql("command", "c.cmd")} || coalesce(' ' || {label_sql("direction", "c.direction")}, '') || ' -> ' || c.device_id AS text,
               '{quote(_("linkage"))},' || {label_sql("command", "c.cmd")} AS tags
        FROM linkage_commands c
        {evac_join.format(a="c")}
        WHERE $__timeFilter(c.at) AND {f}
        ORDER BY c.at
        """,
        "blue",
    )
    return dashboard(
        "firesafe-evacuation",
        "Firesafe — Evacuation readiness",
        description="Emergency lighting and dynamic exit signs: batteries, self-tests, lamps, "
        "mains loss and signs under linkage command.",
        tags=["evacuation"],
        time_from="now-7d",
        refresh="1m",
        variables=place_vars(),
        annotations=[anno],
        rows=[
            [(on_battery, 6, 4), (failed_tests, 6, 4), (lamp, 6, 4), (commanded_count, 6, 4)],
            [(battery_levels, 8, 10), (battery_trend, 16, 10)],
            [(mains, 12, 8), (commanded, 12, 8)],
            [(tests, 12, 9), (open_faults, 12, 9)],
        ],
    )
