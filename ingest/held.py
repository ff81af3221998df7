"""Marks of stored data detection has not judged yet (`device_state.detection_held_from`).

Detection shows a zone's readings and events in event-time order, so what a
detector sent waits, stored and acknowledged, while a neighbour's data are
behind. A stop judges it (`Engine.flush`); a SIGKILL, or a shard taken over
by another process, does not. So the oldest held ts of each device is marked
in the transaction that stores it, and unmarked once judged: the warm-up
replays the zones of marked devices, and what was held is held again until
the neighbour catches up, as if nothing had happened.

Marking costs a write only when a device starts being held (or an older row
of it is); unmarking rides on the periodic device-state flush. A mark left a
few seconds too long only widens a replay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ingest.registry import Registry
from storage import ingest_store as store

Marks = dict[int, int | None]  # slot -> oldest held ts (ms), None: nothing held


class HeldMarks:
    """What the database says each owned device has held (slot -> ts ms)."""

    def __init__(self) -> None:
        self.stored: dict[int, int] = {}

    def load(self, state: Iterable[Mapping[str, Any]]) -> None:
        """From `load_device_state` rows (a restart, a takeover)."""
        for row in state:
            if row.get("held_from_ms") is not None:
                self.stored[int(row["slot"])] = int(row["held_from_ms"])

    def forget(self, slots: NDArray[np.int64]) -> None:
        """Devices handed to another process: their marks are its now."""
        for s in slots.tolist():
            self.stored.pop(int(s), None)

    def to_mark(self, held: Mapping[int, int]) -> Marks:
        """With a batch: devices held from earlier than marked (or not marked)."""
        return {s: t for s, t in held.items() if t < self.stored.get(s, t + 1)}

    def to_update(self, held: Mapping[int, int]) -> Marks:
        """Between batches (everything shown so far has its alarms committed):
        every mark that differs from what is held now."""
        marks: Marks = {s: None for s in self.stored if s not in held}
        marks.update({s: t for s, t in held.items() if self.stored.get(s) != t})
        return marks

    async def write(self, conn: store.AsyncConn, registry: Registry, marks: Marks) -> None:
        """Store marks (in the caller's transaction); `committed` once it commits."""
        known = [
            (d.id, t)
            for s, t in marks.items()
            if (d := registry.by_slot[s] if 0 <= s < registry.size else None) is not None
        ]
        await store.write_detection_held(conn, [d for d, _ in known], [t for _, t in known])

    def committed(self, marks: Marks) -> None:
        for s, t in marks.items():
            if t is None:
                self.stored.pop(s, None)
            else:
                self.stored[s] = t
