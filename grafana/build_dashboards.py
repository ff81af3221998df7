"""Writes grafana/dashboards/*.json, the dashboards Grafana provisions.

The JSON files are generated from Python so that every panel follows the
same rules (datasource by uid, `$__timeFilter` on every time-series table,
grouped and sorted time columns, the 1-minute rollup for fleet-wide
telemetry). The dashboards live in grafana/dashboard_kit/: one module per
dashboard (overview.py, site.py, device.py, electrical.py, evacuation.py,
platform.py), written with the helpers of kit.py, whose docstring states
the conventions of the SQL and how panels are translated. Edit the
dashboard's module and run

    python grafana/build_dashboards.py

tests/test_grafana.py fails when the JSON and the modules disagree, and
runs every query against a filled database.

Languages: every dashboard is written once per language of the catalogue
(firesafe/locale, read by firesafe.i18n): grafana/dashboards/en/*.json and
grafana/dashboards/zh-CN/*.json, in separate Grafana folders. Write panels in
English as usual (kit.py translates them). tests/test_i18n_grafana.py fails
when a Chinese dashboard shows English: add the msgid's translation to
firesafe/locale/zh_CN/LC_MESSAGES/messages.po (`make messages` lists what is
missing; firesafe.i18n loads this file by its path and reads `REQUESTED`
after `render()`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
# grafana/ is not a package on sys.path: this script is run by path, and loaded
# by file location (firesafe.i18n, the tests). Its dashboard_kit package is
# imported from beside it, once per process: loading this file again reuses
# it (and its REQUESTED, which every render() fills with the same msgids).
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dashboard_kit import device, electrical, evacuation, overview, platform, site  # noqa: E402
from dashboard_kit.kit import (  # noqa: E402
    LANGUAGES,
    REQUESTED,
    Json,
    column_names,
    language,
)

__all__ = [
    "DASHBOARDS",
    "DASHBOARD_DIR",
    "LANGUAGES",
    "REQUESTED",
    "column_names",
    "main",
    "render",
]

DASHBOARD_DIR = HERE / "dashboards"

DASHBOARDS: dict[str, Callable[[], Json]] = {
    "overview.json": overview.overview,
    "site.json": site.site,
    "device.json": device.device,
    "electrical.json": electrical.electrical,
    "evacuation.json": evacuation.evacuation,
    "platform.json": platform.platform,
}


def render() -> dict[str, str]:
    """`<lang>/<file name>` -> JSON text of every dashboard in every language."""
    out = {}
    for lang in LANGUAGES:
        with language(lang):
            for name, build in DASHBOARDS.items():
                out[f"{lang}/{name}"] = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
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
