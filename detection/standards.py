"""The standards behind the detection defaults: EN (and the IEC/NFPA/UL texts
the defaults cite) beside the Chinese national standards (GB).

A site follows one of them (`sites.standard`, 'EN' or 'GB'). Its devices'
thresholds are, in order: the registry's own value for the device, else the
site standard's level (`GB_LEVELS` where GB sets a different level), else the
engine's default (`detection.params.THRESHOLD_DEFAULTS`). Pure data and pure
functions; ingest applies them when it loads the registry
(`with_standard_defaults`).

Every value below was looked up in the standard (or its official
explanation); a clause whose level equals today's default says so, and adds
no entry to `GB_LEVELS`. As of this table no GB level differs from the
engine's defaults for the readings the engine judges: the GB texts either
adopt the same European classes (GB 4716-2005 follows EN 54-5:2000), give a
range that contains the default (GB 50116-2013 9.2.3: residual current
300-500 mA), or set requirements the engine does not judge as a level
(GB 51309-2018 rated emergency durations, GB 14287.2-2014 response time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from detection import params as p

STANDARDS: Final = ("EN", "GB")
DEFAULT_STANDARD: Final = "EN"


@dataclass(frozen=True, slots=True)
class Clause:
    """One default and where each family of standards puts it."""

    topic: str  # what the default is about (a threshold name, or a rule)
    default: str  # the engine's value (units included)
    en: str  # the European (or international) reference
    gb: str  # the Chinese national standard, with its own value
    differs: bool  # True when GB sets another level than `default`


CLAUSES: Final = (
    Clause(
        "static_c",
        f"{p.HEAT_STATIC_C:g} °C",
        "EN 54-5:2000 class A1: static response 54-65 °C",
        "GB 4716-2005 (point heat detectors) follows EN 54-5:2000: the same classes, A1 54-65 °C",
        differs=False,
    ),
    Clause(
        "obscuration_alarm",
        f"{p.OBSCURATION_ALARM:g} %/m",
        "EN 54-7 (point smoke detectors): response to test fires TF2-TF5; "
        "drift compensation required",
        "GB 4715-2005 (point smoke detectors): response threshold and test fires "
        "SH1-SH4 of its own; no fixed obscuration level for a platform to apply",
        differs=False,
    ),
    Clause(
        "residual_current_ma",
        f"{p.RESIDUAL_CURRENT_MA:g} mA (settable {p.RESIDUAL_CURRENT_MIN_MA:g}-"
        f"{p.RESIDUAL_CURRENT_MAX_MA:g} mA)",
        "IEC 62020 residual current monitors: 300 mA, the usual fire-protection setting",
        "GB 50116-2013 9.2.3: alarm setting preferably 300-500 mA (natural leakage of "
        "100-200 mA allowed for); GB 14287.2-2014: the detector alarms within 30 s, "
        "its alarm value within 5 % of the setting",
        differs=False,
    ),
    Clause(
        "persist_s",
        f"{p.ELECTRICAL_PERSIST_S:g} s (alarm within {p.ELECTRICAL_PERSIST_MAX_S:g} s)",
        "IEC 62020: inrush and motor starts are not residual current faults",
        "GB 14287.2-2014: alarm within 30 s of the condition (60 s in the 2005 edition)",
        differs=False,
    ),
    Clause(
        "cable_temperature_c",
        f"{p.CABLE_TEMPERATURE_C:g} °C",
        "IEC 60364-5-52: PVC insulation rated for 70 °C continuous",
        "GB 14287.3-2014 (temperature-sensing electrical fire monitoring detectors): "
        "the alarm value is set on the detector for the protected cable; no fixed level",
        differs=False,
    ),
    Clause(
        "battery_low_pct",
        f"{p.BATTERY_LOW_PCT:g} % charge",
        "EN 1838 / EN 50172: rated emergency duration at least 1 h (3 h where people "
        "sleep); recharge within 24 h",
        "GB 51309-2018 3.2.4: on battery at least 1.5 h for civil buildings over 100 m, "
        "1.0 h for medical buildings, elderly care, public buildings over 100,000 m² and "
        "underground buildings over 20,000 m², 0.5 h for other buildings; the platform "
        "judges the charge, not the building's rated duration",
        differs=False,
    ),
    Clause(
        "coincidence",
        f"{p.COINCIDENCE_MS // 1000} s between two detectors of a zone",
        "EN 54-2 type C dependency (two detectors)",
        "GB 50116-2013 4.1.6: automatic linkage of fire equipment on the AND of two "
        "independent alarm devices; the platform's evacuation linkage also follows a "
        "single detector's fire confirmed by persistence (README: Standards)",
        differs=False,
    ),
    Clause(
        "verification_s",
        f"{p.VERIFICATION_S:g} s (at most {p.VERIFICATION_MAX_S:g} s)",
        "NFPA 72 alarm verification: at most 60 s; the pending alarm is shown at once",
        "GB 4717-2005 (fire alarm control units, after ISO 7240-2): the alarm is shown "
        "when the detector signals it; the platform shows it at once as pending",
        differs=False,
    ),
    Clause(
        "evacuation",
        "signs point away from a confirmed fire zone, whole building",
        "EN 50172 / EN 1838: escape route lighting and signs",
        "GB 50116-2013 4.9.2 and GB 51309-2018: after a fire is confirmed, the whole "
        "building's evacuation lighting and signs enter emergency state, starting from "
        "the fire's alarm zone, within 5 s",
        differs=False,
    ),
    Clause(
        "remote_monitoring",
        "alarms, faults and status to the monitoring centre",
        "EN 50136 (alarm transmission)",
        "GB 50440-2007 (urban fire remote monitoring systems) and GB 26875 "
        "(user information transmission units; GB/T 26875.3 protocol: gateways/)",
        differs=False,
    ),
)

# Levels GB sets differently from the engine's defaults: kind -> name -> value.
# Empty while every GB level above equals the default (see CLAUSES). An entry
# here changes what ingest applies to GB sites; the dashboards' view
# `device_thresholds` (migration 0030) would then need the site's standard too.
GB_LEVELS: Final[Mapping[str, Mapping[str, float]]] = {}

LEVELS: Final[Mapping[str, Mapping[str, Mapping[str, float]]]] = {"EN": {}, "GB": GB_LEVELS}


def with_standard_defaults(
    standard: str,
    kind: str,
    overrides: Mapping[str, float],
    levels: Mapping[str, Mapping[str, Mapping[str, float]]] = LEVELS,
) -> dict[str, float]:
    """A device's registry thresholds with its site standard's levels beneath them.

    The registry's own values win; the result goes to the engine as overrides
    (so they are clamped like any override). An unknown standard is EN.
    """
    table = levels.get(standard, levels[DEFAULT_STANDARD])
    return {**table.get(kind, {}), **overrides}
