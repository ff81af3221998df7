"""The Chinese dashboards: no English label anywhere a person reads, and site-local times."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from firesafe import i18n
from tests.test_grafana import DATASOURCE, DashboardRunner, TimeRange, all_panels, queries_of

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "build_dashboards", ROOT / "grafana" / "build_dashboards.py"
)
assert _spec is not None
assert _spec.loader is not None
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)
ZH = sorted((ROOT / "grafana" / "dashboards" / "zh-CN").glob("*.json"))
EN = ROOT / "grafana" / "dashboards" / "en"
CJK = re.compile(r"[\u4e00-\u9fff]")
# Texts that are not words: template variables, units, names of the standard.
NOT_WORDS = re.compile(r"^\$(\w+|\{\w+(:\w+)?\})$")


def shown_texts(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, text) of everything a person reads outside the data itself."""
    out = [("title", dashboard["title"]), ("description", dashboard["description"])]
    out += [(f"link {i}", link["title"]) for i, link in enumerate(dashboard["links"])]
    out += [(f"variable {v['name']}", v["label"]) for v in dashboard["templating"]["list"]]
    out += [(f"annotation {a['name']}", a["name"]) for a in dashboard["annotations"]["list"][1:]]
    for panel in all_panels(dashboard):
        where = f"panel {panel['title']!r}"
        out += [(where, panel["title"]), (f"{where} description", panel["description"])]
        defaults = panel["fieldConfig"]["defaults"]
        out += [(f"{where} link", link["title"]) for link in defaults.get("links", [])]
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "displayName":
                    out.append(
                        (f"{where} column {override['matcher']['options']!r}", prop["value"])
                    )
    return [(where, text) for where, text in out if text]


@pytest.mark.parametrize("path", ZH, ids=[p.name for p in ZH])
def test_chinese_dashboards_show_no_english_label(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    english = json.loads((EN / path.name).read_text(encoding="utf-8"))
    untranslated = [
        (where, text)
        for where, text in shown_texts(dashboard)
        if not CJK.search(text) and not NOT_WORDS.match(text)
    ]
    assert not untranslated, f"{path.name}: untranslated {untranslated}"
    # Every column a table or chart shows has its Chinese name.
    for panel in all_panels(dashboard):
        named = {
            o["matcher"]["options"]
            for o in panel["fieldConfig"]["overrides"]
            if any(p["id"] == "displayName" for p in o["properties"])
        }
        for tgt in panel["targets"]:
            columns = set(generator.column_names(tgt["rawSql"])) - {"metric", "value", "time"}
            assert columns <= named, f"{path.name} {panel['title']}: {columns - named}"
    # Same dashboards, same panels, in the same places: a translation, not a copy.
    assert dashboard["uid"] == english["uid"] + "-zh"
    assert [p["gridPos"] for p in all_panels(dashboard)] == [
        p["gridPos"] for p in all_panels(english)
    ]
    assert i18n.DEFAULT_LANG not in dashboard["tags"]


def test_site_dashboard_shows_site_local_times(db: str, flavour: str) -> None:
    opened = datetime(2026, 11, 25, 22, 31, 6, tzinfo=UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (id, timezone) VALUES ('S1', 'Asia/Shanghai')")
        conn.execute("INSERT INTO buildings VALUES ('S1', 'B1')")
        conn.execute("INSERT INTO floors VALUES ('S1', 'B1', '1')")
        conn.execute(
            "INSERT INTO zones (site_id, building, floor, zone) VALUES ('S1', 'B1', '1', 'Z1')"
        )
        conn.execute(
            "INSERT INTO devices (id, site_id, building, floor, zone, kind) "
            "VALUES ('S1-SD1', 'S1', 'B1', '1', 'Z1', 'smoke')"
        )
        conn.execute(
            "INSERT INTO alarms (id, device_id, site_id, building, floor, zone, type, verdict, "
            "status, reason, opened_at) VALUES ('A1', 'S1-SD1', 'S1', 'B1', '1', 'Z1', 'fire', "
            "'confirmed', 'active', 'coincidence', %s)",
            (opened,),
        )
    rng = TimeRange(opened - timedelta(hours=1), opened + timedelta(hours=1))
    for lang in ("en", "zh-CN"):
        dashboard = json.loads(
            (ROOT / "grafana" / "dashboards" / lang / "site.json").read_text(encoding="utf-8")
        )
        with psycopg.connect(db) as conn:
            runner = DashboardRunner(conn, flavour, DATASOURCE)
            variables = runner.resolve(dashboard, rng, "all", {})
            assert variables["tz"].value == "Asia/Shanghai"
            (alarms,) = [
                q for item, q in queries_of(dashboard) if item and item["type"] == "table"
                and "alarms a" in q.raw and "opened" in q.raw
            ]  # fmt: skip
            columns, rows = runner.run(alarms, rng, variables)
        (row,) = rows
        # 22:31:06 UTC is 06:31:06 the next morning in Shanghai (UTC+8).
        assert row[columns.index("opened")] == "2026-11-26 06:31:06"
        shown = row[columns.index("type")]
        assert shown == ("fire" if lang == "en" else "火警")


ALL = sorted((ROOT / "grafana" / "dashboards").glob("*/*.json"))


@pytest.mark.parametrize("path", ALL, ids=[f"{p.parent.name}/{p.name}" for p in ALL])
def test_overrides_match_what_the_queries_show(path: Path) -> None:
    """A colour or unit override by name matches a column, or a series the language shows."""
    lang = path.parent.name
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    shown = {
        code if lang == i18n.DEFAULT_LANG else i18n.label(vocabulary, code, lang)
        for vocabulary, codes in i18n.VOCABULARIES.items()
        for code in codes
    }
    for panel in all_panels(dashboard):
        columns = {c for t in panel["targets"] for c in generator.column_names(t["rawSql"])}
        for override in panel["fieldConfig"]["overrides"]:
            matcher = override["matcher"]
            if matcher["id"] == "byName":
                assert matcher["options"] in columns | shown, (panel["title"], matcher)
            elif matcher["id"] == "byRegexp":
                # Some column or label of this language matches it.
                pattern = re.compile(matcher["options"])
                candidates = (
                    columns | shown | {f"{i18n.translate('limit', lang)}: {s}" for s in shown}
                )
                assert any(pattern.fullmatch(c) for c in candidates), (panel["title"], matcher)
