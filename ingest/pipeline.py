"""A batch's life in three steps, so that what must happen once happens once.

    plan_batch   pure, run once: in-batch de-duplication, the rows to write
    write        the only step ever retried (a lost database connection): one
                 transaction with the rows, detection's alarm changes (computed
                 on the first attempt and kept on the plan) and linkage commands
    after_commit never retried: acknowledgements, tracker, counters

In the spirit of psycopg's I/O-free generators: the plan holds everything
the write needs, and nothing the write does changes the plan except the
memo of detection's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ingest.decode import DecodedBatch, RawMessage
from ingest.floods import Group, SiteChange
from storage import ingest_store as store


def first_of_keys(
    slot: NDArray[np.int64], ts: NDArray[np.int64], seq: NDArray[np.int64]
) -> NDArray[np.bool_]:
    """Mask keeping the first row of each (slot, ts, seq) key (in-batch duplicates)."""
    keep = np.ones(slot.size, dtype=np.bool_)
    if slot.size < 2:
        return keep
    order = np.lexsort((seq, ts, slot))
    s, t, q = slot[order], ts[order], seq[order]
    same = (s[1:] == s[:-1]) & (t[1:] == t[:-1]) & (q[1:] == q[:-1])
    keep[order[1:][same]] = False
    return keep


def per_device_steps(slot: NDArray[np.int64], limit: int) -> list[NDArray[np.int64]] | None:
    """The batch's rows cut so that no part holds more than `limit` rows of one
    device (indices, arrival order kept within each device), or None when no
    device has that many. Detection costs a step per row of one device (each
    device's rows are taken in turn), so a device's backlog of thousands is
    detected part by part with the event loop served in between (an outside
    check: 20,000 readings of one detector held the loop 26-45 s and the
    broker dropped ingest's session for its missed keepalives). Verdicts do
    not depend on where a stream is cut (README: Load invariance)."""
    if slot.size <= limit:
        return None
    order = np.argsort(slot, kind="stable")
    s = slot[order]
    first = np.empty(s.size, np.bool_)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    sorted_rank = np.arange(s.size) - np.repeat(starts, np.diff(np.append(starts, s.size)))
    if int(sorted_rank.max()) < limit:
        return None
    rank = np.empty_like(sorted_rank)
    rank[order] = sorted_rank
    part = rank // limit
    return [np.flatnonzero(part == p) for p in range(int(part.max()) + 1)]


@dataclass
class BatchPlan:
    """What one batch writes. Readings and events are the batch's rows without
    in-batch duplicates; `maybe_dup` marks readings the database must check."""

    burst: Sequence[RawMessage]
    batch: DecodedBatch
    # readings
    slot: NDArray[np.int64]
    ts: NDArray[np.int64]
    seq: NDArray[np.int64]
    received: NDArray[np.int64]
    values: NDArray[np.float64]
    extra: dict[int, dict[str, float]]
    maybe_dup: NDArray[np.bool_]
    # events
    ev_idx: NDArray[np.int64]
    ev_slot: NDArray[np.int64]
    ev_ts: NDArray[np.int64]
    ev_seq: NDArray[np.int64]
    ev_received: NDArray[np.int64]
    ev_code: NDArray[np.int16]
    rejects: list[store.RejectRow]
    in_batch_dups: int
    dropped: NDArray[np.int64]  # slots of in-batch duplicates
    # Detection's and supervision's alarm changes: decided on the first write
    # attempt and kept, because deciding advances their state.
    alarm_writes: list[store.AlarmWrite] | None = None
    # Devices detection now holds data of for the first time (ingest/held.py).
    held_marks: dict[int, int | None] = field(default_factory=dict)
    # The committed write's outcome (set by the attempt that committed).
    tel_new: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    ev_new: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    applied: list[store.AppliedAlarm] = field(default_factory=list)
    commands: int = 0
    # Sites that fell silent or came back as a whole (decided with detection).
    site_changes: list[SiteChange] = field(default_factory=list)
    sites: dict[Group, str | None] = field(default_factory=dict)  # group -> open alarm id


MaybeDuplicate = Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]]


def plan_batch(
    burst: Sequence[RawMessage],
    batch: DecodedBatch,
    maybe_dup_of: MaybeDuplicate,
) -> BatchPlan:
    """Plan one decoded batch. `maybe_dup_of(slot, ts)` says which readings may
    have been committed before (the tracker's committed high-water marks)."""
    keep_ev = first_of_keys(batch.ev_slot, batch.ev_ts, batch.ev_seq)
    keep_tel = first_of_keys(batch.slot, batch.ts, batch.seq)
    if batch.ev_slot.size and batch.slot.size:
        # A reading and an event with the same key: the same message twice.
        ev_keys = set(
            zip(batch.ev_slot.tolist(), batch.ev_ts.tolist(), batch.ev_seq.tolist(), strict=True)
        )
        for i in np.flatnonzero(np.isin(batch.slot, batch.ev_slot)).tolist():
            if (int(batch.slot[i]), int(batch.ts[i]), int(batch.seq[i])) in ev_keys:
                keep_tel[i] = False
    ev_idx = np.flatnonzero(keep_ev)
    tel_idx = np.flatnonzero(keep_tel)
    slot, ts = batch.slot[tel_idx], batch.ts[tel_idx]
    maybe_dup = maybe_dup_of(slot, ts)
    return BatchPlan(
        burst=burst,
        batch=batch,
        slot=slot,
        ts=ts,
        seq=batch.seq[tel_idx],
        received=batch.received[tel_idx],
        values=batch.values[tel_idx],
        extra={int(np.searchsorted(tel_idx, i)): v for i, v in batch.extra.items() if keep_tel[i]},
        maybe_dup=maybe_dup,
        ev_idx=ev_idx,
        ev_slot=batch.ev_slot[ev_idx],
        ev_ts=batch.ev_ts[ev_idx],
        ev_seq=batch.ev_seq[ev_idx],
        ev_received=batch.ev_received[ev_idx],
        ev_code=batch.ev_code[ev_idx],
        rejects=[
            store.RejectRow(
                r.received_ms, r.topic, r.reason, r.payload, r.detail, r.device_id, r.size
            )
            for r in batch.rejects
        ],
        in_batch_dups=int((~keep_ev).sum() + (~keep_tel).sum()),
        dropped=np.concatenate([batch.ev_slot[~keep_ev], batch.slot[~keep_tel]]),
    )
