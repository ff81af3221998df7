"""Detection's recent past, replayed when devices are taken over or ingest
restarts (`Engine.warm_up`), so that a verdict under way is the one the
previous owner, or this process before its restart, would have given: a steam
signature seen before the window, the window's own readings, a neighbour's
activity, a temperature rising towards its rate of rise. Every device is
replayed (20,000 devices' 7 minutes take about 3 s); a larger estate replays
only the zones where a verdict is pending or near, and those where detection
held stored data unjudged (`ingest/held.py`); the rest start from their next
reading, as they can."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detection import Engine, Events, Readings
from detection import params as p
from firesafe.contract import EVENT_TYPES, READING_INDEX
from ingest.registry import Registry
from ingest.stats import now_ms
from storage import ingest_store as store

log = logging.getLogger(__name__)

EVENT_CODE = {name: i for i, name in enumerate(EVENT_TYPES)}
# Each device's own recent history, back from its newest reading: steam
# memory, a window of at most VERIFICATION_MAX_S, the look-back.
WARM_UP_MS = int(p.STEAM_MEMORY_MS + p.VERIFICATION_MAX_S * 1000 + p.LOOKBACK_MS)
# Beyond this many devices, only the zones with one of these alarms open (or
# data held) are replayed; beyond it again (an estate with many detectors
# resting at pre-alarm level), only those with a fire or electrical alarm.
WARM_UP_MAX_DEVICES = 20_000
WARM_UP_TYPES = frozenset({"fire", "electrical", "pre_alarm"})


async def warm_up(
    conn: store.AsyncConn,
    engine: Engine,
    registry: Registry,
    restored: NDArray[np.int64],
    open_alarms: Sequence[Mapping[str, Any]],
    held: Mapping[int, int] | None = None,
    last_seen: NDArray[np.int64] | None = None,
) -> None:
    """Replay into `engine` (configured, baselines restored, open alarms not yet)
    the recent history of the `restored` devices (those just restarted or
    taken over); of too many, of the zones of these open alarms and of the
    devices with data `held` (`ingest/held.py`: slot -> oldest ts held
    unjudged), among them; only that is held again, the rest was judged.
    `last_seen`: when each slot was last heard (ms, 0 unknown), as the
    zones' order stood."""
    held = {} if held is None else held

    def zones_with(types: Collection[str]) -> list[int]:
        slots = [int(r["slot"]) for r in open_alarms if r["type"] in types]
        return sorted({int(registry.zone[s]) for s in [*slots, *held] if s < registry.size})

    def owned_slots(zones: list[int]) -> NDArray[np.int64]:
        slots = np.flatnonzero(np.isin(registry.zone, zones))
        return slots[np.isin(slots, restored)]

    slots = restored
    if slots.size > WARM_UP_MAX_DEVICES:
        slots = owned_slots(zones_with(WARM_UP_TYPES))
    if slots.size > WARM_UP_MAX_DEVICES:
        slots = owned_slots(zones_with(WARM_UP_TYPES - {"pre_alarm"}))
    if not slots.size:
        return
    ids = [d.id for s in slots.tolist() if (d := registry.by_slot[s]) is not None]
    readings, events = await store.load_recent_history(conn, ids, WARM_UP_MS)
    width = len(READING_INDEX)
    values = np.array([r[2:] for r in readings], np.float64).reshape(len(readings), width)
    codes = [(r[0], r[1], EVENT_CODE[r[2]]) for r in events if r[2] in EVENT_CODE]
    heard: dict[int, int] = {}
    if last_seen is not None:
        known = slots[slots < last_seen.size]
        known = known[last_seen[known] > 0]
        heard = dict(zip(known.tolist(), last_seen[known].tolist(), strict=True))
    engine.warm_up(
        Readings(
            np.array([r[0] for r in readings], np.int64),
            np.array([r[1] for r in readings], np.int64),
            values,  # NULL (a reading the device does not have) is NaN
        ),
        Events(
            np.array([c[0] for c in codes], np.int64),
            np.array([c[1] for c in codes], np.int64),
            np.array([c[2] for c in codes], np.int16),
        ),
        now_ms(),
        heard,
        held,
    )
    log.info(
        "detection: %d reading(s) and %d event(s) of %d device(s) replayed",
        len(readings),
        len(codes),
        len(ids),
    )
