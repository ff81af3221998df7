# ruff: noqa: E501  (SQL reads better unwrapped)
"""Writes grafana/dashboards/*.json, the dashboards Grafana provisions.

The JSON files are generated from this one script so that every panel
follows the same rules (datasource by uid, `$__timeFilter` on every
time-series table, grouped and sorted time columns, the 1-minute rollup
for fleet-wide telemetry); edit here and run

    python grafana/build_dashboards.py

tests/test_grafana.py fails when the JSON and this script disagree, and
runs every query below against a filled database.

Languages: every dashboard is written once per language of the catalogue
(firesafe/locale, read by firesafe.i18n): grafana/dashboards/en/*.json and
grafana/dashboards/zh-CN/*.json, in separate Grafana folders. Write panels in
English as usual: `panel`, `variable`, `annotation`, `dashboard` and
`device_link` translate titles, descriptions and labels themselves; column
names become display names (`column_names`); codes shown as data go through
`label_sql` (a CASE over the catalogue's labels; English keeps the codes).
tests/test_i18n_grafana.py fails when a Chinese dashboard shows English: add
the msgid's translation to firesafe/locale/zh_CN/LC_MESSAGES/messages.po
(`make messages` lists what is missing).

Conventions of the SQL:
- every read of a time-series table (telemetry, telemetry_1m, alarms,
  device_events, ingest_stats, rejects, linkage_commands) is bounded by the
  dashboard's time range, except the open-alarm set (`status <> 'cleared'
  AND verdict <> 'suppressed'`, at most one per device and type);
- time series group with `$__timeGroupAlias` (time_bucket on TimescaleDB,
  plain SQL on PostgreSQL) and end with ORDER BY time;
- multi-value variables are used as `IN ($var)` (Grafana quotes them),
  single-value ones as `'$var'`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from textwrap import dedent
from typing import Any

from firesafe import i18n
from firesafe.contract import READINGS

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
# Language -> uid suffix (uids are unique across the Grafana instance).
LANGUAGES = {"en": "", "zh-CN": "-zh"}
# The language being rendered, and every msgid asked for (`make messages`).
_lang = i18n.DEFAULT_LANG
REQUESTED: set[str] = set()


def _(text: str) -> str:
    """`text` (English) in the language being rendered."""
    REQUESTED.add(text)
    return i18n.translate(text, _lang)


def uid(base: str) -> str:
    return base + LANGUAGES[_lang]


def label_sql(vocabulary: str, expr: str) -> str:
    """SQL showing the label of the code in `expr` (the code itself in English)."""
    if _lang == i18n.DEFAULT_LANG:
        return expr
    cases = " ".join(
        f"WHEN '{code}' THEN '{quote(i18n.label(vocabulary, code, _lang))}'"
        for code in i18n.VOCABULARIES[vocabulary]
    )
    return f"(CASE {expr} {cases} ELSE {expr} END)"


def label(vocabulary: str, code: str) -> str:
    """What `label_sql` shows for `code` (e.g. a series name to match)."""
    if _lang == i18n.DEFAULT_LANG:
        return code
    return i18n.label(vocabulary, code, _lang)


def shown(vocabulary: str, code: str) -> str:
    """What `label_sql` shows for `code`, quoted for an SQL literal."""
    return quote(label(vocabulary, code))


def local_time(expr: str) -> str:
    """A timestamp as the site's wall-clock time (variable `tz`, from the registry)."""
    return f"to_char({expr} AT TIME ZONE '$tz', 'YYYY-MM-DD HH24:MI:SS')"


def tz_var() -> Json:
    """The selected site's time zone (sites.timezone): shown, and used by `local_time`."""
    return variable(
        "tz",
        "Site time zone",
        "SELECT timezone FROM sites WHERE id = '$site'",
        multi=False,
        include_all=False,
    )


def quote(text: str) -> str:
    """A string inside an SQL literal."""
    return text.replace("'", "''")


def _depth0(text: str) -> list[tuple[int, str]]:
    """(position, char) of the characters outside parentheses and quotes."""
    out, depth, quoted = [], 0, ""
    for i, ch in enumerate(text):
        if quoted:
            if ch == quoted:
                quoted = ""
            continue
        if ch in "'\"":
            quoted = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            out.append((i, ch))
    return out


def _balanced(text: str) -> str:
    """`text` up to the parenthesis closing the one just before it."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return text[:i]
    return text


def column_names(query: str) -> list[str]:
    """Names of the result columns of the main SELECT (what Grafana shows as field names)."""
    text = re.sub(r"--[^\n]*", "", query)
    top = {i for i, _ in _depth0(text)}
    start = next(
        (m.end() for m in re.finditer(r"\bSELECT\b", text, re.I) if m.start() in top), None
    )
    if start is None:
        return []
    end = next(
        (
            m.start()
            for m in re.finditer(r"\bFROM\b", text[start:], re.I)
            if m.start() + start in top
        ),
        len(text) - start,
    )
    select = text[start : start + end]
    select = re.sub(r"^\s*DISTINCT\s+ON\s*\([^)]*\)", "", select, flags=re.I)
    cuts = [i for i, ch in _depth0(select) if ch == ","]
    items = [select[a + 1 : b] for a, b in zip([-1, *cuts], [*cuts, len(select)], strict=True)]
    names = []
    for item in (x.strip() for x in items):
        if item == "*":
            # SELECT * FROM (subquery): the subquery's columns.
            rest = text[start + end :]
            inner = re.search(r"\(\s*(SELECT\b.*)", rest, re.I | re.S)
            if inner:
                names.extend(column_names(_balanced(inner.group(1))))
            continue
        alias = re.search(r'\bAS\s+("([^"]+)"|(\w+))\s*$', item, re.I | re.S)
        if alias:
            names.append(alias.group(2) or alias.group(3))
        elif item.startswith("$__timeGroupAlias"):
            names.append("time")
        elif re.fullmatch(r"[\w.]+", item):
            names.append(item.rsplit(".", 1)[-1])
        elif m := re.match(r"(\w+)\s*\(", item):
            names.append(m.group(1))
    return names


def display_names(kind: str, targets: list[Json]) -> list[Json]:
    """Overrides giving every result column its name in the language being rendered."""
    if _lang == i18n.DEFAULT_LANG:
        return []
    out, seen = [], set()
    for tgt in targets:
        names = column_names(tgt["rawSql"])
        series = "metric" in names
        for name in names:
            if name in seen or name in ("metric", "__value", "__text"):
                continue
            if series and name in ("value", "time"):
                continue  # series are named by the metric column's values
            seen.add(name)
            out.append(
                {
                    "matcher": {"id": "byName", "options": name},
                    "properties": [{"id": "displayName", "value": _(name)}],
                }
            )
    return out


DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "firesafe-db"}
GRAFANA_BUILTIN = {"type": "grafana", "uid": "-- Grafana --"}
SCHEMA_VERSION = 39
TAGS = ["firesafe"]

Json = dict[str, Any]

# Raw telemetry is read for ranges up to this long, the 1-minute rollup beyond.
RAW_RANGE_LIMIT = "interval '24 hours'"


def sql(text: str) -> str:
    return dedent(text).strip()


def target(query: str, fmt: str = "time_series", ref: str = "A") -> Json:
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql(query),
    }


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    description: str = "",
    unit: str | None = None,
    interval: str | None = None,
    options: Json | None = None,
    custom: Json | None = None,
    thresholds: list[tuple[float | None, str]] | None = None,
    overrides: list[Json] | None = None,
    repeat: str | None = None,
    links: list[Json] | None = None,
) -> Json:
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    if thresholds:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in thresholds],
        }
    if links:
        defaults["links"] = links
    out: Json = {
        "type": kind,
        "title": _(title) if title else title,
        "description": _(description) if description else description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": {
            "defaults": defaults,
            "overrides": [*(overrides or []), *display_names(kind, targets)],
        },
        "options": options or {},
    }
    if interval:
        out["interval"] = interval
    if repeat:
        out["repeat"] = repeat
        out["repeatDirection"] = "h"
        out["maxPerRow"] = 2
    return out


def timeseries(title: str, query: str, *, bars: bool = False, **kw: Any) -> Json:
    custom = (
        {"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}}
        if bars
        else {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": False}
    )
    kw.setdefault("custom", custom)
    kw.setdefault(
        "options",
        {
            "legend": {
                "displayMode": "table",
                "placement": "right",
                "calcs": ["max", "lastNotNull"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )
    return panel("timeseries", title, [target(query)], **kw)


def table(title: str, query: str, **kw: Any) -> Json:
    kw.setdefault("options", {"showHeader": True, "cellHeight": "sm"})
    return panel("table", title, [target(query, "table")], **kw)


def stat(title: str, query: str, **kw: Any) -> Json:
    kw.setdefault(
        "options",
        {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
        },
    )
    return panel("stat", title, [target(query, "table")], **kw)


def variable(
    name: str,
    label: str,
    query: str,
    *,
    multi: bool = True,
    include_all: bool = True,
    refresh: int = 1,
    hide: int = 0,
) -> Json:
    """A query variable; refresh 1 = on load, 2 = on time range change."""
    current: Json = {"selected": True, "text": ["All"], "value": ["$__all"]} if include_all else {}
    return {
        "type": "query",
        "name": name,
        "label": _(label),
        "datasource": DATASOURCE,
        "query": sql(query),
        "definition": sql(query),
        "refresh": refresh,
        "multi": multi,
        "includeAll": include_all,
        "current": current,
        "options": [],
        "sort": 1,
        "hide": hide,
        "regex": "",
        "skipUrlSync": False,
    }


def annotation(name: str, query: str, color: str) -> Json:
    return {
        "name": _(name),
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": color,
        "target": target(query, "table", "Anno"),
    }


def layout(rows: list[list[tuple[Json, int, int]]]) -> list[Json]:
    """Place (panel, width, height) rows on Grafana's 24-column grid."""
    out, y, pid = [], 0, 1
    for row in rows:
        x, height = 0, 0
        for item, width, h in row:
            item = {"id": pid, "gridPos": {"x": x, "y": y, "w": width, "h": h}, **item}
            out.append(item)
            pid += 1
            x += width
            height = max(height, h)
        assert x <= 24, f"row wider than the grid: {[p['title'] for p, _, _ in row]}"
        y += height
    return out


def dashboard(
    base_uid: str,
    title: str,
    *,
    description: str,
    tags: list[str],
    time_from: str,
    refresh: str,
    variables: list[Json],
    annotations: list[Json],
    rows: list[list[tuple[Json, int, int]]],
) -> Json:
    builtin = {
        "builtIn": 1,
        "name": "Annotations & Alerts",
        "datasource": GRAFANA_BUILTIN,
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "type": "dashboard",
    }
    return {
        "uid": uid(base_uid),
        "title": _(title),
        "description": _(description),
        "tags": [*TAGS, *tags, _lang],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "liveNow": False,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "links": [
            {
                "title": _("Firesafe"),
                "type": "dashboards",
                "tags": [*TAGS, _lang],
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            },
        ],
        "annotations": {"list": [builtin, *annotations]},
        "templating": {"list": variables},
        "panels": layout(rows),
    }


# --- shared pieces -----------------------------------------------------------


def site_var(*, multi: bool = True) -> Json:
    return variable(
        "site",
        "Site",
        "SELECT id AS __value, coalesce(name, id) AS __text FROM sites ORDER BY id",
        multi=multi,
        include_all=multi,
    )


def site_filter(alias: str, *, single_site: bool = False) -> str:
    site = f"{alias}.site_id = '$site'" if single_site else f"{alias}.site_id IN ($site)"
    return (
        f"{site} AND {alias}.building IN ($building) AND {alias}.floor IN ($floor) "
        f"AND {alias}.zone IN ($zone)"
    )


def place_vars(*, single_site: bool = False) -> list[Json]:
    site_in = "site_id = '$site'" if single_site else "site_id IN ($site)"
    return [
        site_var(multi=not single_site),
        variable(
            "building",
            "Building",
            f"SELECT DISTINCT building FROM buildings WHERE {site_in} ORDER BY 1",
        ),
        variable(
            "floor",
            "Floor",
            f"SELECT DISTINCT floor FROM floors WHERE {site_in} "
            "AND building IN ($building) ORDER BY 1",
        ),
        variable(
            "zone",
            "Zone",
            f"SELECT DISTINCT zone FROM zones WHERE {site_in} "
            "AND building IN ($building) AND floor IN ($floor) ORDER BY 1",
        ),
    ]


OPEN = "{a}.status <> 'cleared' AND {a}.verdict <> 'suppressed'"


def is_open(alias: str) -> str:
    return OPEN.format(a=alias)


def device_link(title: str = "Device details") -> Json:
    return {
        "title": _(title),
        "url": f"/d/{uid('firesafe-device')}/device?var-device=${{__value.raw}}&${{__url_time_range}}",
    }


# --- Operations overview -------------------------------------------------------


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
            [(open_stat, 12, 5), (undelivered, 6, 5), (false_rate, 6, 5)],
            [(by_site, 10, 9), (verdicts, 14, 9)],
            [(offline, 12, 9), (by_type, 12, 9)],
            [(noisy, 24, 9)],
        ],
    )


# --- Site --------------------------------------------------------------------------


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


# --- Device ------------------------------------------------------------------------


def reading_values(alias: str, suffix: str = "") -> str:
    return ", ".join(f"('{r}', {alias}.{r}{suffix})" for r in READINGS)


def device() -> Json:
    raw_readings = reading_values("t")
    rollup = ", ".join(f"('{r}', m.{r}_avg * m.{r}_n, m.{r}_n)" for r in READINGS)
    readings = panel(
        "timeseries",
        "$reading",
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
                SELECT x.time, '{quote(_("limit"))}: ' || {label_sql("threshold", "th.name")} AS metric, th.value
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


# --- Electrical fire ---------------------------------------------------------------


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


# --- Evacuation readiness ------------------------------------------------------------


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


# --- Platform health ---------------------------------------------------------------


def platform() -> Json:
    def counter_rates(
        title: str,
        counters: list[tuple[str, str]],
        unit: str,
        description: str,
        per_second: bool = True,
    ) -> Json:
        """Rates of ingest_stats counters (counted since each instance started)."""
        deltas = (",\n" + " " * 23).join(
            f"CASE WHEN s.{c} >= lag(s.{c}) OVER w THEN s.{c} - lag(s.{c}) OVER w ELSE s.{c} END AS {c}"
            for c, _ in counters
        )
        values = ", ".join(f"('{quote(_(name))}', d.{c})" for c, name in counters)
        value = "sum(v.delta) / sum(d.secs)" if per_second else "sum(v.delta)"
        return timeseries(
            title,
            f"""
            WITH d AS (
                SELECT s.at, s.instance,
                       extract(epoch FROM s.at - lag(s.at) OVER w) AS secs,
                       {deltas}
                FROM ingest_stats s
                WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
                WINDOW w AS (PARTITION BY s.instance ORDER BY s.at)
            )
            SELECT $__timeGroupAlias(d.at, $__interval), d.instance || ' ' || v.metric AS metric,
                   {value} AS value
            FROM d
            CROSS JOIN LATERAL (VALUES {values}) AS v(metric, delta)
            WHERE d.secs > 0
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            unit=unit,
            interval="10s",
            description=description,
        )

    throughput = counter_rates(
        "Ingest throughput",
        [("messages", "messages/s"), ("readings", "readings/s")],
        "short",
        "Messages and readings per second per ingest instance, from the counters in "
        "ingest_stats (a counter that went down means the instance restarted).",
    )
    quality = counter_rates(
        "Seq gaps, duplicates and rejects",
        [("seq_gaps", "seq gaps"), ("duplicates", "duplicates"), ("rejects", "rejects")],
        "short",
        "Readings missing according to seq, duplicates stored once, and rejected messages, "
        "per interval.",
        per_second=False,
    )

    def gauge_series(title: str, expr: str, unit: str, description: str) -> Json:
        return timeseries(
            title,
            f"""
            SELECT $__timeGroupAlias(s.at, $__interval), s.instance AS metric, {expr} AS value
            FROM ingest_stats s
            WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
            GROUP BY 1, 2
            ORDER BY 1, 2
            """,
            unit=unit,
            interval="10s",
            description=description,
        )

    latency = gauge_series(
        "Batch latency (p95)",
        "max(s.batch_latency_ms)",
        "ms",
        "Arrival-to-commit p95 of each reporting interval (worst per Grafana interval).",
    )
    queue = gauge_series(
        "Queue depth",
        "max(s.queue_depth)",
        "short",
        "Messages waiting between MQTT intake and the writer.",
    )
    lag = gauge_series(
        "Ingest lag", "max(s.lag_ms)", "ms", "Age of the oldest uncommitted message."
    )
    held = gauge_series(
        "Shards per process",
        "max(cardinality(s.shards))",
        "short",
        "Site shards each ingest process holds (each process aims at ceil(shards / processes)).",
    )
    takeovers = counter_rates(
        "Shard takeovers",
        [("takeovers", "takeovers")],
        "short",
        "Shards taken over per interval: a process joined, left or died.",
        per_second=False,
    )
    rejects = timeseries(
        "Rejects by reason",
        f"""
        SELECT $__timeGroupAlias(r.received_at, $__interval), {label_sql("reject_reason", "r.reason")} AS metric, count(*) AS value
        FROM rejects r
        WHERE $__timeFilter(r.received_at)
        GROUP BY 1, 2
        ORDER BY 1, 2
        """,
        bars=True,
        interval="1m",
        description="Bad input kept in the reject store (contract section 3), per reason.",
    )
    instances = table(
        "Ingest instances (latest report in range)",
        """
        SELECT DISTINCT ON (s.instance) s.instance, s.at AS "reported", s.broker_connected AS "broker",
               cardinality(s.shards) AS "shards",
               s.queue_depth AS "queue", s.lag_ms AS "lag (ms)", s.batch_latency_ms AS "p95 (ms)",
               s.messages, s.readings, s.rejects
        FROM ingest_stats s
        WHERE $__timeFilter(s.at) AND s.instance IN ($instance)
        ORDER BY s.instance, s.at DESC
        """,
    )
    recent = table(
        "Recent rejects",
        f"""
        SELECT r.received_at AS time, {label_sql("reject_reason", "r.reason")} AS reason,
               r.topic, r.device_id AS device, r.detail
        FROM rejects r
        WHERE $__timeFilter(r.received_at)
        ORDER BY r.received_at DESC, r.id DESC
        LIMIT 100
        """,
    )
    jobs = table(
        "Background jobs (TimescaleDB)",
        """
        SELECT j.job, j.target, j.last_run_status AS "last run", j.total_runs AS runs,
               j.total_failures AS failures, j.last_successful_finish AS "last success",
               j.last_error_at AS "last error at", j.last_error AS "last error"
        FROM firesafe_job_health j
        ORDER BY j.failed DESC, j.job_id
        """,
        description="Compression, rollup refresh and retention policies and how their last "
        "run went. A failed job means that work has stopped: chunks are no longer compressed, "
        "the 1-minute rollup lags, or old telemetry is kept. Empty on plain PostgreSQL "
        "(no background jobs). /health turns degraded and /metrics has "
        "firesafe_db_job_failed{job} for the same jobs.",
    )
    totals = table(
        "Rejects since installation",
        f"SELECT {label_sql('reject_reason', 'reason')} AS reason, count FROM reject_counts "
        "ORDER BY count DESC, reject_counts.reason",
    )
    instance = variable(
        "instance",
        "Ingest instance",
        "SELECT DISTINCT s.instance FROM ingest_stats s WHERE $__timeFilter(s.at) ORDER BY 1",
        refresh=2,
    )
    return dashboard(
        "firesafe-platform",
        "Firesafe — Platform health",
        description="Ingest throughput, latency, queue depth, lag, rejects, seq gaps and the "
        "database's background jobs.",
        tags=["platform"],
        time_from="now-1h",
        refresh="10s",
        variables=[instance],
        annotations=[],
        rows=[
            [(instances, 24, 6)],
            [(jobs, 24, 5)],
            [(throughput, 12, 8), (latency, 12, 8)],
            [(queue, 8, 8), (lag, 8, 8), (quality, 8, 8)],
            [(held, 12, 8), (takeovers, 12, 8)],
            [(rejects, 12, 8), (totals, 12, 8)],
            [(recent, 24, 9)],
        ],
    )


DASHBOARDS = {
    "overview.json": overview,
    "site.json": site,
    "device.json": device,
    "electrical.json": electrical,
    "evacuation.json": evacuation,
    "platform.json": platform,
}


def render() -> dict[str, str]:
    """`<lang>/<file name>` -> JSON text of every dashboard in every language."""
    global _lang
    out = {}
    try:
        for lang in LANGUAGES:
            _lang = lang
            for name, build in DASHBOARDS.items():
                out[f"{lang}/{name}"] = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
    finally:
        _lang = i18n.DEFAULT_LANG
    return out


def main() -> int:
    for name, text in render().items():
        path = DASHBOARD_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
