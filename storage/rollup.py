"""The 1-minute rollup of telemetry on plain PostgreSQL, computed from the
batch's numpy columns (the TimescaleDB flavour has a continuous aggregate).

Aggregating in numpy and upserting one row per (device, minute) costs a few
milliseconds per batch; aggregating the inserted rows in SQL cost more than
the insert itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Rollup:
    """One row per (slot, minute): count and min/max/sum/count per reading column."""

    slot: NDArray[np.int64]
    bucket_ms: NDArray[np.int64]  # start of the minute, epoch ms (UTC)
    samples: NDArray[np.int64]
    minimum: NDArray[np.float64]  # (rows, readings); NaN where no value
    maximum: NDArray[np.float64]
    total: NDArray[np.float64]  # 0 where no value
    count: NDArray[np.int64]


def rollup_minutes(
    slot: NDArray[np.int64], ts_ms: NDArray[np.int64], values: NDArray[np.float64]
) -> Rollup:
    """Aggregate readings (NaN = absent) per device and UTC minute."""
    width = values.shape[1] if values.ndim == 2 else 0
    if not slot.size:
        empty = np.empty((0, width))
        return Rollup(slot, ts_ms, slot, empty, empty, empty, np.empty((0, width), np.int64))
    minute = ts_ms // MINUTE_MS
    order = np.lexsort((minute, slot))
    s, m, v = slot[order], minute[order], values[order]
    first = np.ones(s.size, dtype=np.bool_)
    first[1:] = (s[1:] != s[:-1]) | (m[1:] != m[:-1])
    starts = np.flatnonzero(first)
    present = ~np.isnan(v)
    return Rollup(
        slot=s[starts],
        bucket_ms=m[starts] * MINUTE_MS,
        samples=np.diff(np.append(starts, s.size)).astype(np.int64),
        minimum=np.fmin.reduceat(v, starts, axis=0),  # fmin/fmax skip NaN
        maximum=np.fmax.reduceat(v, starts, axis=0),
        total=np.add.reduceat(np.where(present, v, 0.0), starts, axis=0),
        count=np.add.reduceat(present.astype(np.int64), starts, axis=0),
    )
