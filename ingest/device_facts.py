"""Per-device facts ingest keeps in memory and stores every few seconds.

The device summary (last seen, counts: `ingest/tracker.py`), the gateway each
device was last heard through (`ingest/floods.py`), the drift-compensation
baseline detection learnt, how many far-future readings detection kept
out, and which devices' stored data detection still holds (`ingest/held.py`).
Each is drained from its owner and stored on the writer, for the devices
still registered; what fails to store is put back for the next flush.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from detection import Engine
from ingest.floods import GatewayMembers
from ingest.held import HeldMarks
from ingest.registry import Registry
from ingest.tracker import DeviceTracker
from storage import ingest_store as store

# Rows per transaction: a first start behind many gateways, or an epoch
# rolling for a million detectors at once, must not hold the writer in one
# large upsert.
ROWS_PER_WRITE = 50_000

_Value = TypeVar("_Value")


class DeviceFacts:
    def __init__(self) -> None:
        # Quarantine counts already stored, per slot (the engine's are totals).
        self._quarantine_shown = np.zeros(0, np.int64)

    def reset(self) -> None:
        """A fresh engine counts from zero again."""
        self._quarantine_shown = np.zeros(0, np.int64)

    async def flush(
        self,
        writer: store.AsyncConn,
        registry: Registry,
        tracker: DeviceTracker,
        engine: Engine,
        gateways: GatewayMembers,
        held: HeldMarks,
    ) -> None:
        state = tracker.drain(registry.kind >= 0)
        if state.slot.size:
            async with writer.transaction():
                await store.write_device_state(writer, state)
        slots, groups = gateways.drain()
        try:
            await _store_per_device(
                writer, registry, slots, [g for _, g in groups], store.write_gateway_members
            )
        except BaseException:
            gateways.undrain(slots)
            raise
        slots, baselines = engine.drain_baselines()
        try:
            await _store_per_device(
                writer, registry, slots, baselines.tolist(), store.write_drift_baselines
            )
        except BaseException:
            engine.base_changed[slots] = True  # stored at the next flush
            raise
        await self._flush_quarantined(writer, registry, engine)
        # Between commits: what detection has shown has its alarms stored.
        marks = held.to_update(engine.held_from())
        slots = np.fromiter(marks, np.int64, len(marks))
        await _store_per_device(
            writer, registry, slots, list(marks.values()), store.write_detection_held
        )
        held.committed(marks)

    async def _flush_quarantined(
        self, writer: store.AsyncConn, registry: Registry, engine: Engine
    ) -> None:
        """Far-future readings detection kept out, per device, where operators see them."""
        counts = engine.quarantine_count
        if not engine.quarantined:
            return
        known = np.zeros(counts.size, np.int64)
        n = min(counts.size, self._quarantine_shown.size)
        known[:n] = self._quarantine_shown[:n]
        delta = np.maximum(counts - known, 0)[: registry.size]
        changed = np.flatnonzero(delta)
        changed = changed[registry.kind[changed] >= 0]
        if changed.size:
            async with writer.transaction():
                await store.write_quarantined(
                    writer,
                    [registry.device(int(s)).id for s in changed],
                    delta[changed].tolist(),
                )
        self._quarantine_shown = counts.copy()


async def _store_per_device(
    writer: store.AsyncConn,
    registry: Registry,
    slots: NDArray[np.int64],
    values: Sequence[_Value],
    write: Callable[[store.AsyncConn, list[str], list[_Value]], Awaitable[None]],
) -> None:
    """One value per device, for the devices still registered, in slices of
    ROWS_PER_WRITE per transaction."""
    known = [
        (device.id, value)
        for s, value in zip(slots.tolist(), values, strict=True)
        if (device := registry.by_slot[s] if s < registry.size else None)
    ]
    for i in range(0, len(known), ROWS_PER_WRITE):
        part = known[i : i + ROWS_PER_WRITE]
        async with writer.transaction():
            await write(writer, [d for d, _ in part], [v for _, v in part])
