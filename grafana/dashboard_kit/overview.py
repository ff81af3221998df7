# ruff: noqa: E501  (SQL reads better unwrapped)
"""The operations overview dashboard (uid firesafe-overview): open alarms
across the estate, the false-alarm filter at work, the fleet's state.
"""

from __future__ import annotations

from .kit import (
    Json,
    annotation,
    dashboard,
    device_link,
    is_open,
    label,
    label_sql,
    panel,
    site_var,
    stat,
    table,
    target,
    timeseries,
)


def overview() -> Json:
    open_stat = stat(
        "Open alarms",
        f"""
        SELECT count(*) FILTER (WHERE type = 'fire' AND verdict = 'confirmed') AS "Fire",
               count(*) FILTER (WHERE verdict = 'pending') AS "Under verification",
               count(*) FILTER (WHERE type = 'electrical' AND verdict = 'confirmed') AS "Electrical",
               count(*) FILTER (WHERE type IN ('fault', 'evac_fault')) AS "Faults",
               count(*) FILTER (WHERE type = 'offline') AS "Offline",
               count(*) FILTER (WHERE status = 'acknowledged') AS "Acknowledged"
        FROM alarms a
        WHERE {is_open("a")} AND a.site_id IN ($site)
        """,
        description="Alarms not yet cleared (suppressed ones excluded), now.",
        thresholds=[(None, "green"), (1, "red")],
    )
    false_rate = stat(
        "Judged false (fire + electrical)",
        """
        SELECT round(100.0 * count(*) FILTER (WHERE a.verdict = 'suppressed')
                     / NULLIF(count(*) FILTER (WHERE a.verdict <> 'pending'), 0), 1) AS "suppressed"
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type IN ('fire', 'electrical') AND a.site_id IN ($site)
        """,
        description="Share of fire and electrical alarms opened in the range that "
        "verification judged false (suppressed).",
        unit="percent",
        thresholds=[(None, "blue")],
    )
    undelivered = stat(
        "Undelivered notifications",
        """
        SELECT count(*) FILTER (WHERE n.status = 'pending') AS "Undelivered",
               count(*) FILTER (WHERE n.status = 'pending' AND n.attempts > 0) AS "Retrying",
               COALESCE(round(extract(epoch FROM now() - min(n.created_at)
                                      FILTER (WHERE n.status = 'pending'))), 0) AS "Oldest (s)",
               count(*) FILTER (WHERE n.status = 'failed') AS "Given up"
        FROM notifications n
        WHERE (n.status = 'pending' OR (n.status = 'failed' AND $__timeFilter(n.created_at)))
          AND n.alarm->>'site' IN ($site)
        """,
        description="Alarm notifications (webhooks, e-mail) not delivered yet, now; those "
        "failing are retried with backoff for 24 h, then given up (in the range). "
        "Per delivery: GET /api/v1/alarms/{id}/notifications.",
        thresholds=[(None, "green"), (1, "red")],
    )
    unraised = stat(
        "Fire alarms that raised no alarm",
        """
        SELECT count(*) AS "Last hour"
        FROM unraised_fire_rejects u
        WHERE u.received_at > now() - interval '1 hour'
        """,
        description="Fire alarms that reached the platform only as rejects in the last hour, "
        "every site (the selection cannot hold them: an unregistered device has no site): "
        "from a device nobody registered, or bad input from a registered one. Call the "
        "building; the platform dashboard names them, and /health is degraded meanwhile.",
        thresholds=[(None, "green"), (1, "red")],
    )
    by_site = panel(
        "barchart",
        "Open alarms by site and type",
        [
            target(
                f"""
            SELECT a.site_id AS site,
                   count(*) FILTER (WHERE a.type = 'fire') AS fire,
                   count(*) FILTER (WHERE a.type = 'pre_alarm') AS pre_alarm,
                   count(*) FILTER (WHERE a.type = 'electrical') AS electrical,
                   count(*) FILTER (WHERE a.type = 'fault') AS fault,
                   count(*) FILTER (WHERE a.type = 'evac_fault') AS evac_fault,
                   count(*) FILTER (WHERE a.type = 'offline') AS offline
            FROM alarms a
            WHERE {is_open("a")} AND a.site_id IN ($site)
            GROUP BY a.site_id
            ORDER BY a.site_id
            """,
                "table",
            )
        ],
        description="Alarms not yet cleared, per site and type.",
        options={
            "orientation": "horizontal",
            "stacking": "normal",
            "showValue": "auto",
            "xField": "site",
            "legend": {"displayMode": "list", "placement": "bottom"},
        },
    )
    verdicts = timeseries(
        "Confirmed vs suppressed (false-alarm filter)",
        f"""
        SELECT $__timeGroupAlias(a.opened_at, $__interval), {label_sql("verdict", "a.verdict")} AS metric, count(*) AS value
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type IN ('fire', 'electrical') AND a.site_id IN ($site)
        GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        bars=True,
        interval="5m",
        description="Fire and electrical alarms by the verdict of verification, per interval "
        "of opening: suppressed ones are the false alarms the filter kept away.",
        overrides=[
            {
                "matcher": {"id": "byName", "options": label("verdict", "confirmed")},
                "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}],
            },
            {
                "matcher": {"id": "byName", "options": label("verdict", "suppressed")},
                "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "green"}}],
            },
            {
                "matcher": {"id": "byName", "options": label("verdict", "pending")},
                "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}],
            },
        ],
    )
    by_type = timeseries(
        "Alarms opened by type",
        f"""
        SELECT $__timeGroupAlias(a.opened_at, $__interval), {label_sql("alarm_type", "a.type")} AS metric, count(*) AS value
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.site_id IN ($site)
        GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        bars=True,
        interval="5m",
    )
    offline = table(
        "Offline devices",
        f"""
        SELECT a.device_id AS device, {label_sql("kind", "d.kind")} AS kind, a.site_id AS site, a.building, a.floor, a.zone,
               a.opened_at AS "offline since", s.last_seen_at AS "last seen", {label_sql("status", "a.status")} AS status
        FROM alarms a
        JOIN devices d ON d.id = a.device_id
        LEFT JOIN device_state s ON s.device_id = a.device_id
        WHERE a.type = 'offline' AND {is_open("a")} AND a.site_id IN ($site)
        ORDER BY a.opened_at, a.device_id
        """,
        description="Devices with an open offline alarm (silent for 3 reporting intervals, "
        "or their status topic said offline).",
        links=[device_link()],
    )
    noisy = table(
        "Noisiest devices",
        f"""
        SELECT a.device_id AS device, {label_sql("kind", "d.kind")} AS kind, a.site_id AS site, a.building, a.zone,
               count(*) AS alarms,
               count(*) FILTER (WHERE a.verdict = 'suppressed') AS suppressed,
               count(*) FILTER (WHERE a.type = 'pre_alarm') AS pre_alarms,
               count(*) FILTER (WHERE a.type IN ('fault', 'evac_fault')) AS faults,
               max(a.opened_at) AS "last alarm"
        FROM alarms a
        JOIN devices d ON d.id = a.device_id
        WHERE $__timeFilter(a.opened_at) AND a.site_id IN ($site)
        GROUP BY a.device_id, d.kind, a.site_id, a.building, a.zone
        ORDER BY alarms DESC, suppressed DESC, device
        LIMIT 15
        """,
        description="Devices that opened the most alarms in the range: candidates for "
        "cleaning, relocation or a different detector type.",
        links=[device_link()],
    )
    anno = annotation(
        "Fire and electrical alarms",
        f"""
        SELECT a.opened_at AS time, a.cleared_at AS timeend,
               {label_sql("alarm_type", "a.type")} || ' ' || {label_sql("verdict", "a.verdict")} || ': ' || a.device_id || ' (' || a.site_id || '/'
                 || a.building || '/' || a.floor || '/' || a.zone || ', ' || {label_sql("reason", "a.reason")} || ')' AS text,
               {label_sql("alarm_type", "a.type")} || ',' || {label_sql("verdict", "a.verdict")} || ',' || a.site_id AS tags
        FROM alarms a
        WHERE $__timeFilter(a.opened_at) AND a.type IN ('fire', 'electrical')
          AND a.verdict <> 'suppressed' AND a.site_id IN ($site)
        ORDER BY a.opened_at
        """,
        "red",
    )
    return dashboard(
        "firesafe-overview",
        "Firesafe — Operations overview",
        description="Open alarms across the estate, the false-alarm filter at work, "
        "offline and noisy devices.",
        tags=["operations"],
        time_from="now-24h",
        refresh="30s",
        variables=[site_var()],
        annotations=[anno],
        rows=[
            [(open_stat, 10, 5), (unraised, 4, 5), (undelivered, 5, 5), (false_rate, 5, 5)],
            [(by_site, 10, 9), (verdicts, 14, 9)],
            [(offline, 12, 9), (by_type, 12, 9)],
            [(noisy, 24, 9)],
        ],
    )
