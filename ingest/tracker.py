"""What ingest knows of each device at run time, in arrays indexed by slot.

Used for three things: spotting possible duplicates cheaply (a reading newer
than everything committed for its device cannot be one), counting seq gaps,
duplicates and reordering, and folding those figures into `device_state`
every few seconds instead of on every batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firesafe.contract import SEQ_MODULUS
from storage.ingest_store import DeviceStateColumns

# "Not known since start": every reading of the device is checked against the
# database until its first commit tells us its newest event time.
UNKNOWN_TS = np.iinfo(np.int64).max
HALF_SEQ = SEQ_MODULUS // 2


class DeviceTracker:
    def __init__(self, capacity: int = 1024) -> None:
        self.size = 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        def grow(old: NDArray[Any] | None, fill: Any, dtype: Any) -> NDArray[Any]:
            new = np.full(capacity, fill, dtype=dtype)
            if old is not None:
                new[: old.size] = old
            return new

        self.newest_ts = grow(getattr(self, "newest_ts", None), UNKNOWN_TS, np.int64)
        self.last_seq = grow(getattr(self, "last_seq", None), -1, np.int64)
        self.last_seen = grow(getattr(self, "last_seen", None), 0, np.int64)
        self.messages = grow(getattr(self, "messages", None), 0, np.int64)
        self.gaps = grow(getattr(self, "gaps", None), 0, np.int64)
        self.duplicates = grow(getattr(self, "duplicates", None), 0, np.int64)
        self.out_of_order = grow(getattr(self, "out_of_order", None), 0, np.int64)
        self.dirty = grow(getattr(self, "dirty", None), False, np.bool_)
        # Since the last drain: status -1 none, 0 offline, 1 online; mains -1 none, 0/1.
        self.status = grow(getattr(self, "status", None), -1, np.int64)
        self.status_ms = grow(getattr(self, "status_ms", None), -1, np.int64)
        self.mains = grow(getattr(self, "mains", None), -1, np.int64)
        self.capacity = capacity

    def ensure(self, size: int) -> None:
        if size > self.capacity:
            self._alloc(max(size, self.capacity * 2))
        self.size = max(self.size, size)

    def load(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Seed from device_state at start-up (newest_ts stays unknown on purpose)."""
        for row in rows:
            slot = int(row["slot"])
            self.ensure(slot + 1)
            if row.get("last_seq") is not None:
                self.last_seq[slot] = int(row["last_seq"])
            if row.get("last_seen_ms") is not None:
                self.last_seen[slot] = int(row["last_seen_ms"])

    def forget(self, slots: NDArray[np.int64]) -> None:
        """Another process took these devices over: what we knew is out of date."""
        s = slots[slots < self.capacity]
        self.newest_ts[s] = UNKNOWN_TS
        self.last_seq[s] = -1
        for column in (self.last_seen, self.messages, self.gaps, self.duplicates):
            column[s] = 0
        self.out_of_order[s] = 0
        self.dirty[s] = False
        self.status[s] = -1
        self.status_ms[s] = -1
        self.mains[s] = -1

    def maybe_duplicate(self, slot: NDArray[np.int64], ts: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.asarray(ts <= self.newest_ts[slot])

    def committed(
        self,
        slot: NDArray[np.int64],
        ts: NDArray[np.int64],
        seq: NDArray[np.int64],
        received: NDArray[np.int64],
        new: NDArray[np.bool_],
        events_from: int | None = None,
    ) -> int:
        """Fold committed rows (readings and events together) in; return seq gaps found.
        Rows from `events_from` on are events: another topic, whose order against the
        readings' is not known, so each is in arrival order only within its own."""
        if not slot.size:
            return 0
        stream = np.zeros(slot.size, np.int64)
        if events_from is not None:
            stream[events_from:] = 1
        self.dirty[slot] = True
        np.add.at(self.messages, slot, 1)
        np.maximum.at(self.last_seen, slot, received)
        dup_slots = slot[~new]
        if dup_slots.size:
            np.add.at(self.duplicates, dup_slots, 1)
        slot, ts, seq, stream = slot[new], ts[new], seq[new], stream[new]
        if not slot.size:
            return 0
        late = self._arrived_late(slot, ts, stream)
        if late.any():
            np.add.at(self.out_of_order, slot[late], 1)
        gaps = self._gaps(slot[~late], ts[~late], seq[~late])
        # Newest committed event time per device (max, whatever the arrival order).
        unknown = self.newest_ts[slot] == UNKNOWN_TS
        self.newest_ts[slot[unknown]] = -1
        np.maximum.at(self.newest_ts, slot, ts)
        return gaps

    def _gaps(self, slot: NDArray[np.int64], ts: NDArray[np.int64], seq: NDArray[np.int64]) -> int:
        """Seq gaps of the rows that came in order, each device's in event-time
        order from the last one before; moves `last_seq` on. A reordered row
        (late) fills no gap and opens none: it is nobody's predecessor (an
        outside check counted the step after one as loss)."""
        if not slot.size:
            return 0
        order = np.lexsort((seq, ts, slot))
        slot, ts, seq = slot[order], ts[order], seq[order]
        first = np.ones(slot.size, dtype=np.bool_)
        first[1:] = slot[1:] != slot[:-1]
        prev = np.empty_like(seq)
        prev[1:] = seq[:-1]
        prev[first] = self.last_seq[slot[first]]
        step = (seq - prev) % SEQ_MODULUS
        # A forward step of k means k-1 readings missing; a step of more than half
        # the counter is the counter going backwards: reordering, not loss.
        gap = np.where((prev >= 0) & (step > 0) & (step < HALF_SEQ), step - 1, 0)
        np.add.at(self.gaps, slot, gap)
        last = np.ones(slot.size, dtype=np.bool_)
        last[:-1] = slot[1:] != slot[:-1]
        self.last_seq[slot[last]] = seq[last]
        return int(gap.sum())

    def _arrived_late(
        self, slot: NDArray[np.int64], ts: NDArray[np.int64], stream: NDArray[np.int64]
    ) -> NDArray[np.bool_]:
        """Rows (in arrival order within their stream) older than a row of the same
        device and stream that came before in this batch, or than one committed
        earlier: reordering. (An event and a reading travel on different topics: a
        batch lists the readings first, which says nothing of their order; an
        outside check counted an event in a backlog as late, and a gap.)"""
        n = slot.size
        order = np.lexsort((np.arange(n), stream, slot))  # by device and stream, then arrival
        s = slot[order] * 2 + stream[order]
        t = ts[order]
        first = np.ones(n, dtype=np.bool_)
        first[1:] = s[1:] != s[:-1]
        segment = np.cumsum(first) - 1
        # Running max of ts within each device's run: ranks (< n) offset by the run
        # number keep runs apart without overflowing int64.
        rank = np.unique(t, return_inverse=True)[1].reshape(-1)
        running = np.maximum.accumulate(rank + segment * (n + 1)) - segment * (n + 1)
        before = np.empty(n, dtype=np.int64)
        before[1:] = running[:-1]
        newest = self.newest_ts[slot[order]]
        late_in_batch = ~first & (rank < before)
        late_vs_committed = (newest != UNKNOWN_TS) & (t < newest)
        late = np.empty(n, dtype=np.bool_)
        late[order] = late_in_batch | late_vs_committed
        return late

    def duplicates_dropped(self, slot: NDArray[np.int64]) -> None:
        """Duplicates removed inside a batch, before reaching the database."""
        if slot.size:
            np.add.at(self.duplicates, slot, 1)
            self.dirty[slot] = True

    def seen(self, slot: NDArray[np.int64], received: NDArray[np.int64]) -> None:
        if slot.size:
            np.maximum.at(self.last_seen, slot, received)
            self.dirty[slot] = True

    def set_status(
        self, slot: NDArray[np.int64], online: NDArray[np.bool_], at: NDArray[np.int64]
    ) -> None:
        """The status topic's latest word per device (arrival order: the last wins)."""
        self.status[slot] = online.astype(np.int64)
        self.status_ms[slot] = at
        self.dirty[slot] = True

    def set_mains(self, slot: NDArray[np.int64], on_mains: NDArray[np.bool_]) -> None:
        self.mains[slot] = on_mains.astype(np.int64)
        self.dirty[slot] = True

    def drain(self, registered: NDArray[np.bool_]) -> DeviceStateColumns:
        """The figures to fold into device_state since the last drain; resets the deltas."""
        dirty = self.dirty[: self.size].copy()
        dirty[registered.size :] = False
        dirty[: registered.size] &= registered[: self.size]
        slots = np.flatnonzero(dirty)
        newest = self.newest_ts[slots]
        state = DeviceStateColumns(
            slot=slots.astype(np.int64),
            last_seen_ms=np.where(self.last_seen[slots] > 0, self.last_seen[slots], -1),
            last_ts_ms=np.where(newest == UNKNOWN_TS, -1, newest),
            last_seq=self.last_seq[slots].copy(),
            status=self.status[slots].copy(),
            status_ms=self.status_ms[slots].copy(),
            on_mains=self.mains[slots].copy(),
            messages=self.messages[slots].copy(),
            seq_gaps=self.gaps[slots].copy(),
            duplicates=self.duplicates[slots].copy(),
            out_of_order=self.out_of_order[slots].copy(),
        )
        for column in (self.messages, self.gaps, self.duplicates, self.out_of_order):
            column[slots] = 0
        for column in (self.status, self.status_ms, self.mains):
            column[slots] = -1
        self.dirty[slots] = False
        return state
