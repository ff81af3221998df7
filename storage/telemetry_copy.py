"""Binary COPY straight from numpy columns into `telemetry`.

PostgreSQL's binary COPY row is a field count, then per field a length and the
value, where a NULL is length -1 with no value and text has its own length.
The rows are laid out at a fixed width first (text padded to the longest
device id, every value present), then one boolean mask over the bytes drops
the padding and the value bytes of NULLs: no Python object per row.

This is the path for rows that cannot be stored already (newer than what is
committed for their device, see ingest.tracker): no stage table, no second
pass through INSERT ... SELECT. The unique key stays the safety net: should
another writer have stored one of them after all, the COPY fails with a
unique violation and the caller takes the checked path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from firesafe.contract import READINGS

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
# timestamptz travels as microseconds since 2000-01-01 00:00:00 UTC.
PG_EPOCH_MS = 946_684_800_000


def ms_to_pg_us(ms: NDArray[np.int64]) -> NDArray[np.int64]:
    return (ms - PG_EPOCH_MS) * 1000


@dataclass(frozen=True, slots=True)
class DeviceIdTable:
    """Every registered device id by slot, as a padded byte matrix (text fields)."""

    padded: NDArray[np.uint8]  # (slots, width)
    length: NDArray[np.int32]  # (slots,)

    @classmethod
    def build(cls, ids_by_slot: Sequence[str | None]) -> DeviceIdTable:
        encoded = [(i or "").encode() for i in ids_by_slot]
        length = np.fromiter(map(len, encoded), dtype=np.int32, count=len(encoded))
        width = int(length.max(initial=0)) or 1
        padded = np.zeros((len(encoded), width), dtype=np.uint8)
        # Row-major order of the kept cells is the order of the joined bytes.
        padded[np.arange(width) < length[:, None]] = np.frombuffer(b"".join(encoded), np.uint8)
        return cls(padded, length)


# A field: (name, big-endian dtype, values, null mask or None). Text fields give
# dtype "text" and values as (padded bytes (n, width), lengths (n,)).
Field = tuple[str, str, Any, NDArray[np.bool_] | None]


def encode_rows(fields: Sequence[Field], n: int) -> bytes:
    """The COPY ... (FORMAT BINARY) stream of n rows of these fields."""
    layout: list[tuple[str, Any]] = [("nfields", ">i2")]
    for name, kind, values, _ in fields:
        width = values[0].shape[1] if kind == "text" else 0
        layout += [(f"len_{name}", ">i4"), (name, f"V{width}" if kind == "text" else kind)]
    record = np.dtype(layout)
    records = np.zeros(n, dtype=record)
    records["nfields"] = len(fields)
    keep = np.ones((n, record.itemsize), dtype=np.bool_)
    for name, kind, values, null in fields:
        offset = record.fields[name][1]  # type: ignore[index]
        if kind == "text":
            padded, length = values
            width = padded.shape[1]
            records[f"len_{name}"] = length
            raw = records.view(np.uint8).reshape(n, record.itemsize)
            raw[:, offset : offset + width] = padded
            keep[:, offset : offset + width] = np.arange(width) < length[:, None]
            continue
        size = np.dtype(kind).itemsize
        records[name] = values
        if null is None:
            records[f"len_{name}"] = size
        else:
            records[f"len_{name}"] = np.where(null, -1, size)
            keep[:, offset : offset + size] = ~null[:, None]
    body = records.view(np.uint8).reshape(n, record.itemsize)[keep]
    return COPY_HEADER + body.tobytes() + COPY_TRAILER


TELEMETRY_COPY = (
    f"COPY telemetry (ts, device_id, seq, received_at, {', '.join(READINGS)}) "
    "FROM STDIN (FORMAT BINARY)"
)


def telemetry_rows(
    ids: DeviceIdTable,
    slot: NDArray[np.int64],
    ts: NDArray[np.int64],
    seq: NDArray[np.int64],
    received: NDArray[np.int64],
    values: NDArray[np.float64],
) -> bytes:
    """`telemetry` rows for TELEMETRY_COPY; NaN (an absent reading) is NULL."""
    absent = np.isnan(values)
    fields: list[Field] = [
        ("ts", ">i8", ms_to_pg_us(ts), None),
        ("device_id", "text", (ids.padded[slot], ids.length[slot]), None),
        ("seq", ">i8", seq, None),
        ("received_at", ">i8", ms_to_pg_us(received), None),
    ]
    fields += [(r, ">f8", values[:, i], absent[:, i]) for i, r in enumerate(READINGS)]
    return encode_rows(fields, int(slot.size))
