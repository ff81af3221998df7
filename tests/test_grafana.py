"""Grafana provisioning and dashboards, checked without a Grafana server.

Every provisioning and dashboard file is loaded; every panel, variable and
annotation query is expanded the way Grafana does it (the frontend's
template variables with its SQL quoting, then the postgres datasource's
macros) and run against a real database filled with a small estate:
no SQL errors, sorted `time` columns on time series, no unbounded scan of a
time-series table (checked on the query text and on the plan), and every
panel shows data in at least one of the runs.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql

from firesafe.contract import KINDS, READINGS
from firesafe.i18n import VOCABULARIES
from storage.migrate import MigrationReport
from tests.helpers import refresh_rollup

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*/*.json"))
LANGUAGE_DIRS = ("en", "zh-CN")
DATASOURCE_FILE = GRAFANA / "provisioning" / "datasources" / "firesafe.yaml"
PROVIDER_FILE = GRAFANA / "provisioning" / "dashboards" / "firesafe.yaml"

DS_TYPE = "grafana-postgresql-datasource"
DS_UID = "firesafe-db"
BUILTIN_DS = {"type": "grafana", "uid": "-- Grafana --"}
EXPECTED_UIDS = {
    "firesafe-overview",
    "firesafe-site",
    "firesafe-device",
    "firesafe-electrical",
    "firesafe-evacuation",
    "firesafe-platform",
}
TIME_SERIES_PANELS = {"timeseries", "state-timeline", "status-history", "heatmap"}
# Grafana's default resolution is the panel's width in pixels; any value of
# that order gives the same kind of $__interval.
MAX_DATA_POINTS = 1000

# Time-series tables and the columns that bound a scan of them in time.
TIME_COLUMNS = ("ts", "at", "opened_at", "received_at", "bucket")
TIME_SERIES_TABLES = (
    "telemetry_rollup_1m",
    "telemetry_1m",
    "telemetry",
    "alarms",
    "alarm_log",
    "device_events",
    "ingest_stats",
    "rejects",
    "linkage_commands",
)
# The open-alarm set is bounded without a time filter: at most one open,
# unsuppressed alarm per device and type (alarms_one_open_idx).
OPEN_ALARMS = ("status <> 'cleared'", "verdict <> 'suppressed'")

Json = dict[str, Any]


def load_dashboards() -> dict[str, Json]:
    return {
        dashboard_name(path): json.loads(path.read_text(encoding="utf-8"))
        for path in DASHBOARD_FILES
    }


def dashboard_name(path: Path) -> str:
    """`<lang>/<file>`: the dashboards of every language."""
    return f"{path.parent.name}/{path.name}"


def all_panels(dashboard: Json) -> Iterator[Json]:
    for item in dashboard.get("panels", []):
        yield item
        yield from item.get("panels", [])  # collapsed rows


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


# --- Grafana's interval and macro expansion -------------------------------------

# rangeutil.roundInterval: (upper bound ms, rounded ms)
_ROUND_STEPS = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_800_000, 2_592_000_000),
)
_UNIT_S = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "M": 2592000,
    "y": 31536000,
}


def round_interval(ms: float) -> int:
    for bound, value in _ROUND_STEPS:
        if ms < bound:
            return value
    return 31_536_000_000


def format_interval(ms: int) -> str:
    """kbn.secondsToHms."""
    seconds = ms / 1000
    for unit, size in (("y", 31536000), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count = int(seconds // size)
        if count:
            return f"{count}{unit}"
        seconds %= size
    return f"{ms}ms"


def parse_interval(text: str) -> float:
    """Seconds of a Grafana interval ("10s", "1m", "1d"; gtime.ParseInterval)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|M|y)", text.strip().strip("'"))
    if not match:
        raise ValueError(f"bad interval {text!r}")
    return int(match[1]) * _UNIT_S[match[2]]


def go_float(value: float) -> str:
    """Go's %v of a float64 (shortest digits, exponent from 1e+06 up)."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    digits = Decimal(repr(value)).normalize().as_tuple()
    mantissa = "".join(map(str, digits.digits))
    exponent = len(mantissa) + int(digits.exponent) - 1
    if exponent < -4 or exponent >= 6:
        tail = f".{mantissa[1:]}" if len(mantissa) > 1 else ""
        return f"{mantissa[0]}{tail}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"
    return repr(value)


def rfc3339(moment: datetime) -> str:
    """Go's time.RFC3339Nano in UTC (trailing zeros of the fraction dropped)."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def strip_sql_comments(text: str) -> str:
    """Grafana removes -- and /* */ comments (outside quotes) before expanding macros."""
    out, i, n = [], 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"":
            j = i + 1
            while j < n:
                if text[j] == char:
                    if j + 1 < n and text[j + 1] == char:
                        j += 2
                        continue
                    break
                j += 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("--", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(char)
            i += 1
    return "".join(out)


MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def interval_ms(self, min_interval: str | None) -> int:
        span_ms = (self.end - self.start).total_seconds() * 1000
        interval = round_interval(span_ms / MAX_DATA_POINTS)
        if min_interval:
            interval = max(interval, int(parse_interval(min_interval) * 1000))
        return interval


def expand_macros(text: str, rng: TimeRange, *, timescaledb: bool) -> str:
    """The grafana-postgresql-datasource macro engine (backend side)."""
    text = strip_sql_comments(text)

    def group(column: str, interval: str, fill: list[str]) -> str:
        seconds = parse_interval(interval)
        if seconds <= 0:
            raise ValueError("interval must be positive")
        if (
            fill
            and fill[0] not in ("NULL", "previous")
            and not re.fullmatch(r"-?\d+(\.\d+)?", fill[0])
        ):
            raise ValueError(f"bad fill mode {fill[0]!r}")
        if timescaledb:
            return f"time_bucket('{seconds:.3f}s',{column})"
        return f"floor(extract(epoch from {column})/{go_float(seconds)})*{go_float(seconds)}"

    def evaluate(name: str, args: list[str]) -> str:
        frm, to = rfc3339(rng.start), rfc3339(rng.end)
        needs_column = {
            "__time",
            "__timeEpoch",
            "__timeFilter",
            "__unixEpochFilter",
            "__unixEpochNanoFilter",
        }
        if name in needs_column and not args[0]:
            raise ValueError(f"missing time column argument for macro {name}")
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise ValueError(f"macro {name} needs time column and interval")
            expr = group(args[0], args[1], args[2:])
            return expr + ' AS "time"' if name == "__timeGroupAlias" else expr
        start_s, end_s = int(rng.start.timestamp()), int(rng.end.timestamp())
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {start_s} AND {args[0]} <= {end_s}"
        if name == "__unixEpochNanoFilter":
            return f"{args[0]} >= {start_s * 10**9} AND {args[0]} <= {end_s * 10**9}"
        if name == "__unixEpochNanoFrom":
            return str(start_s * 10**9)
        if name == "__unixEpochNanoTo":
            return str(end_s * 10**9)
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            seconds = go_float(parse_interval(args[1]))
            expr = f"floor(({args[0]})/{seconds})*{seconds}"
            return expr + ' AS "time"' if name.endswith("Alias") else expr
        raise ValueError(f"unknown macro {name!r}")

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        if name == "__timeGroup":
            # Grafana: a $__timeGroup directly followed by ',' gets the alias.
            index = text.find(match[0]) + len(match[0])
            if index < len(text) and text[index] == ",":
                name = "__timeGroupAlias"
        params = match[2].replace("\n", "").strip()
        args = next(csv.reader([params], skipinitialspace=True)) if params else [""]
        return evaluate(name, [arg.strip() for arg in args])

    return MACRO_RE.sub(replace, text)


# --- Grafana's template variables -----------------------------------------------

VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Variable:
    definition: Json
    value: str | list[str]


def interpolate(text: str, variables: dict[str, Variable], builtins: dict[str, str]) -> str:
    """templateSrv.replace with the SQL datasources' interpolateVariable."""

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        fmt = match[3] or match[6]
        if name in builtins:
            return builtins[name]
        if name not in variables:
            return match[0]
        var = variables[name]
        values = var.value if isinstance(var.value, list) else [var.value]
        if fmt in (None, ""):
            if isinstance(var.value, str) and not (
                var.definition.get("multi") or var.definition.get("includeAll")
            ):
                return var.value
            return ",".join(quote_literal(v) for v in values)
        if fmt == "raw":
            return ",".join(values)
        if fmt == "csv":
            return ",".join(values)
        if fmt in ("sqlstring", "singlequote"):
            return ",".join(quote_literal(v) for v in values)
        raise AssertionError(f"variable format {fmt!r} not handled by this check")

    return VARIABLE_RE.sub(replace, text)


# --- the database under the dashboards ---------------------------------------------


@dataclass
class Estate:
    now: datetime
    devices: dict[str, str]  # id -> kind
    showcase: list[str]  # one device of each kind with a story (alarms, events)


SITES = {"S1": ("North campus", ("A", "B")), "S2": ("Harbour depot", ("A",))}
FLOORS = ("0", "1", "2")
ZONES = (("Z1", "office"), ("Z2", "corridor"))
RAW_HOURS = 30
LONG_HISTORY_DAYS = 4

# One reading expression per kind; `m` is minutes before now, `h` a per-device
# number. Special devices get their story further down.
TELEMETRY_SQL = """
INSERT INTO telemetry (ts, device_id, seq, received_at, obscuration, temperature, co,
    humidity, residual_current, cable_temperature, current, voltage, battery, mains, lamp_ok)
SELECT g.ts, d.id, (extract(epoch FROM g.ts) / 60)::bigint, g.ts + interval '150 milliseconds',
    CASE WHEN d.kind IN ('smoke', 'multi') THEN 0.05 + 0.05 * random()
         + CASE WHEN d.id = %(fire)s
                 AND g.ts BETWEEN %(fire_at)s - interval '10 minutes' AND %(fire_at)s
                THEN 4.0 ELSE 0 END END,
    CASE WHEN d.kind IN ('smoke', 'heat', 'multi')
         THEN 21 + 2 * sin(extract(epoch FROM g.ts) / 7200) + random()
         + CASE WHEN d.id = %(warm)s THEN 30 ELSE 0 END END,
    CASE WHEN d.kind = 'multi' THEN 2 + 3 * random() END,
    CASE WHEN d.kind = 'multi' THEN 40 + 10 * random() END,
    CASE WHEN d.kind = 'electrical' THEN 20 + 10 * random() + d.h * 40 END,
    CASE WHEN d.kind = 'electrical' THEN 35 + 5 * random() + d.h * 5 END,
    CASE WHEN d.kind = 'electrical' THEN 8 + 4 * random() END,
    CASE WHEN d.kind = 'electrical' THEN 228 + 4 * random() END,
    CASE WHEN d.kind = 'evac' THEN
         CASE WHEN d.id = %(drain)s AND g.ts > %(now)s - interval '6 hours'
              THEN 100 - 75 * extract(epoch FROM g.ts - (%(now)s - interval '6 hours')) / 21600
              ELSE 100 - random() END END,
    CASE WHEN d.kind = 'evac' THEN
         CASE WHEN d.id = %(drain)s AND g.ts > %(now)s - interval '6 hours' THEN 0 ELSE 1 END END,
    CASE WHEN d.kind = 'evac' THEN CASE WHEN d.id = %(lamp)s THEN 0 ELSE 1 END END
FROM (SELECT id, kind, (row_number() OVER (PARTITION BY kind ORDER BY id) - 1) %% 6 AS h
      FROM devices WHERE kind <> 'mcp') d
CROSS JOIN generate_series(%(start)s, %(end)s, %(step)s::interval) AS g(ts)
"""


def _rollup_sql() -> str:
    parts = ", ".join(f"min({r}), max({r}), sum({r}), count({r})" for r in READINGS)
    columns = ", ".join(f"{r}_min, {r}_max, {r}_sum, {r}_n" for r in READINGS)
    return (
        f"INSERT INTO telemetry_rollup_1m (bucket, device_id, samples, {columns}) "
        f"SELECT date_bin('1 minute', ts, timestamptz 'epoch'), device_id, count(*), {parts} "
        "FROM telemetry GROUP BY 1, 2"
    )


def fill_estate(conn: psycopg.Connection[Any], now: datetime, flavour: str) -> Estate:
    """A small, realistic estate: registry, state, telemetry, events, alarms, ingest figures."""
    devices: dict[str, tuple[str, str, str, str, str]] = {}
    with conn.cursor() as cur:
        cur.execute("SELECT setseed(0.6)")
        for site_id, (name, buildings) in SITES.items():
            cur.execute("INSERT INTO sites (id, name) VALUES (%s, %s)", (site_id, name))
            for building in buildings:
                cur.execute("INSERT INTO buildings VALUES (%s, %s)", (site_id, building))
                for floor in FLOORS:
                    cur.execute(
                        "INSERT INTO floors VALUES (%s, %s, %s)", (site_id, building, floor)
                    )
                    for zone, zone_type in ZONES:
                        cur.execute(
                            "INSERT INTO zones VALUES (%s, %s, %s, %s, %s, %s)",
                            (site_id, building, floor, zone, f"{zone_type} {floor}", zone_type),
                        )
                        for kind in KINDS:
                            device_id = f"{site_id}-{building}{floor}-{zone}-{kind}"
                            devices[device_id] = (site_id, building, floor, zone, kind)
        cur.executemany(
            "INSERT INTO devices (id, site_id, building, floor, zone, kind, name, thresholds,"
            " routes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    device_id,
                    *place,
                    f"{place[4]} {place[1]}{place[2]}/{place[3]}",
                    json.dumps(
                        {"residual_current_ma": 500} if device_id == "S1-B1-Z1-electrical" else {}
                    ),
                    json.dumps({"left": "Z1", "right": "Z2"}) if place[4] == "evac" else None,
                )
                for device_id, place in devices.items()
            ],
        )

        fire, warm = "S1-A1-Z1-smoke", "S2-A0-Z2-heat"
        drain, lamp = "S1-A2-Z2-evac", "S2-A1-Z1-evac"
        offline = ("S1-B1-Z2-smoke", "S2-A0-Z1-multi")
        never_seen = "S2-A2-Z2-mcp"
        fire_at = now - timedelta(hours=3)
        start = now - timedelta(hours=RAW_HOURS)
        params = {
            "fire": fire,
            "warm": warm,
            "drain": drain,
            "lamp": lamp,
            "now": now,
            "fire_at": fire_at,
        }
        # Recent history at the detectors' own pace, older days sparser.
        cur.execute(TELEMETRY_SQL, {**params, "start": start, "end": now, "step": "1 minute"})
        cur.execute(
            TELEMETRY_SQL,
            {
                **params,
                "start": now - timedelta(days=LONG_HISTORY_DAYS),
                "end": start - timedelta(minutes=10),
                "step": "10 minutes",
            },
        )
        if flavour == "plain":
            cur.execute(_rollup_sql())

        cur.executemany(
            "INSERT INTO device_state (device_id, last_seen_at, last_ts, last_seq, status, "
            "status_at, on_mains, messages, seq_gaps, duplicates) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    device_id,
                    now - (timedelta(hours=2) if device_id in offline else timedelta(seconds=20)),
                    now - (timedelta(hours=2) if device_id in offline else timedelta(seconds=21)),
                    1000,
                    "offline" if device_id in offline else "online",
                    now - timedelta(hours=2) if device_id in offline else start,
                    (device_id != drain) if place[4] == "evac" else None,
                    1800,
                    3 if device_id == fire else 0,
                    1,
                )
                for device_id, place in devices.items()
                if device_id != never_seen
            ],
        )

        def alarm(
            device_id: str,
            kind: str,
            verdict: str,
            status: str,
            reason: str,
            opened: datetime,
            cleared: datetime | None = None,
        ) -> str:
            site_id, building, floor, zone, _ = devices[device_id]
            row = cur.execute(
                "INSERT INTO alarms (device_id, site_id, building, floor, zone, type, verdict, "
                "status, reason, opened_at, confirmed_at, cleared_at, cleared_by) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    device_id,
                    site_id,
                    building,
                    floor,
                    zone,
                    kind,
                    verdict,
                    status,
                    reason,
                    opened,
                    opened + timedelta(seconds=30) if verdict == "confirmed" else None,
                    cleared,
                    "operator" if cleared else None,
                ),
            ).fetchone()
            assert row is not None
            cur.execute(
                "INSERT INTO alarm_log (alarm_id, at, action, actor) "
                "VALUES (%s, %s, 'opened', 'system')",
                (row[0], opened),
            )
            return str(row[0])

        fire_alarm = alarm(fire, "fire", "confirmed", "acknowledged", "coincidence", fire_at)
        alarm("S1-A1-Z1-multi", "fire", "confirmed", "active", "coincidence", fire_at)
        alarm(
            fire,
            "pre_alarm",
            "confirmed",
            "cleared",
            "obscuration",
            fire_at - timedelta(minutes=5),
            fire_at,
        )
        for hours in (5, 2, 14):
            alarm(
                "S1-A0-Z2-smoke",
                "fire",
                "suppressed",
                "cleared",
                "steam_signature",
                now - timedelta(hours=hours),
                now - timedelta(hours=hours, minutes=-2),
            )
        alarm(
            "S2-A2-Z1-smoke",
            "fire",
            "suppressed",
            "cleared",
            "transient",
            now - timedelta(hours=20),
            now - timedelta(hours=20, minutes=-1),
        )
        alarm(
            "S2-A1-Z2-heat", "fire", "pending", "active", "rate_of_rise", now - timedelta(minutes=2)
        )
        alarm(
            "S1-B2-Z1-electrical",
            "electrical",
            "confirmed",
            "active",
            "residual_current",
            now - timedelta(hours=1),
        )
        alarm(
            "S1-B0-Z1-electrical",
            "electrical",
            "suppressed",
            "cleared",
            "transient",
            now - timedelta(hours=10),
            now - timedelta(hours=10, minutes=-1),
        )
        alarm(warm, "fault", "confirmed", "active", "device_fault", now - timedelta(hours=4))
        alarm(drain, "evac_fault", "confirmed", "active", "battery_low", now - timedelta(hours=1))
        alarm(lamp, "evac_fault", "confirmed", "active", "lamp_fault", now - timedelta(hours=6))
        for device_id in offline:
            alarm(
                device_id,
                "offline",
                "confirmed",
                "active",
                "silent",
                now - timedelta(hours=2) + timedelta(seconds=30),
            )
        alarm(
            "S1-B1-Z1-mcp",
            "fire",
            "confirmed",
            "cleared",
            "call_point",
            now - timedelta(days=3),
            now - timedelta(days=3, hours=-1),
        )

        events: list[tuple[datetime, str, str, str | None]] = [
            (fire_at, fire, "fire_alarm", None),
            (fire_at + timedelta(seconds=20), "S1-A1-Z1-multi", "fire_alarm", None),
            (now - timedelta(days=3), "S1-B1-Z1-mcp", "activated", None),
            (now - timedelta(days=3, hours=-1), "S1-B1-Z1-mcp", "reset", None),
            (now - timedelta(hours=4), warm, "fault", "sensor drift"),
            (now - timedelta(hours=6), lamp, "fault", "lamp"),
        ]
        for device_id, place in devices.items():
            if place[4] == "evac":
                events.append(
                    (
                        now - timedelta(days=1),
                        device_id,
                        "self_test_fail" if device_id == lamp else "self_test_pass",
                        None,
                    )
                )
                if place[:2] == ("S1", "A"):
                    events.append(
                        (fire_at + timedelta(seconds=40), device_id, "emergency_start", None)
                    )
        cur.executemany(
            "INSERT INTO device_events (ts, device_id, seq, received_at, type, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (ts, device_id, i, ts + timedelta(milliseconds=200), kind, detail)
                for i, (ts, device_id, kind, detail) in enumerate(events)
            ],
        )

        commands: list[tuple[datetime, str | None, str, str, str, str, str | None]] = []
        for device_id, place in devices.items():
            if place[4] != "evac" or place[0] != "S1":
                continue
            if place[1] == "A":
                direction = {"0": "left", "1": "off", "2": "right"}[place[2]]
                commands.append(
                    (
                        fire_at + timedelta(seconds=35),
                        fire_alarm,
                        device_id,
                        "S1",
                        "A",
                        "emergency",
                        direction,
                    )
                )
            else:
                old = now - timedelta(days=3)
                commands.append((old, None, device_id, "S1", "B", "emergency", "both"))
                commands.append(
                    (old + timedelta(hours=1), None, device_id, "S1", "B", "normal", None)
                )
        cur.executemany(
            "INSERT INTO linkage_commands (at, alarm_id, device_id, site_id, building, cmd, "
            "direction, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, '{}'::jsonb)",
            commands,
        )

        reasons = ("invalid_json", "unknown_device", "bad_value", "site_mismatch")
        cur.executemany(
            "INSERT INTO rejects (received_at, topic, reason, payload, device_id) "
            "VALUES (%s, %s, %s, %s, %s)",
            [
                (
                    now - timedelta(minutes=3 * i),
                    f"fs/v1/S1/X{i}/telemetry",
                    reasons[i % 4],
                    b"{not json" if i % 4 == 0 else b'{"ts": 1, "v": {"t": "x"}}',
                    f"X{i}",
                )
                for i in range(24)
            ],
        )
        # A call point's alarm from a device nobody registered (the platform
        # dashboard lists it among the fire alarms that raised none).
        cur.execute(
            "INSERT INTO rejects (received_at, topic, reason, payload, device_id, detail) "
            "VALUES (%s, 'fs/v1/S1/MCP9/event', 'unknown_device', %s, 'MCP9', %s)",
            (
                now - timedelta(minutes=2),
                b'{"ts": 1, "seq": 1, "type": "activated"}',
                "device 'MCP9' is not registered",
            ),
        )
        cur.executemany(
            "INSERT INTO reject_counts VALUES (%s, %s)", [(reason, 6) for reason in reasons]
        )

        stats = []
        for instance, restart in (("ingest-1", None), ("ingest-2", now - timedelta(minutes=30))):
            counters = [0] * 6
            at = now - timedelta(hours=2)
            step = 0
            while at <= now:
                if restart and at - timedelta(seconds=5) < restart <= at:
                    counters = [0] * 6
                counters = [
                    counters[0] + 150 + step % 7,
                    counters[1] + 300 + step % 11,
                    counters[2] + step % 2,
                    counters[3] + (step % 40 == 0),
                    counters[4] + (step % 25 == 0),
                    counters[5] + (step % 60 == 0),
                ]
                stats.append(
                    (
                        at,
                        instance,
                        *counters,
                        5 * (step + 1),
                        20.0 + step % 30,
                        step % 50,
                        15.0 + step % 20,
                        True,
                    )
                )
                at += timedelta(seconds=5)
                step += 1
        with cur.copy(
            "COPY ingest_stats (at, instance, messages, readings, events, rejects, duplicates, "
            "seq_gaps, batches, batch_latency_ms, queue_depth, lag_ms, broker_connected) "
            "FROM STDIN"
        ) as copy:
            for row in stats:
                copy.write_row(row)
        if flavour == "plain":  # as ingest leaves it: the newest minutes still noted
            cur.execute(
                "INSERT INTO rollup_pending (bucket) SELECT date_trunc('minute', %s::timestamptz)"
                " - m * interval '1 minute' FROM generate_series(0, 1) m",
                (now,),
            )
        cur.execute("ANALYZE")  # as autovacuum would have: the plans judged are real ones
    conn.commit()
    kinds = {device_id: place[4] for device_id, place in devices.items()}
    showcase = [fire, warm, "S1-A1-Z1-multi", "S1-B1-Z1-mcp", "S1-B2-Z1-electrical", drain]
    return Estate(now=now, devices=kinds, showcase=showcase)


@pytest.fixture(scope="module")
def estate(database_url: str, migration: MigrationReport) -> Estate:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if row[0] not in ("schema_migrations", "firesafe_meta")
        ]
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )
    with psycopg.connect(database_url) as conn:
        estate = fill_estate(conn, now, migration.flavour)
    if migration.flavour == "timescale":
        # Part of the continuous aggregate materialized, the rest real-time.
        with psycopg.connect(database_url, autocommit=True) as conn:
            refresh_rollup(
                conn,
                sql.SQL("CALL refresh_continuous_aggregate('telemetry_1m', NULL, {})").format(
                    sql.Literal(now - timedelta(hours=2))
                ),
            )
    return estate


# --- running a dashboard ---------------------------------------------------------


@dataclass
class Scan:
    relation: str
    root: str
    conditions: str


class Planner:
    """Maps the scans of a query plan to the tables they read."""

    def __init__(self, conn: psycopg.Connection[Any], flavour: str) -> None:
        self.conn = conn
        self.roots: dict[str, str] = {}
        self.predicates: dict[str, str] = {}
        self.time_series = set(TIME_SERIES_TABLES)
        if flavour == "timescale":
            row = conn.execute(
                "SELECT materialization_hypertable_name FROM "
                "timescaledb_information.continuous_aggregates WHERE view_name = 'telemetry_1m'"
            ).fetchone()
            assert row is not None
            self.roots[row[0]] = "telemetry_1m"
            # TimescaleDB drops a time qual from a chunk whose every row satisfies it;
            # keep the quals so that every chunk scan shows its bound, as partitions do.
            conn.execute("SET timescaledb.enable_qual_filtering = off")

    def root(self, relation: str) -> str:
        if relation not in self.roots:
            row = self.conn.execute(
                "SELECT p.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE c.relname = %s LIMIT 1",
                (relation,),
            ).fetchone()
            self.roots[relation] = self.root(row[0]) if row else relation
        return self.roots[relation]

    def predicate(self, index: str) -> str:
        if index not in self.predicates:
            row = self.conn.execute(
                "SELECT coalesce(pg_get_expr(i.indpred, i.indrelid), '') FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s LIMIT 1",
                (index,),
            ).fetchone()
            self.predicates[index] = row[0] if row else ""
        return self.predicates[index]

    def conditions(self, node: Json) -> list[str]:
        out = [
            str(node[key])
            for key in ("Filter", "Index Cond", "Recheck Cond", "Vectorized Filter")
            if key in node
        ]
        if "Index Name" in node:
            out.append(self.predicate(node["Index Name"]))
        # A bitmap heap scan's bound is in its index scans; TimescaleDB's SkipScan
        # (DISTINCT on an index) names the relation, its index scan has the quals.
        if node.get("Node Type") in ("Bitmap Heap Scan", "BitmapAnd", "BitmapOr") or (
            node.get("Custom Plan Provider") == "SkipScan"
        ):
            for child in node.get("Plans", []):
                out.extend(self.conditions(child))
        return out

    def scans(self, query: str) -> list[Scan]:
        plan = self.conn.execute(f"EXPLAIN (FORMAT JSON) {query}").fetchone()
        assert plan is not None
        found: list[Scan] = []

        def visit(node: Json) -> None:
            relation = node.get("Relation Name")
            # TimescaleDB's appends name the hypertable; their chunk scans are judged.
            if relation and node.get("Custom Plan Provider") not in CHUNK_APPENDS:
                root = self.root(relation)
                if root in self.time_series:
                    found.append(Scan(relation, root, " ".join(self.conditions(node))))
            for child in node.get("Plans", []):
                visit(child)

        visit(plan[0][0]["Plan"])
        return found


CHUNK_APPENDS = ("ChunkAppend", "ConstraintAwareAppend")
TIME_BOUND_RE = re.compile(
    r"\b("
    + "|".join(TIME_COLUMNS)
    + r")\s*(>=|<=|>|<)|(>=|<=|>|<)\s*\(?\w*\.?("
    + "|".join(TIME_COLUMNS)
    + r")\b"
)


def scan_is_bounded(scan: Scan) -> bool:
    if TIME_BOUND_RE.search(scan.conditions):
        return True
    # A chunk scan is judged like any other: the Planner keeps TimescaleDB from
    # dropping the time quals that a chunk's own range implies.
    return scan.root == "alarms" and all(part in scan.conditions for part in OPEN_ALARMS)


@dataclass
class Query:
    where: str  # which panel / variable / annotation
    raw: str
    kind: str  # panel type, "variable" or "annotation"
    fmt: str
    min_interval: str | None


@dataclass
class Outcome:
    rows: dict[str, int] = field(default_factory=dict)


class DashboardRunner:
    def __init__(self, conn: psycopg.Connection[Any], flavour: str, datasource: Json) -> None:
        self.conn = conn
        self.flavour = flavour
        self.timescaledb = bool(datasource["jsonData"]["timescaledb"]) and flavour == "timescale"
        self.default_min_interval = datasource["jsonData"].get("timeInterval")
        self.planner = Planner(conn, flavour)

    def expand(self, query: Query, rng: TimeRange, variables: dict[str, Variable]) -> str:
        interval_ms = rng.interval_ms(query.min_interval or self.default_min_interval)
        span_ms = int((rng.end - rng.start).total_seconds() * 1000)
        builtins = {
            "__interval": format_interval(interval_ms),
            "__interval_ms": str(interval_ms),
            "__from": str(int(rng.start.timestamp() * 1000)),
            "__to": str(int(rng.end.timestamp() * 1000)),
            "__range_ms": str(span_ms),
            "__range_s": str(span_ms // 1000),
            "__range": format_interval(span_ms),
        }
        text = interpolate(query.raw, variables, builtins)
        leftover = re.findall(r"\$\{?(?!__)(\w+)", text)
        assert not leftover, f"{query.where}: undefined variables {leftover}"
        return expand_macros(text, rng, timescaledb=self.timescaledb)

    def run(
        self, query: Query, rng: TimeRange, variables: dict[str, Variable]
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        text = self.expand(query, rng, variables)
        try:
            with self.conn.transaction():
                cur = self.conn.execute(text)
                columns = [c.name for c in cur.description or []]
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise AssertionError(f"{query.where}: {exc}\n--- SQL ---\n{text}") from exc
        for scan in self.planner.scans(text):
            assert scan_is_bounded(scan), (
                f"{query.where}: scans {scan.relation} ({scan.root}) with no time bound "
                f"(conditions: {scan.conditions or 'none'})\n--- SQL ---\n{text}"
            )
        return columns, rows

    def resolve(
        self, dashboard: Json, rng: TimeRange, choice: str, overrides: dict[str, str]
    ) -> dict[str, Variable]:
        """Variables in order, each from its query with the ones before it applied."""
        resolved: dict[str, Variable] = {}
        for definition in dashboard["templating"]["list"]:
            name = definition["name"]
            query = Query(f"variable {name}", definition["query"], "variable", "table", None)
            columns, rows = self.run(query, rng, resolved)
            options = self.options(columns, rows)
            value: str | list[str]
            if not options:
                # Only a variable that panels repeat over may be empty (a call
                # point has no readings): the panel is then not drawn at all.
                assert name in repeat_only(dashboard), (
                    f"variable {name} has no options (choice {choice}, {overrides})"
                )
                value = []
            elif name in overrides:
                assert overrides[name] in options, f"{overrides[name]} not an option of {name}"
                value = overrides[name]
            elif choice == "all" and definition.get("includeAll"):
                value = options  # $__all with no custom allValue: every option
            else:
                value = [options[0]] if definition.get("multi") else options[0]
            resolved[name] = Variable(definition, value)
        return resolved

    @staticmethod
    def options(columns: list[str], rows: list[tuple[Any, ...]]) -> list[str]:
        if "__value" in columns:
            index = columns.index("__value")
            assert "__text" in columns, "__value without __text"
        else:
            assert len(columns) == 1, f"variable query returns {columns}; expected one column"
            index = 0
        return [str(row[index]) for row in rows]


def repeat_only(dashboard: Json) -> set[str]:
    """Variables used only by the panels that repeat over them."""
    names = {v["name"] for v in dashboard["templating"]["list"]}
    out = {p["repeat"] for p in all_panels(dashboard) if p.get("repeat")}
    for item, query in queries_of(dashboard):
        used = {n for n in names if re.search(rf"\$\{{?{n}\b", query.raw)}
        out -= used - {item.get("repeat") if item else None}
    for variable in dashboard["templating"]["list"]:
        out -= {n for n in names if re.search(rf"\$\{{?{n}\b", variable["query"])}
    return out


def queries_of(dashboard: Json) -> Iterator[tuple[Json | None, Query]]:
    for item in all_panels(dashboard):
        for tgt in item.get("targets", []):
            yield (
                item,
                Query(
                    f"panel {item['title']!r} {tgt['refId']}",
                    tgt["rawSql"],
                    item["type"],
                    tgt.get("format", "time_series"),
                    item.get("interval"),
                ),
            )
    for anno in dashboard["annotations"]["list"]:
        if anno.get("builtIn"):
            continue
        yield (
            None,
            Query(
                f"annotation {anno['name']!r}",
                anno["target"]["rawSql"],
                "annotation",
                "table",
                None,
            ),
        )


def check_result(query: Query, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if query.kind in TIME_SERIES_PANELS or query.fmt == "time_series":
        assert "time" in columns, f"{query.where}: no time column in {columns}"
        times = [row[columns.index("time")] for row in rows]
        assert None not in times, f"{query.where}: null time"
        assert times == sorted(times), f"{query.where}: time column not sorted"
    if query.kind == "annotation":
        assert {"time", "text"} <= set(columns), f"{query.where}: needs time and text"
        assert set(columns) <= {"time", "timeend", "text", "tags"}, query.where


# Machine codes a person would otherwise read in a translated dashboard.
CODES = {code for codes in VOCABULARIES.values() for code in codes if re.search("[a-z]", code)}


RAW_COLUMNS = {
    "payload",
    "detail",
    "topic",
    "name",
    "device",
    "circuit",
    "instance",
    "cleared by",
    "acknowledged by",  # who: a token name or `system`
}


def check_no_codes(query: Query, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """A translated dashboard shows labels: no cell is (or starts with) a bare code."""
    for row in rows:
        for column, cell in zip(columns, row, strict=True):
            # Raw data (what a device sent, names given by people) stays as it is.
            if isinstance(cell, str) and column not in RAW_COLUMNS:
                words = set(re.split(r"[\s,:()]+", cell))
                assert not words & CODES, f"{query.where}: column {column!r} shows {cell!r}"


DATASOURCE = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))["datasources"][0]


def ranges_for(dashboard: Json, now: datetime) -> list[TimeRange]:
    """The dashboard's default range and a long one (rollup branches)."""
    match = re.fullmatch(r"now-(\d+)([mhd])", dashboard["time"]["from"])
    assert match, dashboard["time"]
    assert dashboard["time"]["to"] == "now", dashboard["time"]
    default = timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[match[2]]: int(match[1])})
    end = now + timedelta(seconds=7.5)  # Grafana's now is not on a minute boundary
    return [TimeRange(end - default, end), TimeRange(end - timedelta(days=7), end)]


def scenarios(dashboard: Json, estate: Estate) -> list[tuple[str, dict[str, str]]]:
    names = {v["name"] for v in dashboard["templating"]["list"]}
    if "device" in names:
        # One run per kind of device: every reading panel gets data somewhere.
        assert {estate.devices[d] for d in estate.showcase} == set(KINDS)
        return [
            ("all", {"site": device_id.split("-")[0], "device": device_id})
            for device_id in estate.showcase
        ] + [("first", {})]
    return [("all", {}), ("first", {})]


# --- the tests ---------------------------------------------------------------------


def test_every_expected_dashboard_exists() -> None:
    uids = [d["uid"] for d in load_dashboards().values()]
    assert len(uids) == len(set(uids)), f"duplicate dashboard uids: {uids}"
    assert set(uids) == EXPECTED_UIDS | {f"{uid}-zh" for uid in EXPECTED_UIDS}
    assert {path.parent.name for path in DASHBOARD_FILES} == set(LANGUAGE_DIRS)


def test_dashboards_are_generated_from_the_script() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered: dict[str, str] = module.render()
    on_disk = {dashboard_name(path): path.read_text(encoding="utf-8") for path in DASHBOARD_FILES}
    assert rendered == on_disk, "run `python grafana/build_dashboards.py` and commit the JSON"


def test_datasource_provisioning() -> None:
    text = DATASOURCE_FILE.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == 1
    assert len(doc["datasources"]) == 1
    ds = doc["datasources"][0]
    assert ds["type"] == DS_TYPE
    assert ds["uid"] == DS_UID
    json_data = ds["jsonData"]
    assert json_data["timescaledb"] is True
    assert isinstance(json_data["postgresVersion"], int)
    assert json_data["postgresVersion"] >= 1000
    assert json_data["sslmode"]
    assert 0 < json_data["maxIdleConns"] <= json_data["maxOpenConns"] <= 50
    assert json_data["connMaxLifetime"] > 0
    parse_interval(json_data["timeInterval"])
    env_ref = re.compile(r"^(\$__env\{\w+\}|\$\{\w+\}|\$\w+)$")
    for value in (ds["url"], ds["user"], json_data["database"], ds["secureJsonData"]["password"]):
        assert env_ref.match(value), f"{value!r} should come from the environment"
    assert "password" not in ds, "password outside secureJsonData"
    assert "password" not in json_data, "password outside secureJsonData"


def test_dashboard_provider() -> None:
    doc = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == 1
    providers = doc["providers"]
    assert [Path(p["options"]["path"]).name for p in providers] == list(LANGUAGE_DIRS)
    assert len({p["folderUid"] for p in providers}) == len(providers)
    for provider in providers:
        assert provider["type"] == "file"
        assert provider["options"]["path"].startswith("/")
        assert provider["allowUiUpdates"] is False
        assert provider["disableDeletion"] is True
        assert provider["folderUid"]


def datasource_refs(node: Any) -> Iterator[Any]:
    for key, value in walk(node):
        if key == "datasource":
            yield value


@pytest.mark.parametrize("name", [dashboard_name(p) for p in DASHBOARD_FILES])
def test_dashboard_structure(name: str) -> None:
    text = (GRAFANA / "dashboards" / name).read_text(encoding="utf-8")
    assert "${DS_" not in text, "export placeholders left in"
    assert "__inputs" not in text, "export placeholders left in"
    dashboard = json.loads(text)
    assert re.fullmatch(r"firesafe-[a-z]+(-zh)?", dashboard["uid"])
    assert len(dashboard["uid"]) <= 40
    assert "firesafe" in dashboard["tags"]
    assert len(dashboard["tags"]) >= 2
    assert dashboard["title"]
    assert dashboard["description"]
    assert dashboard["refresh"] in ("10s", "30s", "1m", "5m")
    assert dashboard["time"]["to"] == "now"
    assert "id" not in dashboard or dashboard["id"] is None

    for ref in datasource_refs(dashboard):
        assert ref in ({"type": DS_TYPE, "uid": DS_UID}, BUILTIN_DS), f"datasource ref {ref}"

    panels = list(all_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for item in panels:
        pos = item["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{item['title']} wider than the grid"
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"{item['title']} overlaps another panel"
        cells |= mine
        assert item["targets"], f"{item['title']} has no query"
        for tgt in item["targets"]:
            assert tgt["rawQuery"] is True
            assert tgt["editorMode"] == "code"
            assert tgt["format"] in ("time_series", "table")

    var_names = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(var_names) == len(set(var_names))
    for variable in dashboard["templating"]["list"]:
        assert variable["type"] == "query"
        assert variable["refresh"] in (1, 2)
        if "$__time" in variable["query"]:
            assert variable["refresh"] == 2, f"{variable['name']} uses the time range"

    for owner, query in queries_of(dashboard):
        check_query_text(query)
        if owner and owner.get("repeat"):
            assert owner["repeat"] in var_names
            repeat_var = next(
                v for v in dashboard["templating"]["list"] if v["name"] == owner["repeat"]
            )
            assert repeat_var["multi"] or repeat_var["includeAll"]


TABLE_REF_RE = re.compile(
    r"\b(?:FROM|JOIN)\s+(" + "|".join(TIME_SERIES_TABLES) + r")\b(?:\s+(?:AS\s+)?(\w+))?",
    re.IGNORECASE,
)
_NOT_ALIASES = {
    "on",
    "where",
    "join",
    "left",
    "right",
    "cross",
    "inner",
    "group",
    "order",
    "window",
    "limit",
    "union",
}


def check_query_text(query: Query) -> None:
    """Static rules, whatever the data: time-bounded scans, grouped sorted time series."""
    text = strip_sql_comments(query.raw)
    refs = TABLE_REF_RE.findall(text)
    for table, alias in refs:
        name = alias if alias and alias.lower() not in _NOT_ALIASES else table
        col = r"(?:" + re.escape(name) + r"\.)?(?:" + "|".join(TIME_COLUMNS) + ")"
        bounded = re.search(r"\$__timeFilter\(\s*" + col + r"\s*\)", text) or re.search(
            col + r"\s*(?:<=|<|>=|>)\s*\$__time(?:From|To)\(\)", text
        )
        open_set = table == "alarms" and all(
            re.search(rf"(?:{re.escape(name)}\.)?{re.escape(part)}", text) for part in OPEN_ALARMS
        )
        assert bounded or open_set, f"{query.where}: {table} {name} read without a time filter"
    if refs and (query.kind in TIME_SERIES_PANELS and query.fmt == "time_series"):
        assert re.search(r"\$__timeGroup(Alias)?\(|time_bucket\(|date_bin\(", text), (
            f"{query.where}: time series not grouped by interval"
        )
    if query.kind in TIME_SERIES_PANELS or query.fmt == "time_series":
        assert re.search(r"ORDER BY\s+(1|time|\"time\")\b", text, re.IGNORECASE), (
            f"{query.where}: time series must be ordered by time"
        )
    if re.search(r"\btelemetry\s", text) and query.kind in TIME_SERIES_PANELS:
        # Raw telemetry only for short ranges; the rollup covers long ones.
        assert "telemetry_1m" in text, f"{query.where}: raw telemetry without a rollup branch"
        assert "$__timeTo()" in text, f"{query.where}: raw telemetry for every range length"


# Panels about TimescaleDB's background jobs: empty on plain PostgreSQL (no jobs).
TIMESCALE_ONLY_PANELS = ("Background jobs (TimescaleDB)", "后台作业 (TimescaleDB)")


@pytest.mark.parametrize("name", [dashboard_name(p) for p in DASHBOARD_FILES])
def test_dashboard_queries_run(name: str, estate: Estate, database_url: str, flavour: str) -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / name).read_text(encoding="utf-8"))
    shown: dict[str, int] = {}
    runs = 0
    with psycopg.connect(database_url) as conn:
        conn.execute("SET statement_timeout = '10s'")
        conn.commit()
        runner = DashboardRunner(conn, flavour, DATASOURCE)
        for rng in ranges_for(dashboard, estate.now):
            for choice, overrides in scenarios(dashboard, estate):
                variables = runner.resolve(dashboard, rng, choice, overrides)
                for item, query in queries_of(dashboard):
                    repeat = item.get("repeat") if item else None
                    values = variables[repeat].value if repeat else [""]
                    for value in values if isinstance(values, list) else [values]:
                        scoped = dict(variables)
                        if repeat:
                            scoped[repeat] = Variable(variables[repeat].definition, value)
                        columns, rows = runner.run(query, rng, scoped)
                        check_result(query, columns, rows)
                        if not name.startswith("en/"):
                            check_no_codes(query, columns, rows)
                        shown[query.where] = shown.get(query.where, 0) + len(rows)
                        runs += 1
    assert runs
    empty = sorted(
        where
        for where, count in shown.items()
        if count == 0
        and not (flavour == "plain" and any(t in where for t in TIMESCALE_ONLY_PANELS))
    )
    assert not empty, f"never showed any data: {empty}"


# --- the checker itself -----------------------------------------------------------


def test_macros_expand_like_grafana() -> None:
    rng = TimeRange(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 6, 0, 0, 250000, tzinfo=UTC)
    )
    assert expand_macros("WHERE $__timeFilter(t.ts)", rng, timescaledb=False) == (
        "WHERE t.ts BETWEEN '2026-01-01T00:00:00Z' AND '2026-01-01T06:00:00.25Z'"
    )
    assert expand_macros("SELECT $__timeGroupAlias(ts, 1m)", rng, timescaledb=False) == (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time"'
    )
    assert expand_macros("SELECT $__timeGroup(ts, 5m), x", rng, timescaledb=True) == (
        "SELECT time_bucket('300.000s',ts) AS \"time\", x"
    )
    assert expand_macros("GROUP BY $__timeGroup(ts, '1h', NULL)", rng, timescaledb=True) == (
        "GROUP BY time_bucket('3600.000s',ts)"
    )
    assert expand_macros("$__timeGroup(ts, 30d)", rng, timescaledb=False) == (
        "floor(extract(epoch from ts)/2.592e+06)*2.592e+06"
    )
    assert (
        expand_macros("$__unixEpochFilter(x) -- $__timeFilter(y)", rng, timescaledb=False)
        == "x >= 1767225600 AND x <= 1767247200 "
    )
    with pytest.raises(ValueError, match="unknown macro"):
        expand_macros("$__nope(x)", rng, timescaledb=False)


def test_variables_quote_like_grafana() -> None:
    single = Variable({"multi": False, "includeAll": False}, "S1")
    multi = Variable({"multi": True, "includeAll": True}, ["a", "O'Neil"])
    scoped = Variable({"multi": True, "includeAll": False}, "x")
    got = interpolate(
        "'$site' IN ($zone) ${zone:csv} [[one]] $other $__timeFilter(ts)",
        {"site": single, "zone": multi, "one": scoped},
        {},
    )
    assert got == "'S1' IN ('a','O''Neil') a,O'Neil 'x' $other $__timeFilter(ts)"
    assert format_interval(round_interval(6 * 3600 * 1000 / 1000)) == "20s"
    assert format_interval(round_interval(7 * 86400 * 1000 / 1000)) == "10m"


def test_unbounded_scans_are_caught(estate: Estate, database_url: str, flavour: str) -> None:
    with psycopg.connect(database_url) as conn:
        planner = Planner(conn, flavour)
        unbounded = planner.scans("SELECT count(*) FROM telemetry WHERE device_id = 'x'")
        assert unbounded
        assert not all(scan_is_bounded(s) for s in unbounded)
        bounded = planner.scans(
            "SELECT count(*) FROM telemetry WHERE ts > now() - interval '1 hour'"
        )
        assert bounded
        assert all(scan_is_bounded(s) for s in bounded)
        open_alarms = planner.scans(
            "SELECT * FROM alarms WHERE status <> 'cleared' AND verdict <> 'suppressed'"
        )
        assert open_alarms
        assert all(scan_is_bounded(s) for s in open_alarms)
    with pytest.raises(AssertionError, match="without a time filter"):
        check_query_text(
            Query(
                "q", "SELECT * FROM device_events e WHERE e.device_id = 'x'", "table", "table", None
            )
        )


def test_drawn_thresholds_are_detections(estate: Estate, database_url: str) -> None:
    """The limits drawn on the dashboards are the detection engine's, by name and default."""
    from detection import params

    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT kind, name, value FROM threshold_defaults").fetchall()
        override = conn.execute(
            "SELECT value, from_registry FROM device_thresholds "
            "WHERE device_id = 'S1-B1-Z1-electrical' AND name = 'residual_current_ma'"
        ).fetchone()
    assert rows
    for kind, name, value in rows:
        assert params.THRESHOLD_DEFAULTS[kind].get(name) == value, (kind, name)
    assert override == (500.0, True)
