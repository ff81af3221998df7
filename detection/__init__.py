"""Pure, vectorised fire-safety detection (issue 3). No I/O, no wall clock, no environment.

Ingest calls it between decode and write::

    engine = Engine(capacity)
    engine.configure(slots, kinds, zones, thresholds, intervals_ms)  # registry
    changes = engine.process(Readings(...), Events(...), arrival_ms)  # per batch
    changes += engine.advance(now_ms)                   # arrival time: silent devices
    engine.clear(slot, "fire")                          # a person cleared a latched alarm
    engine.restore_alarm(slot, type, verdict, opened_ms[, reason])  # at start-up

Modules: `params` (every tunable, `THRESHOLD_DEFAULTS` per kind for the
OpenAPI docs), `kernel` (numpy kernels, condition bits), `machine` (the alarm
state machine and its rules, documented there), `engine` (the stateful
wrapper), `linkage` (exit-sign directions).

Event time only: windows, durations and rates use the devices' `ts`; the
same stream cut into batches differently, or replayed faster, gives the same
transitions (property-tested against a plain-Python reference).

Lateness policy (contract section 6): per device, rows are taken in arrival
order (the row order of each batch, batches in call order). A reading feeds
detection only if its ts is newer than every reading of that device that
arrived before it; an older (or equal-ts) one is late: ingest stores it,
detection ignores it (counted in `Engine.late_readings`). So the bound is
zero: a late reading would make verdicts depend on arrival timing, which the
contract forbids; nothing a device reports in order is lost, including a
burst delivered late after a reconnect (it is newer than what came before).
Events have their own stream and watermark: an event older than the
device's newest processed event is ignored (`late_events`), except a call
point's `activated`, which is always honoured at its own ts. Verification
windows close on the device's own time (its next reading or event past the
window end); a device gone silent is judged on arrival time (`advance`,
SILENT_AFTER_INTERVALS x its interval), never on other devices' event time.
Detectors of one zone reach the alarm machine in event-time order (see
`Engine._release`), so a lagging group gets the verdicts of the sorted
stream. Readings dated far in the future are quarantined (FUTURE_TOLERANCE_MS).
"""

from detection.engine import Engine, resolve_thresholds
from detection.linkage import building_directions, sign_direction
from detection.params import THRESHOLD_DEFAULTS
from detection.records import AlarmChange, Events, Readings

__all__ = [
    "THRESHOLD_DEFAULTS",
    "AlarmChange",
    "Engine",
    "Events",
    "Readings",
    "building_directions",
    "resolve_thresholds",
    "sign_direction",
]
