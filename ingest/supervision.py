"""Offline supervision (contract section 6), judged on arrival time.

A device is offline when nothing from it has arrived for
OFFLINE_AFTER_INTERVALS x its reporting interval, or at once when its status
topic says `offline`; any message from it clears that. One vectorized check
over all slots per tick, so a silent estate is noticed without any traffic.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from firesafe.contract import OFFLINE_AFTER_INTERVALS


class Supervisor:
    def __init__(self) -> None:
        self.last_seen = np.zeros(0, dtype=np.int64)
        self.limit_ms = np.zeros(0, dtype=np.int64)
        self.registered = np.zeros(0, dtype=np.bool_)
        self.offline = np.zeros(0, dtype=np.bool_)
        self.deaf_since: int | None = None  # ingest has not heard the broker since

    def hearing(self, listening: bool, now_ms: int) -> tuple[int, int] | None:
        """Whether ingest hears the devices (its broker sessions are up). While it
        does not, nobody is judged silent: a broker down, or ingest's connection
        to it, is not the estate going quiet. Once it hears again, every device
        gets back the time it was not heard, so a device that was already quiet
        before is still raised, just as much later; returns that outage (since,
        lost ms) when this call ends it."""
        if not listening:
            if self.deaf_since is None:
                self.deaf_since = now_ms
            return None
        if self.deaf_since is None:
            return None
        since, self.deaf_since = self.deaf_since, None
        lost = max(now_ms - since, 0)
        self.last_seen[self.last_seen < since] += lost
        return since, lost

    def configure(
        self,
        slots: NDArray[np.int64],
        interval_ms: NDArray[np.int64],
        baseline_ms: NDArray[np.int64],
    ) -> None:
        """(Re)configure supervised devices. `baseline_ms` is when supervision of a
        slot starts counting if nothing was seen yet (registration, or start-up)."""
        size = int(slots.max()) + 1 if slots.size else 0
        if size > self.last_seen.size:
            grow = size - self.last_seen.size
            self.last_seen = np.concatenate([self.last_seen, np.zeros(grow, np.int64)])
            self.limit_ms = np.concatenate([self.limit_ms, np.zeros(grow, np.int64)])
            self.registered = np.concatenate([self.registered, np.zeros(grow, np.bool_)])
            self.offline = np.concatenate([self.offline, np.zeros(grow, np.bool_)])
        self.registered[:] = False
        self.registered[slots] = True
        self.limit_ms[slots] = interval_ms[slots] * OFFLINE_AFTER_INTERVALS
        self.last_seen[slots] = np.maximum(self.last_seen[slots], baseline_ms[slots])

    def seen(self, slot: NDArray[np.int64], received: NDArray[np.int64]) -> NDArray[np.int64]:
        """Messages arrived; return the slots whose offline alarm they clear."""
        if not slot.size:
            return slot
        np.maximum.at(self.last_seen, slot, received)
        back = np.unique(slot[self.offline[slot]])
        self.offline[back] = False
        return back

    def heard(self, slot: NDArray[np.int64], received: NDArray[np.int64]) -> None:
        """Messages arrived but not processed yet: the devices are not silent (their
        offline alarms are cleared when the messages are processed)."""
        if slot.size:
            np.maximum.at(self.last_seen, slot, received)

    def went_offline(self, slot: NDArray[np.int64]) -> NDArray[np.int64]:
        """Status `offline` (last will): the slots not already offline."""
        slot = np.unique(slot)
        new = slot[~self.offline[slot]]
        self.offline[new] = True
        return new

    def check(self, now_ms: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Slots silent past their limit, and the moment each one went offline."""
        if self.deaf_since is not None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        deadline = self.last_seen + self.limit_ms
        due = self.registered & ~self.offline & (deadline <= now_ms)
        slots = np.flatnonzero(due).astype(np.int64)
        self.offline[slots] = True
        return slots, deadline[slots]

    def forget(self, slots: NDArray[np.int64]) -> None:
        """Stop supervising these devices (another process took them over)."""
        s = slots[slots < self.offline.size]
        self.registered[s] = False
        self.offline[s] = False
        self.last_seen[s] = 0

    def mark_offline(self, slot: int) -> None:
        if slot < self.offline.size:
            self.offline[slot] = True

    def reset(self, slot: int, now_ms: int) -> None:
        """A person cleared the offline alarm: supervise again from now."""
        if slot < self.offline.size:
            self.offline[slot] = False
            self.last_seen[slot] = max(int(self.last_seen[slot]), now_ms)
