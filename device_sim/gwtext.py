"""Gateway readings as JSON text, built from columns (the `--speed max` hot path).

A gateway batch is `{"ts": ..., "readings": [{"device", "ts", "seq", "v"}, ...]}`
(contract section 1). Building a dict per reading and serializing it costs
about 10 us; here a reading is a row of ready-made text pieces picked from
tables with numpy indexing, and a batch is one `str.join` over its rows:

- the device's head `{"device":"S001-SD0001","ts":` is made once per device;
- `ts` comes from a table of the tick's 1,000 milliseconds, `,"seq":` included;
- `seq` and every value from tables that grow to the range actually seen.

A device reports a value rounded to a few decimals (physics.DECIMALS), so a
value is an integer number of steps: the table entry of step `m` is
`repr(m / 10**decimals)`, the very float `np.round` gives (it computes
`rint(x * 10**d) / 10**d`), written as its shortest round-trip text, as
orjson writes it. A parser reads back exactly the value the simulator meant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from device_sim import contract as c
from device_sim.physics import BOUNDS, DECIMALS, INTEGER_READINGS

ObjectArray = NDArray[np.object_]

# Pieces of a row: head, ts, seq, up to four values, the closing `}},`.
MAX_VALUES = max(len(names) for names in c.KIND_READINGS.values())
ROW_WIDTH = 3 + MAX_VALUES + 1
CLOSE = "}},"
# A seq table spans at most this many values; beyond it seq text is made per reading.
MAX_SEQ_SPAN = 1 << 20
TICK_MS = 1000


class _ValueTable:
    """Text of the steps lo..hi of one reading, made a block at a time when first needed."""

    BLOCK = 1024

    def __init__(self, make: Callable[[NDArray[np.int64]], list[str]], lo: int, hi: int) -> None:
        self.make = make
        self.base = lo
        self.text: ObjectArray = np.empty(hi - lo + 1, dtype=object)
        self.made = np.zeros((hi - lo) // self.BLOCK + 1, dtype=np.bool_)

    def lookup(self, steps: NDArray[np.int64]) -> ObjectArray:
        at = steps - self.base
        first, last = int(at.min()) // self.BLOCK, int(at.max()) // self.BLOCK
        if not self.made[first : last + 1].all():
            for b in range(first, last + 1):
                if not self.made[b]:
                    a = b * self.BLOCK
                    z = min(a + self.BLOCK, len(self.text))
                    self.text[a:z] = self.make(np.arange(self.base + a, self.base + z))
                    self.made[b] = True
        out: ObjectArray = self.text[at]
        return out


class _SeqTable:
    """Text of seq values in a window that follows the counters as they climb."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.base = 0
        self.text: ObjectArray = np.empty(0, dtype=object)

    @staticmethod
    def make(ints: Sequence[int]) -> list[str]:
        return [f'{i},"v":{{' for i in ints]

    def lookup(self, seq: NDArray[np.int64]) -> ObjectArray:
        lo, hi = int(seq.min()), int(seq.max())
        if not (self.base <= lo and hi < self.base + len(self.text)):
            span = hi - lo + 1
            if 2 * span > self.limit:  # counters far apart (a wrap, a jump): one by one
                out: ObjectArray = np.array(self.make(seq.tolist()), dtype=object)
                return out
            self.base = lo
            self.text = np.empty(2 * span, dtype=object)
            self.text[:] = self.make(range(lo, lo + 2 * span))
        found: ObjectArray = self.text[seq - self.base]
        return found


def _value_maker(name: str, first: bool) -> Callable[[NDArray[np.int64]], list[str]]:
    key = ("" if first else ",") + orjson.dumps(name).decode() + ":"
    if name in INTEGER_READINGS:
        return lambda ints: [key + str(i) for i in ints.tolist()]
    scale = 10.0 ** DECIMALS[name]
    return lambda ints: [key + repr(x) for x in (ints / scale).tolist()]


class ReadingText:
    """Rows of text pieces for gateway readings of one estate's devices."""

    def __init__(self, device_ids: Sequence[str], kinds: Sequence[str]) -> None:
        self.head: ObjectArray = np.array(
            ['{"device":' + orjson.dumps(d).decode() + ',"ts":' for d in device_ids], dtype=object
        )
        order = tuple(c.KIND_READINGS)
        self.kind_code = np.array([order.index(k) for k in kinds], dtype=np.int64)
        self.kinds = order
        self._values: dict[tuple[str, bool], _ValueTable] = {}
        self._seq = _SeqTable(MAX_SEQ_SPAN)

    def _value_text(self, name: str, first: bool, column: NDArray[np.float64]) -> ObjectArray:
        if not np.isfinite(column).all():
            raise ValueError(f"non-finite {name} reading: the contract allows finite numbers only")
        lo, hi = BOUNDS[name]
        clipped = np.clip(column, lo, hi)
        scale = 1.0 if name in INTEGER_READINGS else 10.0 ** DECIMALS[name]
        steps = np.rint(clipped * scale).astype(np.int64)
        table = self._values.get((name, first))
        if table is None:
            table = _ValueTable(_value_maker(name, first), round(lo * scale), round(hi * scale))
            self._values[(name, first)] = table
        return table.lookup(steps)

    def rows(
        self,
        dev: NDArray[np.intp],
        t0: int,
        sub: NDArray[np.int64],
        seq: NDArray[np.int64],
        vals: dict[str, NDArray[np.float64]],
        at: NDArray[np.intp],
    ) -> ObjectArray:
        """One row per reading: device `dev[i]` at ts `t0 + sub[i]` with `seq[i]`,
        its kind's values from the columns `vals[name][at[i]]`."""
        n = len(dev)
        rows: ObjectArray = np.empty((n, ROW_WIDTH), dtype=object)
        if not n:
            return rows
        rows[:, 0] = self.head[dev]
        ts_text = np.array([f'{t0 + s},"seq":' for s in range(TICK_MS)], dtype=object)
        rows[:, 1] = ts_text[sub]
        rows[:, 2] = self._seq.lookup(seq)
        codes = self.kind_code[dev]
        for k, kind in enumerate(self.kinds):
            part = np.flatnonzero(codes == k)
            if not part.size:
                continue
            names = c.KIND_READINGS[kind]
            for j, name in enumerate(names):
                rows[part, 3 + j] = self._value_text(name, j == 0, vals[name][at[part]])
            if len(names) < MAX_VALUES:
                rows[part, 3 + len(names) : 3 + MAX_VALUES] = ""
        rows[:, ROW_WIDTH - 1] = CLOSE
        return rows


def single_row(text: str) -> ObjectArray:
    """A reading already serialized (the slow path) as a row of pieces."""
    row: ObjectArray = np.full((1, ROW_WIDTH), "", dtype=object)
    row[0, 0] = text
    row[0, ROW_WIDTH - 1] = ","
    return row


def batch_payloads(
    ts_ms: int, rows: ObjectArray, max_readings: int, max_bytes: int
) -> list[tuple[bytes, int]]:
    """`rows` as gateway batches of at most `max_readings` and `max_bytes`: (payload, readings)."""
    head = f'{{"ts":{ts_ms},"readings":['
    out: list[tuple[bytes, int]] = []
    todo = [(i, min(i + max_readings, len(rows))) for i in range(0, len(rows), max_readings)]
    while todo:
        a, b = todo.pop(0)
        body: Any = "".join(rows[a:b].ravel().tolist())
        text = f"{head}{body[:-1]}]}}"  # the last reading's trailing comma dropped
        if len(text) > max_bytes and b - a > 1:  # ids are ASCII: chars are bytes
            mid = (a + b) // 2
            todo[:0] = [(a, mid), (mid, b)]
            continue
        out.append((text.encode(), b - a))
    return out
