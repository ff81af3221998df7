# ruff: noqa: E501  (SQL reads better unwrapped)
"""The electrical-fire dashboard (uid firesafe-electrical): residual
current and cable temperature across the fleet.
"""

from __future__ import annotations

import re

from .kit import (
    Json,
    _,
    annotation,
    dashboard,
    device_link,
    label,
    label_sql,
    place_vars,
    quote,
    site_filter,
    table,
    timeseries,
    variable,
)


def electrical() -> Json:
    f = site_filter("d") + " AND d.id IN ($circuit)"

    def per_circuit(
        title: str, column: str, unit: str, limits: list[tuple[float | None, str]], description: str
    ) -> Json:
        return timeseries(
            title,
            f"""
            SELECT $__timeGroupAlias(m.bucket, $__interval), d.id AS metric, max(m.{column}_max) AS value
            FROM telemetry_1m m
            JOIN devices d ON d.id = m.device_id
            WHERE $__timeFilter(m.bucket) AND d.kind = 'electrical' AND m.{column}_n > 0 AND {f}
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            unit=unit,
            interval="1m",
            description=description,
            thresholds=limits,
            custom={
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 0,
                "spanNulls": False,
                "thresholdsStyle": {"mode": "dashed"},
            },
        )

    residual = per_circuit(
        "Residual current by circuit",
        "residual_current",
        "mA",
        [(None, "green"), (300, "red")],
        "Peak residual (leakage) current per minute, per circuit (1-minute rollup). Dashed: the "
        "default alarm limit (residual_current_ma, 300 mA); a circuit's own limit is in the "
        "table below.",
    )
    cable = per_circuit(
        "Cable temperature by circuit",
        "cable_temperature",
        "celsius",
        [(None, "green"), (70, "red")],
        "Peak cable temperature per minute, per circuit. Dashed: the default alarm limit "
        "(cable_temperature_c, 70 °C).",
    )
    load = per_circuit(
        "Load current by circuit",
        "current",
        "amp",
        [(None, "green")],
        "Peak load current per minute, per circuit.",
    )
    # Matches the columns by name and by their name in the language rendered.
    percent_columns = ("residual % of limit", "cable % of limit", "worst % of limit")
    percent_of_limit = (
        "^(?:"
        + "|".join(re.escape(n) for c in percent_columns for n in dict.fromkeys((c, _(c))))
        + ")$"
    )
    nearest = table(
        "Devices nearest their limits (peak in range)",
        f"""
        SELECT d.id AS circuit, coalesce(d.name, d.id) AS name, d.site_id AS site, d.building, d.zone,
               max(m.residual_current_max) AS "residual (mA)", rc.value AS "limit (mA)",
               round((100 * max(m.residual_current_max) / NULLIF(rc.value, 0))::numeric, 1) AS "residual % of limit",
               max(m.cable_temperature_max) AS "cable (°C)", ct.value AS "limit (°C)",
               round((100 * max(m.cable_temperature_max) / NULLIF(ct.value, 0))::numeric, 1) AS "cable % of limit",
               round(greatest(100 * max(m.residual_current_max) / NULLIF(rc.value, 0),
                              100 * max(m.cable_temperature_max) / NULLIF(ct.value, 0))::numeric, 1) AS "worst % of limit"
        FROM devices d
        JOIN telemetry_1m m ON m.device_id = d.id AND $__timeFilter(m.bucket)
        LEFT JOIN device_thresholds rc ON rc.device_id = d.id AND rc.name = 'residual_current_ma'
        LEFT JOIN device_thresholds ct ON ct.device_id = d.id AND ct.name = 'cable_temperature_c'
        WHERE d.kind = 'electrical' AND {f}
        GROUP BY d.id, d.name, d.site_id, d.building, d.zone, rc.value, ct.value
        ORDER BY "worst % of limit" DESC NULLS LAST, d.id
        LIMIT 20
        """,
        description="Peak readings in the range against each circuit's alarm limits "
        "(registry thresholds or the defaults).",
        overrides=[
            {
                "matcher": {"id": "byRegexp", "options": percent_of_limit},
                "properties": [
                    {"id": "unit", "value": "percent"},
                    {"id": "custom.cellOptions", "value": {"type": "color-background"}},
                    {
                        "id": "thresholds",
                        "value": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "green", "value": None},
                                {"color": "orange", "value": 66},
                                {"color": "red", "value": 100},
                            ],
                        },
                    },
                ],
            }
        ],
        links=[device_link()],
    )
    alarms = table(
        "Electrical alarms in range",
        f"""
        SELECT a.opened_at AS time, a.device_id AS circuit, {label_sql("verdict", "a.verdict")} AS verdict,
               {label_sql("status", "a.status")} AS status, {label_sql("reason", "a.reason")} AS reason,
               a.building, a.floor, a.zone, a.cleared_at AS cleared
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type = 'electrical' AND {site_filter("a")}
        ORDER BY a.opened_at DESC
        LIMIT 200
        """,
        links=[device_link()],
    )
    anno = annotation(
        "Electrical alarms",
        f"""
        SELECT a.opened_at AS time, a.cleared_at AS timeend,
               '{quote(label("alarm_type", "electrical"))} ' || {label_sql("verdict", "a.verdict")} || ': ' || a.device_id || ' (' || {label_sql("reason", "a.reason")} || ')' AS text,
               '{quote(label("alarm_type", "electrical"))},' || {label_sql("verdict", "a.verdict")} AS tags
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type = 'electrical' AND {site_filter("a")}
        ORDER BY a.opened_at
        """,
        "orange",
    )
    circuit = variable(
        "circuit",
        "Circuit",
        """
        SELECT id FROM devices
        WHERE kind = 'electrical' AND site_id IN ($site) AND building IN ($building)
          AND floor IN ($floor) AND zone IN ($zone)
        ORDER BY id
        """,
    )
    return dashboard(
        "firesafe-electrical",
        "Firesafe — Electrical fire",
        description="Electrical-fire monitoring: residual current and cable temperature across "
        "circuits, and the circuits nearest their limits.",
        tags=["electrical"],
        time_from="now-24h",
        refresh="1m",
        variables=[*place_vars(), circuit],
        annotations=[anno],
        rows=[
            [(residual, 12, 9), (cable, 12, 9)],
            [(nearest, 24, 9)],
            [(load, 12, 8), (alarms, 12, 8)],
        ],
    )
