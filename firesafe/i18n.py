"""Languages: one catalogue (gettext `.po` files read with Babel), one lookup.

Every text a person reads (API errors and labels, dashboards, CLI and
conformance output) goes through `translate`; machine codes (alarm types,
verdicts, reasons, ...) never change, their human labels come from `label`.

- `firesafe/locale/<lang>/LC_MESSAGES/messages.po` is the catalogue. msgids
  are the English text; labels of machine codes use the code as msgid and
  the vocabulary as msgctxt (e.g. msgctxt "alarm_type", msgid "pre_alarm"),
  so English has a catalogue of labels too.
- The `.po` files are compiled in memory on first use (Babel's `write_mo`
  into `gettext.GNUTranslations`), so a plain `pip install` (editable or
  not, or the Docker image) needs no build step and ships no binary `.mo`.
- Maintainers: `make messages` extracts msgids into `messages.pot` and
  updates the `.po` files; tests/test_i18n.py fails when a msgid lacks its
  Chinese translation.

Pure: no environment reads here; the CLI passes `LANG`/`LC_ALL` in.
"""

from __future__ import annotations

import gettext
import importlib.util
import io
import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Final
from zoneinfo import ZoneInfo

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from firesafe import contract

DOMAIN: Final = "messages"
DEFAULT_LANG: Final = "en"
# Public language tags (BCP 47) and the gettext directory of each.
LANGUAGES: Final = ("en", "zh-CN")
_LOCALE_DIRS: Final = {"en": "en", "zh-CN": "zh_CN"}

# Tags a client or a shell may send for each supported language. Chinese
# without a region, or with Hans/CN/SG, reads Simplified Chinese; Traditional
# (Hant, TW, HK, MO) is not offered and falls through to the next choice.
_ALIASES: Final = {
    "en": "en",
    "zh": "zh-CN",
    "zh-cn": "zh-CN",
    "zh-hans": "zh-CN",
    "zh-hans-cn": "zh-CN",
    "zh-sg": "zh-CN",
    "zh-hans-sg": "zh-CN",
}

# Reasons an alarm carries (detection.machine, ingest supervision): the
# vocabulary of `reason`, labelled in every language.
ALARM_REASONS: Final = (
    "call_point",
    "coincidence",
    "combined",
    "co_rise",
    "fast_growth",
    "rate_of_rise",
    "static_heat",
    "obscuration",
    "device_alarm",
    "restored",
    "steam_signature",
    "transient",
    "aerosol_decay",
    "aerosol_signature",
    "reverified",
    "smoke_puffs",
    "residual_current",
    "cable_overheat",
    "device_fault",
    "drift_limit",
    "lamp_failure",
    "battery_low",
    "battery_depleting",
    "self_test_fail",
    "restore",
    "condition_gone",
    "silent",
    "last_will",
    "back_online",
    # A flood grouped under one alarm (ingest/floods.py)
    "site_silent",
    "gateway_silent",
    # GB/T 26875.3 panels and operator verification (docs/contract-extension.md)
    "panel_alarm",
    "panel_test",
    "panel_test_ended",
    "panel_reset",
    "operator",
)
CONNECTIVITY: Final = ("online", "offline", "silent", "never seen")
# Per-device threshold names (detection.params.THRESHOLD_NAMES; a test keeps them equal).
THRESHOLDS: Final = (
    "battery_low_pct",
    "cable_temperature_c",
    "co_ppm",
    "co_rise_ppm_per_min",
    "drift_limit",
    "fast_growth_per_min",
    "heat_rise_c_per_min",
    "obscuration_alarm",
    "obscuration_pre_alarm",
    "persist_s",
    "rate_of_rise_c_per_min",
    "rated_duration_min",
    "residual_current_ma",
    "static_c",
    "steam_rh",
    "steam_rh_rise_per_min",
    "verification_s",
)
# `firesafe conformance`: its rules (device_sim.conformance.RULES) and verdicts.
CONFORMANCE_RULES: Final = (
    "topic_shape",
    "payload_schema",
    "finite_numbers",
    "ts_sanity",
    "seq",
    "interval",
    "status_retained",
    "last_will",
    "gateway_batch",
    "qos",
)
# `firesafe conformance --gb26875` (device_sim.gb26875_conformance.RULES).
GB26875_CONFORMANCE_RULES: Final = (
    "framing",
    "checksum",
    "version",
    "command",
    "serial_numbers",
    "resend",
    "time_labels",
    "heartbeats",
    "application_data",
    "descriptions",
)
CONFORMANCE_STATUSES: Final = ("pass", "fail", "skip")
# Linkage commands to evac devices (contract section 2).
COMMANDS: Final = ("emergency", "normal")
DIRECTIONS: Final = ("left", "right", "both", "off")
STANDARDS: Final = ("EN", "GB")

# Every labelled vocabulary: msgctxt -> its codes.
VOCABULARIES: Final[Mapping[str, tuple[str, ...]]] = {
    "alarm_type": contract.ALARM_TYPES,
    "verdict": contract.VERDICTS,
    "status": contract.STATUSES,
    "reason": ALARM_REASONS,
    "kind": contract.ALL_KINDS,
    "reading": contract.READINGS,
    "event": contract.EVENT_TYPES,
    "reject_reason": contract.REJECT_REASONS,
    "role": contract.ROLES,
    "connectivity": CONNECTIVITY,
    "standard": STANDARDS,
    "threshold": THRESHOLDS,
    "command": COMMANDS,
    "direction": DIRECTIONS,
    "conformance_rule": CONFORMANCE_RULES + GB26875_CONFORMANCE_RULES,
    "conformance_status": CONFORMANCE_STATUSES,
}


def normalize(tag: str | None) -> str | None:
    """A supported language for a tag such as `zh_CN.UTF-8`, `zh-Hans` or `en-GB`."""
    if not tag:
        return None
    t = tag.strip().split(".", 1)[0].split("@", 1)[0].replace("_", "-").lower()
    if not t or t in ("c", "posix", "*"):
        return None
    if t in _ALIASES:
        return _ALIASES[t]
    primary = t.split("-", 1)[0]
    if primary == "en":
        return "en"
    if primary == "zh" and not re.search(r"-(hant|tw|hk|mo)\b", t):
        return "zh-CN"
    return None


def negotiate_accept_language(header: str | None, default: str = DEFAULT_LANG) -> str:
    """The best supported language of an HTTP `Accept-Language` header (RFC 9110 q-values)."""
    if not header:
        return default
    choices: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        lang = normalize(tag)
        if lang is not None:
            choices.append((-q, i, lang))
    return min(choices)[2] if choices else default


def from_environment(
    env: Mapping[str, str], flag: str | None = None, default: str = DEFAULT_LANG
) -> str:
    """The CLI's language: `--lang`, then LC_ALL, LC_MESSAGES, LANG (POSIX precedence)."""
    if flag:
        lang = normalize(flag)
        if lang is None:
            raise ValueError(f"unsupported language {flag!r} (use one of {', '.join(LANGUAGES)})")
        return lang
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            # The first variable set decides, even if it names an unsupported locale.
            return normalize(value) or default
    return default


@cache
def _translations(lang: str) -> gettext.NullTranslations:
    directory = _LOCALE_DIRS.get(lang)
    if directory is None:
        return gettext.NullTranslations()
    path = resources.files("firesafe") / "locale" / directory / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as f:
        catalog = read_po(f, locale=directory)
    buf = io.BytesIO()
    # Fuzzy entries are guesses waiting for review: never shown.
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def supported(lang: str | None) -> str:
    """`lang` if supported (after normalising), else the default language."""
    return normalize(lang) or DEFAULT_LANG


def translate(msgid: str, lang: str | None = DEFAULT_LANG, /, **params: object) -> str:
    """`msgid` (English text) in `lang`, with `{name}` placeholders filled from `params`."""
    text = _translations(supported(lang)).gettext(msgid)
    return text.format(**params) if params else text


# Label lookups sit on hot list endpoints (four per alarm): remember them.
LABEL_CACHE_SIZE: Final = 8192


@lru_cache(maxsize=LABEL_CACHE_SIZE)
def label(vocabulary: str, code: str, lang: str | None = DEFAULT_LANG) -> str:
    """The human label of a machine code (`label("alarm_type", "fire", "zh-CN")` -> 火警).

    An unknown code is shown as itself: a label never hides what the machine said.
    """
    text = _translations(supported(lang)).pgettext(vocabulary, code)
    return text


def labels(lang: str | None = DEFAULT_LANG) -> dict[str, dict[str, str]]:
    """Every vocabulary with the labels of all its codes, in `lang`."""
    return {
        vocabulary: {code: label(vocabulary, code, lang) for code in codes}
        for vocabulary, codes in VOCABULARIES.items()
    }


def local_time(moment: datetime, timezone: str) -> str:
    """`moment` as a site's wall-clock time with its UTC offset (notifications, reports).

    `timezone` is the site's IANA zone (sites.timezone); the API itself keeps UTC.
    """
    local = moment.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M:%S %z")


def N_(msgid: str) -> str:
    """Mark a string for extraction without translating it here."""
    return msgid


# --- maintainers: `make messages` ---------------------------------------------

# Where person-facing text lives, and the calls that mark it.
SOURCE_DIRS: Final = ("firesafe", "api", "device_sim", "detection", "grafana")
KEYWORDS: Final = {"_": None, "N_": None, "translate": None, "gettext": None}


def extract(root: Path) -> Catalog:
    """Every msgid of the sources under `root`, plus every vocabulary's codes (msgctxt)."""
    catalog = Catalog(project="firesafe", charset="utf-8")
    for directory in SOURCE_DIRS:
        found = extract_from_dir(
            root / directory,
            method_map=[("**.py", "python")],
            keywords=KEYWORDS,
            comment_tags=("TRANSLATORS:",),
        )
        for filename, lineno, message, comments, context in found:
            path = f"{directory}/{filename}"
            catalog.add(
                message, locations=[(path, lineno)], auto_comments=comments, context=context
            )
    for vocabulary, codes in VOCABULARIES.items():
        for code in codes:
            catalog.add(code, context=vocabulary)
    # The dashboard generator translates what it is given (titles, column names):
    # its msgids are what it asks for while rendering every dashboard.
    generator = root / "grafana" / "build_dashboards.py"
    if generator.exists():
        spec = importlib.util.spec_from_file_location("build_dashboards", generator)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.render()
        for msgid in sorted(module.REQUESTED):
            catalog.add(msgid, locations=[("grafana/build_dashboards.py", 0)])
    return catalog


def update_catalogues(root: Path) -> list[str]:
    """Write messages.pot, merge it into every .po; return the msgids left to translate."""
    from babel.messages.pofile import write_po

    template = extract(root)
    locale_dir = root / "firesafe" / "locale"
    with (locale_dir / f"{DOMAIN}.pot").open("wb") as f:
        write_po(f, template, omit_header=True, no_location=True, sort_output=True, width=100)
    missing: list[str] = []
    for lang, directory in _LOCALE_DIRS.items():
        path = locale_dir / directory / "LC_MESSAGES" / f"{DOMAIN}.po"
        with path.open("rb") as f:
            catalog = read_po(f, locale=directory)
        # Keep the header as it is: an unchanged catalogue gives an unchanged file.
        template.creation_date = catalog.creation_date
        catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
        catalog.fuzzy = False
        with path.open("wb") as f:
            write_po(
                f,
                catalog,
                no_location=True,
                sort_output=True,
                ignore_obsolete=True,
                width=100,
            )
        for message in catalog:
            if message.id and not message.string and (lang != "en" or message.context):
                missing.append(f"{lang}: {message.context or ''} {message.id!r}".strip())
    return missing


if __name__ == "__main__":
    import sys

    left = update_catalogues(Path(__file__).resolve().parent.parent)
    for line in left:
        print("untranslated:", line)
    sys.exit(1 if left else 0)
