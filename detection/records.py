"""The engine's input batches and output transitions (plain frozen records)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from firesafe import contract


@dataclass(frozen=True, slots=True)
class Readings:
    """One batch of new (already de-duplicated) telemetry rows, in arrival order.

    Row order matters only for the lateness policy (see `detection.kernel.fresh_layers`):
    ingest passes rows in the order they arrived.
    """

    slot: NDArray[np.int64]  # registry slot (dense, stable)
    ts: NDArray[np.int64]  # device event time, epoch ms
    values: NDArray[np.float64]  # (n, len(contract.READINGS)); NaN = reading absent

    @classmethod
    def empty(cls) -> Readings:
        return cls(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, len(contract.READINGS)))
        )


@dataclass(frozen=True, slots=True)
class Events:
    """Device-sent events of the batch, in arrival order."""

    slot: NDArray[np.int64]
    ts: NDArray[np.int64]
    code: NDArray[np.int16]  # index into contract.EVENT_TYPES

    @classmethod
    def empty(cls) -> Events:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int16))


@dataclass(frozen=True, slots=True)
class AlarmChange:
    """One transition of one (device, alarm type)."""

    slot: int
    alarm_type: str  # contract ALARM_TYPES except 'offline' (ingest's, arrival time)
    action: str  # 'open' | 'verdict' | 'clear'
    verdict: str  # 'pending' | 'confirmed' | 'suppressed' (state after this change)
    reason: str  # machine code (see detection.machine)
    at_ms: int  # event time of the change
    detail: Mapping[str, float | str] = field(default_factory=dict)  # evidence
    related: tuple[int, ...] = ()  # other slots that took part (coincidence, call point)
