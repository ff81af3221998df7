"""Ingest's vectorized bookkeeping against obvious loops: seq gaps, reordering,
duplicates (DeviceTracker) and offline supervision (Supervisor)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.supervision import Supervisor
from ingest.tracker import UNKNOWN_TS, DeviceTracker

MOD = 2**32

rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 50), st.integers(0, 12), st.booleans()),
    max_size=40,
)
batches_strategy = st.lists(rows_strategy, min_size=1, max_size=4)


class NaiveTracker:
    """The same bookkeeping, one row at a time."""

    def __init__(self) -> None:
        self.newest: dict[int, int] = {}
        self.last_seq: dict[int, int] = {}
        self.gaps: dict[int, int] = {}
        self.late: dict[int, int] = {}
        self.dups: dict[int, int] = {}

    def committed(self, rows: list[tuple[int, int, int, bool]]) -> int:
        for s, _, _, new in rows:
            if not new:
                self.dups[s] = self.dups.get(s, 0) + 1
        fresh = [(s, t, q) for s, t, q, new in rows if new]
        # Reordering, in arrival order: older than something that arrived before it.
        seen_max = dict(self.newest)
        late_flags = []
        for s, t, _ in fresh:
            late = s in seen_max and t < seen_max[s]
            late_flags.append(late)
            if late:
                self.late[s] = self.late.get(s, 0) + 1
            seen_max[s] = max(seen_max.get(s, t), t)
        # Gaps, in event-time order per device, between the rows that came in
        # order (a reordered one fills no gap and is nobody's predecessor).
        total = 0
        order = sorted(range(len(fresh)), key=lambda i: (fresh[i][0], fresh[i][1], fresh[i][2]))
        order = [i for i in order if not late_flags[i]]
        prev: dict[int, int | None] = {}
        for i in order:
            s, t, q = fresh[i]
            p = prev[s] if s in prev else self.last_seq.get(s)
            if p is not None:
                step = (q - p) % MOD
                if 0 < step < MOD // 2:
                    self.gaps[s] = self.gaps.get(s, 0) + step - 1
                    total += step - 1
            prev[s] = q
        last: dict[int, tuple[int, int]] = {}
        for i in order:
            s, t, q = fresh[i]
            last[s] = (t, q)
        for s, (t, q) in last.items():
            if s not in self.newest or t >= self.newest[s]:
                self.last_seq[s] = q
        for s, t, _ in fresh:
            self.newest[s] = max(self.newest.get(s, t), t)
        return total


@settings(max_examples=300, deadline=None)
@given(batches_strategy)
def test_tracker_matches_the_loop(batches: list[list[tuple[int, int, int, bool]]]) -> None:
    fast, slow = DeviceTracker(capacity=2), NaiveTracker()
    fast.ensure(4)
    for rows in batches:
        arr = np.array(rows, dtype=np.int64).reshape(-1, 4)
        got = fast.committed(
            arr[:, 0],
            arr[:, 1],
            arr[:, 2],
            np.full(len(rows), 1000, dtype=np.int64),
            arr[:, 3].astype(np.bool_),
        )
        assert got == slow.committed(rows)
    for s in range(4):
        assert fast.gaps[s] == slow.gaps.get(s, 0)
        assert fast.out_of_order[s] == slow.late.get(s, 0)
        assert fast.duplicates[s] == slow.dups.get(s, 0)
        assert fast.last_seq[s] == slow.last_seq.get(s, -1)
        expected_newest = slow.newest.get(s)
        assert fast.newest_ts[s] == (UNKNOWN_TS if expected_newest is None else expected_newest)


def test_a_late_reading_is_nobodys_predecessor() -> None:
    """seq 1-10 but 5, then 5 (late) and 11 in one batch: one gap (5, counted
    when 6 came), none for 11, which follows 10 (an outside check counted 5)."""
    t = DeviceTracker()
    t.ensure(1)

    def batch(seqs: list[int]) -> int:
        n = len(seqs)
        one = np.ones(n, np.int64)
        q = np.array(seqs, np.int64)
        return t.committed(0 * one, q * 1000, q, 20_000 * one, np.ones(n, np.bool_))

    assert batch([s for s in range(1, 11) if s != 5]) == 1
    assert batch([5, 11]) == 0
    assert t.last_seq[0] == 11
    assert t.out_of_order[0] == 1


def test_an_event_in_a_backlog_is_neither_late_nor_a_gap() -> None:
    """A device's event (seq 4) and readings (3, 5, 6) committed in one batch
    (a takeover's backlog): the batch lists readings first, which says nothing
    of the order of two topics (an outside check counted the event late, and
    seq 4 missing)."""
    t = DeviceTracker()
    t.ensure(1)

    def a(*x: int) -> np.ndarray:
        return np.array(x, np.int64)

    assert t.committed(a(0, 0), a(1000, 2000), a(1, 2), a(2000, 2000), np.ones(2, np.bool_)) == 0
    got = t.committed(
        a(0, 0, 0, 0),
        a(3000, 4000, 5000, 4000),
        a(3, 5, 6, 4),
        a(9000, 9000, 9000, 9000),
        np.ones(4, np.bool_),
        events_from=3,
    )
    assert got == 0
    assert t.out_of_order[0] == 0
    assert t.last_seq[0] == 6


def test_maybe_duplicate_is_conservative() -> None:
    tracker = DeviceTracker()
    tracker.ensure(3)
    slot = np.array([1, 2], dtype=np.int64)
    # Unknown since start: everything may be a duplicate (checked in the database).
    assert tracker.maybe_duplicate(slot, np.array([5, 5])).tolist() == [True, True]
    tracker.committed(
        slot, np.array([10, 20]), np.array([1, 1]), np.array([0, 0]), np.array([True, True])
    )
    got = tracker.maybe_duplicate(np.array([1, 1, 2]), np.array([10, 11, 19]))
    assert got.tolist() == [True, False, True]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 20), min_size=1, max_size=6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 200)), max_size=30),
    st.lists(st.integers(0, 250), min_size=1, max_size=8),
)
def test_supervisor_matches_the_loop(
    intervals: list[int], arrivals: list[tuple[int, int]], checks: list[int]
) -> None:
    n = len(intervals)
    sup = Supervisor()
    interval = np.array(intervals, dtype=np.int64)
    sup.configure(np.arange(n, dtype=np.int64), interval, np.zeros(n, dtype=np.int64))
    last = [0] * n
    offline = [False] * n
    events = sorted(
        [("seen", t, s % n) for s, t in arrivals] + [("check", t, -1) for t in checks],
        key=lambda e: (e[1], e[0] != "seen"),
    )
    for kind, t, s in events:
        if kind == "seen":
            cleared = sup.seen(np.array([s], dtype=np.int64), np.array([t], dtype=np.int64))
            assert cleared.tolist() == ([s] if offline[s] else [])
            last[s] = max(last[s], t)
            offline[s] = False
        else:
            slots, deadlines = sup.check(t)
            due = [i for i in range(n) if not offline[i] and last[i] + 3 * intervals[i] <= t]
            assert slots.tolist() == due
            assert deadlines.tolist() == [last[i] + 3 * intervals[i] for i in due]
            for i in due:
                offline[i] = True
