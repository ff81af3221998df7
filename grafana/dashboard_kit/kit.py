# ruff: noqa: E501  (SQL reads better unwrapped)
"""The kit every dashboard module is written with: panels, variables, layout, languages.

grafana/build_dashboards.py renders the dashboards of this package (one
module each) with these helpers, so that every panel follows the same rules
(datasource by uid, `$__timeFilter` on every time-series table, grouped and
sorted time columns, the 1-minute rollup for fleet-wide telemetry).

Languages: every dashboard is written once per language of the catalogue
(firesafe/locale, read by firesafe.i18n). The language being rendered lives
here only (`_lang`, set by `language()` around each rendering), and every
helper reads it: write panels in English as usual: `panel`, `variable`,
`annotation`, `dashboard` and `device_link` translate titles, descriptions and
labels themselves (through `_`, which also records the msgid in `REQUESTED`);
column names become display names (`column_names`); codes shown as data go
through `label_sql` (a CASE over the catalogue's labels; English keeps the
codes).

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

import re
from collections.abc import Iterator
from contextlib import contextmanager
from textwrap import dedent
from typing import Any

from firesafe import i18n

# Language -> uid suffix (uids are unique across the Grafana instance).
LANGUAGES = {"en": "", "zh-CN": "-zh"}
# The language being rendered, and every msgid asked for (`make messages`).
_lang = i18n.DEFAULT_LANG
REQUESTED: set[str] = set()


@contextmanager
def language(lang: str) -> Iterator[None]:
    """Render in `lang` inside the block; the default language again after it."""
    global _lang
    _lang = lang
    try:
        yield
    finally:
        _lang = i18n.DEFAULT_LANG


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
