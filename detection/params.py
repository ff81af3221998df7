"""Named tunables of the detection engine, with where each value comes from.

Every per-device threshold has a default per kind in `THRESHOLD_DEFAULTS`
(the registry's `thresholds` object overrides them by name; unknown names are
ignored). Constants that are not per device are plain module constants.
"""

from __future__ import annotations

from typing import Final

from firesafe import contract

MS_PER_MIN: Final = 60_000.0

# --- Smoke / multi: obscuration (%/m) -------------------------------------
# Typical factory alarm level of photoelectric point detectors (2-4 %/m,
# inside the UL 268 / EN 54-7 response band); the engine's own level on the
# drift-compensated signal.
OBSCURATION_ALARM: Final = 3.0
# Pre-alarm ("early warning") at half the alarm level, the usual
# two-stage setting of analogue-addressable panels.
OBSCURATION_PRE_ALARM: Final = 1.5
# A pre-alarm clears below this fraction of its level (hysteresis, so noise
# around the level does not open and clear it every sample).
PRE_ALARM_CLEAR_FRACTION: Final = 0.8

# Drift compensation (EN 54-7 requires it to be slow and bounded): the clean-
# air baseline moves once per epoch towards the epoch's *minimum* reading,
# by at most DRIFT_UP per epoch, and only while that minimum is within
# DRIFT_TRACK_BAND of the baseline (near clean air). A fire raises the signal
# beyond the band within minutes, and even inside the band the baseline can
# rise by 0.1 %/m per hour at most, far slower than the slowest EN 54 test
# fire (TF2/TF3 grow by several %/m in 10-30 min); so compensation can mask at
# most DRIFT_TRACK_BAND of a fire. Dust contamination drifts over months.
DRIFT_EPOCH_MS: Final = 3_600_000  # an hour of the device's own event time, from its first reading
DRIFT_UP: Final = 0.1  # %/m per epoch, upward (contamination)
DRIFT_DOWN: Final = 1.0  # %/m per epoch, downward (after cleaning: recover fast, safe side)
DRIFT_TRACK_BAND: Final = 0.5  # %/m above the baseline still counted as clean air
# Compensation limit: beyond half the alarm level the detector would lose
# half its sensitivity; it reports a `fault` (reason drift_limit) instead.
DRIFT_LIMIT: Final = 1.5
# EN 54-7 4.8 b): compensation never raises the response threshold by more
# than a factor 1.6, so a device's limit is at most 0.6 of its alarm level.
DRIFT_LIMIT_MAX_FRACTION: Final = 0.6

# Fast obscuration growth (flaming fires, TF4/TF5 reach tens of %/m within
# 2-3 min): two consecutive sample-to-sample rises at this rate. Smouldering
# fires grow at well under 1 %/m per min; a cooking burst rises once then decays.
FAST_GROWTH_PER_MIN: Final = 4.0

# --- Heat (°C) -------------------------------------------------------------
# A heat detector's reading after a lone sample at its static level, still
# within this of the level: the ceiling stayed hot (a fire at the edge of its
# plume flickers across the level: a recheck's 57.5/58.6 °C was judged
# `transient` again and again), not a blast of hot air or EMI, which fall back
# to the room's temperature. Persistence: confirmed.
HEAT_NEAR_C: Final = 5.0
# EN 54-5 class A1: static response between 54 and 65 °C.
HEAT_STATIC_C: Final = 58.0
# Rate-of-rise element (A1R): 15 °F/min of UL 521, ~8.3 °C/min.
HEAT_RATE_OF_RISE_C_PER_MIN: Final = 8.3
# Heat corroborating a smoke alarm: flaming fires heat the ceiling by
# 8-30 °C/min; a shower or a sunny window by a few °C per quarter hour.
HEAT_RISE_C_PER_MIN: Final = 5.0
# A slower warming of the ceiling still tells smoke from an aerosol on a
# multi-criteria detector once the aerosol has persisted through a whole
# window (EN 54-29: smoke and heat judged together): a slowly growing flaming
# fire warms it by 3-4 °C a minute while its smoke is first at alarm level.
# At the window's end only, never at once (a hob below a kitchen's detector
# warms it too, while it cooks).
MULTI_WARM_C_PER_MIN: Final = 3.0

# EN 54-5 tests heat detectors at up to 30 K/min; a reading that jumped faster
# than this since the previous one is a sensor artefact (EMI), not heat rise
# evidence (it can still open an alarm, which then has to persist).
HEAT_STEP_MAX_C_PER_MIN: Final = 60.0

# --- CO (ppm) and humidity (%RH), multi-criteria ---------------------------
# Clean indoor air is below ~10 ppm; smouldering test fires (TF2/TF3) give
# tens to hundreds of ppm. A CO level or rise corroborates a smoke alarm.
CO_PPM: Final = 30.0
CO_RISE_PPM_PER_MIN: Final = 10.0
# "CO above clean air": indoor air without combustion stays below ~10 ppm
# (WHO indoor guideline 10 mg/m3 over 8 h is ~9 ppm; a gas hob adds a few ppm
# near the cooker), while smouldering test fires (TF2/TF3) put tens of ppm
# in the air by the time their smoke reaches alarm level. On a multi-criteria
# detector it is the independent (chemical) evidence that an aerosol is smoke.
CO_CLEAN_AIR_PPM: Final = 10.0
# A multi-criteria detector whose optical channel alone is in alarm (no CO
# above clean air, no heat rise: the aerosol-only signature of cooking fumes
# or dust) confirms by persistence only at a dense level: 20 %/m is 0.97 dB/m,
# inside the EN 54-7 response range (test fires must be detected by m = 2
# dB/m). Between the thick level (10 %/m, 0.46 dB/m) and it, an aerosol with no
# independent evidence gets one more verification window (never past
# VERIFICATION_MAX_S in all) to bring heat or CO: a flaming fire (TF4/TF5)
# heats the ceiling within a minute, a smouldering one (TF2/TF3) makes CO,
# while cooking fumes and dust bring neither and are suppressed. Measured on
# held-out seeds with 20 %/m and no extension: three fires whose smoke came
# before their heat or CO were first suppressed, so the extension keeps them
# pending instead (README "Quality").
MULTI_AEROSOL_ONLY_ALARM: Final = 20.0
MULTI_AEROSOL_THICK: Final = 10.0
# Steam: humidity jumping by >= 10 %RH per minute, or near condensation.
STEAM_RH_RISE_PER_MIN: Final = 10.0
STEAM_RH: Final = 95.0
# A steam signature seen this long before an alarm opened still counts
# (humidity usually jumps before the droplets reach the smoke chamber).
STEAM_MEMORY_MS: Final = 300_000

# --- Verification (false-alarm filtering) ----------------------------------
# NFPA 72 alarm verification: the window must not exceed 60 s.
VERIFICATION_S: Final = 30.0
VERIFICATION_MAX_S: Final = 60.0
VERIFICATION_MIN_S: Final = 5.0
# Alarm verification's confirmation period (UL 864; the panels' usual 60 s):
# a smoke detector that alarms again this soon after its verification window
# ended in `transient` or `aerosol_decay` is confirmed at once. A smouldering
# fire's smoke in a draught reaches the head in puffs, crossing the level and
# falling back for minutes; a single puff, spray or insect visit does not come
# back within a minute. Smoke-only detectors: a multi-criteria detector's
# other channels judge its aerosol (CO from a smouldering fire).
REVERIFY_S: Final = 60.0
# Smoke arriving in puffs: a smoke-only detector whose signal crossed its
# pre-alarm level afresh at least PUFFS_MIN times in the PUFFS_LOOKBACK_S before
# an alarm opened (leaving out the PUFFS_LEAD_S just before it, the rise of this
# alarm's own signal) is not judged a transient at the window's end: smoke
# has been reaching it for minutes in puffs (a smouldering fire's weak plume
# carried by room air). An insect, EMI, a spray or a burst of cooking fumes
# comes out of clean air.
PUFFS_LOOKBACK_S: Final = 300.0
PUFFS_LEAD_S: Final = 30.0
PUFFS_MIN: Final = 2
# Clean air on the drift-compensated signal: what drift compensation itself
# still counts as clean (DRIFT_TRACK_BAND). A pre-alarm that clears straight
# into it (from pre-alarm level or above to clean air within one reading) left
# the chamber empty at once: an insect leaving, a spike ending. Smoke arriving
# in puffs leaves a haze between them, and a spent aerosol thins out over
# several readings. Alarms of a smoke-only detector separated by such a clear
# are separate visits: neither `reverified` nor `smoke_puffs`.
CLEAN_AIR_OBS: Final = DRIFT_TRACK_BAND
# One or two samples above the level, then back to normal: an insect or EMI.
SPIKE_MAX_SAMPLES: Final = 2
# Two detectors of a zone count together when their alarm-level samples are
# at most this far apart (two-detector dependency, EN 54-2 type C spirit).
COINCIDENCE_MS: Final = 60_000
# A window closes on the device's own clock (its next reading or event at or
# after the deadline). A device that stopped sending is judged on arrival
# time, as supervision judges it (contract section 6): its window resolves
# once nothing has arrived from it for SILENT_AFTER_INTERVALS x its interval
# past the moment its deadline would have arrived. A device whose data are
# merely late (a lagging connection, a gateway backlog) keeps arriving, so it
# is never taken for silent; other devices' event time never closes a window.
SILENT_AFTER_INTERVALS: Final = contract.OFFLINE_AFTER_INTERVALS
# Detectors of a zone are shown to the alarm machine in event-time order, up
# to the oldest newest reading of the zone's live detectors; one further
# behind the zone's most advanced detector than this holds nothing back (a
# clock set minutes or hours behind would otherwise delay every verdict of
# its zone by as much). Lags up to this are judged exactly as the sorted
# stream; a zone's verdicts wait at most this long for a lagging neighbour.
ZONE_HOLD_MAX_MS: Final = 300_000
# A live detector holds its zone at its newest ts only while data of it can
# still be on the way: for as long as its own lag (its last arrival minus its
# newest ts) plus this. Past that its clock moves on with the arrival clock,
# so a detector reporting every few minutes (a battery heat detector's
# heartbeat) does not hold its neighbours' alarms for minutes: with its lag
# steady, whatever it sends later is still shown in order. This covers the
# jitter of a connection's lag (one falling behind grows it by seconds per
# reporting period) and ingest's own pauses; a regular 10 s reporter is held
# for exactly as before.
ZONE_TRANSIT_SLACK_MS: Final = 10_000
# The same for a device that reports on change only (REPORTS_ON_CHANGE_MS: a
# fire panel's points): its events come in order through its transmission
# device's one connection, time labels to the second, so only that second and
# the hop to ingest can be on the way. A panel's fire next to a quiet point is
# shown after this, not after ZONE_TRANSIT_SLACK_MS.
ON_CHANGE_TRANSIT_SLACK_MS: Final = 2_000

# --- Event-time quarantine ----------------------------------------------------
# Detection samples a device's stream at most once per this much of its own
# clock: the first reading of each such slot is fed, the rest are stored only.
# No fire detector samples faster (its sensing cycle is seconds), and
# a stream dense in event time (a backlog dated 1 ms apart) would otherwise
# cost one detection step per reading of the one device, holding every other
# device's batch behind it (an outside check: 14 min for another site's event).
DETECTION_SLOT_MS: Final = 250
# A reading dated more than this ahead of both the device's own
# newest reading and the arrival clock is quarantined: stored by ingest, kept
# out of detection and of every clock, counted per device. NTP-synchronised
# devices are within seconds, and a clock really set ahead is accepted after
# SKEW_ACCEPT_READINGS (below) and remembered, so a slow reporter with such a
# clock is not quarantined again. Accepted, a reading ahead makes every later
# reading older than it late, kept out of detection, so this bounds how long
# one glitch can blind a detector: an outside check's one reading 5 min ahead
# blinded one for 5 min when this was 10 min, a recheck's 1.5 min ahead
# delayed a fire by 72 s when it was 2 min. Now at most a verification window.
FUTURE_TOLERANCE_MS: Final = 30_000
# An event dated further ahead is not dropped but taken at the arrival clock
# (Engine._events).
# A clock that stepped back: readings (or events) this far behind the device's
# newest (see _clock_steps_back, and late fire alarms below).
CLOCK_STEP_MS: Final = 10 * 60_000
# A late `fire_alarm` event dated this far behind its device's newest reading
# is taken for a clock reset and processed at that newest time; one less far
# behind is judged against the device's readings at its own time (a day: far
# beyond any backlog, so the order of a reading and an event inside one batch,
# which the engine does not see, never decides).
EVENT_CLOCK_RESET_MS: Final = 24 * 3_600_000
# A clock that is really set ahead (not one glitch) reports consistently: after
# this many consecutive quarantined readings whose offsets to the arrival clock
# agree within SKEW_AGREE_MS, its readings are accepted (a skewed device is
# not blinded; contract: readings are never rejected for their ts alone).
SKEW_ACCEPT_READINGS: Final = 3
SKEW_AGREE_MS: Final = 60_000

# --- Rates: event-time look-back -------------------------------------------
# A rate is taken against the oldest of the device's last LOOKBACK_SAMPLES
# samples that is at most LOOKBACK_MS old, and only over >= RATE_MIN_SPAN_MS
# (shorter spans turn sensor noise into big rates: 0.5 °C of noise over
# 10 s reads as 3 °C/min). 8 samples cover the
# minute at the default 10 s interval.
LOOKBACK_SAMPLES: Final = 8
LOOKBACK_MS: Final = 60_000
RATE_MIN_SPAN_MS: Final = 20_000

# --- Electrical (residual current mA, cable °C) ----------------------------
# IEC 62020 RCMs: 300 mA is the usual fire-protection setting; the brief
# allows 20-1000 mA.
RESIDUAL_CURRENT_MA: Final = 300.0
RESIDUAL_CURRENT_MIN_MA: Final = 20.0
RESIDUAL_CURRENT_MAX_MA: Final = 1000.0
# PVC insulation is rated for 70 °C continuous (IEC 60364-5-52).
CABLE_TEMPERATURE_C: Final = 70.0
# The condition must persist this long (motor starts and inrush last well
# under 10 s); with 10 s samples that is three samples, inside the 30 s
# "alarm within 30 s of a sustained condition".
ELECTRICAL_PERSIST_S: Final = 20.0
ELECTRICAL_PERSIST_MAX_S: Final = 30.0
# A pending condition is gone once its readings stayed under both limits this
# long (two readings at the usual 5 s): an intermittent fault (a tracking or
# arcing earth fault, its leakage over and under the setting from one reading
# to the next) is one condition that persists, not a series of transients (the
# sixth outside check: 250/450 mA alternating for 10 min, never confirmed, 60
# alarms opened and suppressed). A motor start's inrush is over in one reading.
ELECTRICAL_CLEAR_S: Final = 10.0
# A monitor's reading after a lone sample over a limit, still near it (the
# leakage at this fraction of its setting, the cable within CABLE_NEAR_C of
# its limit): the condition hovers at the setting (a recheck's 310/290 mA
# earth fault was judged `transient` every few minutes), not an inrush, which
# falls back to normal at once. It persists.
ELECTRICAL_NEAR_FRACTION: Final = 0.8
CABLE_NEAR_C: Final = 5.0
# A condition back within this many of the monitor's reporting intervals after
# one was judged `transient` is the same intermittent fault, confirmed at once:
# a monitor reporting every 30-60 s sees a tracking fault's leakage over the
# setting on one reading in two, three or four, each a lone sample gone on the
# next (a recheck: one in three on a 60 s monitor, never confirmed with a
# minute's memory), while a motor start's inrush is over in one reading and a
# retried start on a 10 s monitor comes back after a minute.
ELECTRICAL_RECUR_INTERVALS: Final = 3
# ... unless the transient was a motor's start: its one reading over the limit
# carried a load current at least this many times the next reading's (inrush
# runs at 5-8 times the running current; a recheck's VFD restarted every one
# to four minutes on a 30 or 60 s monitor was confirmed as a recurring fault).
# An earth fault leaks whatever the load.
INRUSH_CURRENT_RATIO: Final = 2.0

# --- Evac (emergency lighting, EN 50172 / EN 62034) ------------------------
# Below this charge the rated emergency duration is no longer assured.
BATTERY_LOW_PCT: Final = 30.0
BATTERY_CLEAR_MARGIN_PCT: Final = 5.0  # cleared at low + margin (hysteresis)

# An emergency light running on battery (mains lost) discharges by design:
# a low charge then is operation, not a fault. After mains returns it must
# recharge to its rated duration within 24 h (EN 60598-2-22 clause 22.6;
# EN 50171 asks the same of central battery systems), so a low charge is a
# fault only that long after the last reading on battery.
EVAC_RECHARGE_GRACE_MS: Final = 24 * 3_600_000

# On battery (mains lost) the unit is the escape route's light: it is
# `battery_depleting` once its charge falls below `battery_low_pct` or the
# autonomy projected from its discharge rate (elapsed on battery + charge left
# / rate) falls short of its rated duration. GB 51309-2018 3.2.4 sets the
# rated duration per building: >= 1.5 h above 100 m, >= 1.0 h for medical
# buildings, elderly care, public buildings > 100,000 m2 and underground
# buildings > 20,000 m2, >= 0.5 h otherwise. The default is the strictest
# (90 min): a unit registered without its rating is never under-checked; a
# site registers 30 or 60 per device (`thresholds.rated_duration_min`).
RATED_DURATION_MIN: Final = 90.0
RATED_DURATION_LIMITS: Final = (30.0, 180.0)
# The rate needs this much discharge before it is trusted (a monthly function
# test lasts 30-120 s; charge estimates jitter by a tenth of a percent).
DISCHARGE_MIN_SPAN_MS: Final = 5 * 60_000

THRESHOLD_DEFAULTS: Final[dict[str, dict[str, float]]] = {
    "smoke": {
        "obscuration_alarm": OBSCURATION_ALARM,
        "obscuration_pre_alarm": OBSCURATION_PRE_ALARM,
        "drift_limit": DRIFT_LIMIT,
        "fast_growth_per_min": FAST_GROWTH_PER_MIN,
        "heat_rise_c_per_min": HEAT_RISE_C_PER_MIN,
        "verification_s": VERIFICATION_S,
    },
    "heat": {
        "static_c": HEAT_STATIC_C,
        "rate_of_rise_c_per_min": HEAT_RATE_OF_RISE_C_PER_MIN,
        "heat_rise_c_per_min": HEAT_RISE_C_PER_MIN,
        "verification_s": VERIFICATION_S,
    },
    "multi": {
        "obscuration_alarm": OBSCURATION_ALARM,
        "obscuration_pre_alarm": OBSCURATION_PRE_ALARM,
        "drift_limit": DRIFT_LIMIT,
        "fast_growth_per_min": FAST_GROWTH_PER_MIN,
        "static_c": HEAT_STATIC_C,
        "rate_of_rise_c_per_min": HEAT_RATE_OF_RISE_C_PER_MIN,
        "heat_rise_c_per_min": HEAT_RISE_C_PER_MIN,
        "co_ppm": CO_PPM,
        "co_rise_ppm_per_min": CO_RISE_PPM_PER_MIN,
        "steam_rh_rise_per_min": STEAM_RH_RISE_PER_MIN,
        "steam_rh": STEAM_RH,
        "verification_s": VERIFICATION_S,
    },
    "mcp": {},
    "electrical": {
        "residual_current_ma": RESIDUAL_CURRENT_MA,
        "cable_temperature_c": CABLE_TEMPERATURE_C,
        "persist_s": ELECTRICAL_PERSIST_S,
        "verification_s": VERIFICATION_S,
    },
    "evac": {
        "battery_low_pct": BATTERY_LOW_PCT,
        "rated_duration_min": RATED_DURATION_MIN,
    },
}
assert set(THRESHOLD_DEFAULTS) == set(contract.KINDS)

# Clamps applied to overrides (name -> (lo, hi)).
# A threshold outside its range would no longer make a fire detector of the
# device (an alarm level of 1e308 %/m never alarms) or would alarm on clean air.
THRESHOLD_LIMITS: Final[dict[str, tuple[float, float]]] = {
    "residual_current_ma": (RESIDUAL_CURRENT_MIN_MA, RESIDUAL_CURRENT_MAX_MA),
    "verification_s": (VERIFICATION_MIN_S, VERIFICATION_MAX_S),
    "persist_s": (0.0, ELECTRICAL_PERSIST_MAX_S),
    "rated_duration_min": RATED_DURATION_LIMITS,
    # EN 54-7 test fires end at m = 2 dB/m (about 37 %/m): a point detector must
    # alarm well before; 20 %/m is the least sensitive setting kept.
    "obscuration_alarm": (0.5, 20.0),
    "obscuration_pre_alarm": (0.1, 20.0),
    "fast_growth_per_min": (0.5, 60.0),
    # EN 54-5 / GB 4716 classes A1 (static 54-65 °C) to G (154-170 °C); class R
    # rate-of-rise tests at 3-30 °C/min.
    "static_c": (40.0, 160.0),
    "rate_of_rise_c_per_min": (3.0, 30.0),
    "heat_rise_c_per_min": (1.0, 30.0),
    "co_ppm": (5.0, 500.0),
    "co_rise_ppm_per_min": (0.5, 100.0),
    "steam_rh_rise_per_min": (1.0, 50.0),
    "steam_rh": (50.0, 100.0),
    # GB 14287.4 temperature-type electrical fire detectors: 55-140 °C settings.
    "cable_temperature_c": (45.0, 140.0),
    "battery_low_pct": (5.0, 80.0),
}

# Every threshold name, in a fixed order (the engine keeps one array each).
THRESHOLD_NAMES: Final = tuple(sorted({n for d in THRESHOLD_DEFAULTS.values() for n in d}))

# A device whose reporting interval is at least this reports on change only
# (GB/T 26875 panel points: 366 days): its zone does not wait for readings from
# it, its newest event is as far as its clock has gone.
REPORTS_ON_CHANGE_MS: Final = 86_400_000
