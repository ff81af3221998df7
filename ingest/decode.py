"""Decode a burst of raw MQTT messages into columnar numpy arrays.

Pure: no I/O. Every message ends up in exactly one place: telemetry rows,
events, status changes, or rejects (contract section 3: bad input is never
silently dropped). A bad reading inside a gateway batch rejects that reading
only. Messages on `cmd` topics are the platform's own output and are skipped.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
from numpy.typing import NDArray

from firesafe.contract import (
    ALL_KIND_EVENTS,
    EVENT_TYPES,
    ID_RE,
    MAX_PAYLOAD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    READING_INDEX,
    READINGS,
    SEQ_MODULUS,
)
from firesafe.json_keys import Pairs, pairs, repeated
from ingest.registry import Device, Registry

N_READINGS = len(READINGS)
EVENT_CODE = {name: code for code, name in enumerate(EVENT_TYPES)}
_INT_FLOAT_MAX = 2**1023  # an int below this in magnitude is a finite float
# A known reading beyond this magnitude is no measurement of any of them (%/m,
# °C, ppm, mA, A, V, %), and summing or squaring a few such values overflows a
# float: PostgreSQL then refuses the rollup's and the API's aggregates. It is a
# `bad_value` reject like a non-finite one. Unknown readings are only stored.
MAX_READING_ABS = 1e12
# Topics that name no registered device are cached up to this many (then the
# cache starts over), and only when no longer than a valid one can be
# (fs/v1/{64}/gateway/{64}/batch).
OTHER_TOPICS_MAX = 10_000
OTHER_TOPIC_MAX_LEN = 160


class RawMessage(NamedTuple):
    """One message as received, before any parsing."""

    topic: str
    payload: bytes
    received_ms: int
    retained: bool = False
    mid: int = 0  # MQTT packet id, acknowledged after the batch holding it commits
    qos: int = 0
    generation: int = 0  # which broker connection it came on (packet ids are per connection)
    size: int = -1  # the payload's length when it was cut short on arrival (too large)
    shard: int = -1  # the shard whose session it came on (-1: the single session)
    dup: bool = False  # MQTT DUP: the broker sent it to us before (a redelivery)


@dataclass(frozen=True, slots=True)
class Reject:
    received_ms: int
    topic: str
    reason: str
    payload: bytes
    detail: str
    device_id: str | None = None
    size: int = -1  # the payload's original length when it was cut short on arrival

    def __post_init__(self) -> None:
        # The detail may quote device input; PostgreSQL text cannot hold NUL.
        if "\x00" in self.detail:
            object.__setattr__(self, "detail", self.detail.replace("\x00", "\\0"))


@dataclass(slots=True)
class DecodedBatch:
    """Columns of one decoded burst; `values` holds NaN where a reading is absent."""

    slot: NDArray[np.int64]
    ts: NDArray[np.int64]
    seq: NDArray[np.int64]
    received: NDArray[np.int64]
    values: NDArray[np.float64]
    extra: dict[int, dict[str, float]]  # row -> unknown reading names (stored, ignored)
    ev_slot: NDArray[np.int64]
    ev_ts: NDArray[np.int64]
    ev_seq: NDArray[np.int64]
    ev_received: NDArray[np.int64]
    ev_code: NDArray[np.int16]
    ev_detail: list[str | None]
    st_slot: NDArray[np.int64]
    st_online: NDArray[np.bool_]
    st_received: NDArray[np.int64]
    st_retained: NDArray[np.bool_]
    st_dup: NDArray[np.bool_]  # redelivered by the broker (MQTT DUP)
    rejects: list[Reject] = field(default_factory=list)
    messages: int = 0
    # (site, gateway id, first row, end row): readings that came through a gateway
    gateways: list[tuple[str, str, int, int]] = field(default_factory=list)

    @property
    def readings(self) -> int:
        return int(self.slot.size)

    @property
    def events(self) -> int:
        return int(self.ev_slot.size)


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _ts(obj: dict[str, Any]) -> int:
    ts = obj.get("ts")
    if ts is None:
        raise _Invalid("missing_ts", "`ts` is missing (an integer, epoch milliseconds)")
    if type(ts) is not int:  # present but wrong: a value problem, not a missing field
        raise _Invalid("bad_value", f"`ts` {ts!r} is not an integer (epoch milliseconds)")
    if not MIN_TS_MS <= ts < MAX_TS_MS:
        if MIN_TS_MS // 1000 <= ts < MAX_TS_MS // 1000:
            raise _Invalid(
                "bad_value",
                f"`ts` {ts} looks like epoch seconds: send epoch milliseconds ({ts}000)",
            )
        raise _Invalid(
            "bad_value", f"`ts` {ts} is outside 2000-01-01..2100-01-01 (epoch milliseconds)"
        )
    return ts


def _seq(obj: dict[str, Any]) -> int:
    seq = obj.get("seq")
    if seq is None:
        raise _Invalid("missing_seq", "`seq` is missing (an integer in 0..2^32-1)")
    if type(seq) is not int or not 0 <= seq < SEQ_MODULUS:
        raise _Invalid("bad_value", f"`seq` {seq!r} is not an integer in 0..2^32-1")
    return seq


def _values_flat(
    v: object, base: int, pos: list[int], vals: list[float]
) -> dict[str, float] | None:
    """`_values` into flat (row * N_READINGS + column, value) lists: no list per
    row. On a bad value the caller truncates what this reading appended."""
    if v is None:
        return None
    if type(v) is not dict:
        raise _Invalid("bad_payload", "`v` must be an object of reading name -> number")
    extra: dict[str, float] | None = None
    index_of = READING_INDEX.get
    for name, value in v.items():
        kind = type(value)
        if kind is float:
            if value - value != 0.0:  # NaN or infinity
                raise _Invalid("bad_value", f"reading {name!r} is not finite")
        elif kind is int and -_INT_FLOAT_MAX < value < _INT_FLOAT_MAX:
            value = float(value)
        else:
            value = _number(name, value)
        index = index_of(name)
        if index is not None and not -MAX_READING_ABS <= value <= MAX_READING_ABS:
            raise _Invalid("bad_value", f"reading {name!r} is out of range (|value| > 1e12)")
        if index is None:
            if "\x00" in name:  # PostgreSQL jsonb cannot hold NUL
                raise _Invalid("bad_payload", "reading name contains a NUL character")
            if extra is None:
                extra = {}
            extra[name] = value
        else:
            pos.append(base + index)
            vals.append(value)
    return extra


def _number(name: str, value: object) -> float:
    """A reading that is not a float: an int (made float) or a `bad_value`."""
    if type(value) is int:
        number = float(value)
        if math.isinf(number):
            raise _Invalid("bad_value", f"reading {name!r} is out of range")
        return number
    raise _Invalid("bad_value", f"reading {name!r} is not a number ({_json_type(value)})")


def _json_type(value: object) -> str:
    """What a firmware engineer wrote, in JSON's words (not Python's NoneType)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _JSON_TYPES.get(type(value), type(value).__name__)


_JSON_TYPES: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}
_V = operator.methodcaller("get", "v", ())  # a reading's values, () when it has none
_NO_V = "`v` is missing (an empty object for a heartbeat)"


def _may_repeat_a_key(payload: bytes, keys: int) -> bool:
    """More `":` in the bytes than keys parsed: a key may be given twice (JSON
    keeps the last, so one reading would silently replace another). A cheap
    bound, in C; a string holding `":` only costs the strict parse below."""
    return payload.count(b'":') > keys


def _strict(payload: bytes) -> Any:
    """`payload` parsed again, every object a `Pairs` that names a repeated key
    (None if this parser refuses what orjson took: nesting deeper than its
    recursion limit)."""
    try:
        return json.loads(payload, object_pairs_hook=pairs)
    except (RecursionError, ValueError):
        return None


def _no_repeated_key(payload: bytes) -> None:
    """A `bad_payload` when a key is given twice (called when `_may_repeat_a_key`)."""
    key = repeated(_strict(payload))
    if key is not None:
        raise _Invalid("bad_payload", f"key {key!r} is given twice (JSON keeps one)")


def _object(payload: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _Invalid("invalid_json", f"not valid UTF-8 JSON: {exc}") from None
    if type(obj) is not dict:
        raise _Invalid("invalid_json", "payload must be a JSON object")
    return obj


class Decoder:
    """Decodes bursts against one registry snapshot (replace it when the registry changes)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        # topic -> (topic type, device or None, reject reason or None); topics repeat
        # per device, so classifying each once keeps the per-message cost to one lookup.
        # A registered device's own topics are bounded by the registry; any other
        # (a gateway's batches, rejects: another site's name on a known device
        # too) go to a small cache that starts over when full: made-up topics (up
        # to 64 KiB each) must not grow memory.
        self._topics: dict[str, tuple[str, Device | None, str | None, str]] = {}
        self._others: dict[str, tuple[str, Device | None, str | None, str]] = {}
        # Gateway readings' device ids already checked (pattern, registered).
        self._gateway_devices: dict[str, Device] = {}

    def _classify(self, topic: str) -> tuple[str, Device | None, str | None, str]:
        parts = topic.split("/")
        if len(parts) == 5 and parts[0] == "fs" and parts[1] == "v1":
            _, _, site, device_id, what = parts
            if what == "cmd":
                return ("cmd", None, None, "")
            if what not in ("telemetry", "event", "status"):
                return ("bad", None, "bad_topic", f"unknown topic type {what!r}")
            if not (ID_RE.match(site) and ID_RE.match(device_id)):
                return ("bad", None, "bad_topic", "site and device must match [A-Za-z0-9_-]{1,64}")
            device = self.registry.get(device_id)
            if device is None:
                return (what, None, "unknown_device", f"device {device_id!r} is not registered")
            if device.site != site:
                return (
                    what,
                    device,
                    "site_mismatch",
                    f"device {device_id!r} is registered at site {device.site!r}, not {site!r}",
                )
            return (what, device, None, "")
        if (
            len(parts) == 6
            and parts[0] == "fs"
            and parts[1] == "v1"
            and parts[3] == "gateway"
            and parts[5] == "batch"
            and ID_RE.match(parts[2])
            and ID_RE.match(parts[4])
        ):
            # Gateways need not be registered (contract), but an id that is
            # registered belongs to its site: a device account must not speak
            # for another site's devices through a gateway topic.
            known = self.registry.get(parts[4])
            if known is not None and known.site != parts[2]:
                return (
                    "batch",
                    None,
                    "site_mismatch",
                    f"gateway {parts[4]!r} is registered at site {known.site!r}, not {parts[2]!r}",
                )
            return ("batch", None, None, parts[2])
        return ("bad", None, "bad_topic", "not a topic of contract v1")

    def classify(self, topic: str) -> tuple[str, Device | None, str | None, str]:
        found = self._topics.get(topic) or self._others.get(topic)
        if found is None:
            found = self._classify(topic)
            if found[1] is not None and found[2] is None:  # a registered device's own topic
                self._topics[topic] = found
            elif len(topic) <= OTHER_TOPIC_MAX_LEN:
                if len(self._others) >= OTHER_TOPICS_MAX:
                    self._others.clear()
                self._others[topic] = found
        return found

    def decode(self, burst: Sequence[RawMessage]) -> DecodedBatch:
        slots: list[int] = []
        tss: list[int] = []
        seqs: list[int] = []
        received: list[int] = []
        # Readings' values as flat (row * N_READINGS + column, value) pairs.
        pos: list[int] = []
        vals: list[float] = []
        extra: dict[int, dict[str, float]] = {}
        ev: list[tuple[int, int, int, int, int]] = []
        ev_detail: list[str | None] = []
        st: list[tuple[int, bool, int, bool, bool]] = []
        rejects: list[Reject] = []
        gateways: list[tuple[str, str, int, int]] = []
        classify = self.classify

        for message in burst:
            topic, payload, arrival, retained = message[:4]
            what, device, reason, detail = classify(topic)
            if what == "cmd":
                continue
            size = message.size if message.size >= 0 else len(payload)
            if size > MAX_PAYLOAD_BYTES:
                rejects.append(
                    Reject(
                        arrival,
                        topic,
                        "too_large",
                        payload,
                        f"{size} bytes > {MAX_PAYLOAD_BYTES}",
                        device.id if device else None,
                        size,
                    )
                )
                continue
            if reason is not None:
                rejects.append(
                    Reject(arrival, topic, reason, payload, detail, device.id if device else None)
                )
                continue
            try:
                if what == "telemetry":
                    assert device is not None
                    obj = _object(payload)
                    ts, seq = _ts(obj), _seq(obj)
                    mark = len(pos)
                    try:
                        v = obj.get("v")
                        if v is None:  # (as in a gateway's batch: the schema requires it)
                            raise _Invalid("bad_payload", _NO_V)
                        unknown = _values_flat(v, len(slots) * N_READINGS, pos, vals)
                        if _may_repeat_a_key(payload, len(obj) + len(v)):
                            _no_repeated_key(payload)
                    except _Invalid:
                        del pos[mark:], vals[mark:]
                        raise
                    if unknown:
                        extra[len(slots)] = unknown
                    slots.append(device.slot)
                    tss.append(ts)
                    seqs.append(seq)
                    received.append(arrival)
                elif what == "batch":
                    first = len(slots)
                    self._gateway(
                        topic,
                        payload,
                        arrival,
                        detail,
                        slots,
                        tss,
                        seqs,
                        received,
                        pos,
                        vals,
                        extra,
                        rejects,
                    )
                    if len(slots) > first:
                        gateways.append((detail, topic.split("/")[4], first, len(slots)))
                elif what == "event":
                    assert device is not None
                    obj = _object(payload)
                    ts, seq = _ts(obj), _seq(obj)
                    if _may_repeat_a_key(payload, len(obj)):
                        _no_repeated_key(payload)
                    kind = obj.get("type")
                    if kind is None:
                        raise _Invalid(
                            "bad_payload",
                            f"`type` is missing (one of {device.kind} events "
                            f"{list(ALL_KIND_EVENTS[device.kind])})",
                        )
                    if kind not in ALL_KIND_EVENTS[device.kind]:
                        raise _Invalid(
                            "bad_payload",
                            f"event type {kind!r} is not one of {device.kind} events "
                            f"{list(ALL_KIND_EVENTS[device.kind])}",
                        )
                    text = obj.get("detail")
                    if text is not None and (type(text) is not str or "\x00" in text):
                        raise _Invalid("bad_payload", "`detail` must be a string without NUL")
                    ev.append((device.slot, ts, seq, arrival, EVENT_CODE[kind]))
                    ev_detail.append(text)
                else:  # status
                    assert device is not None
                    state = payload.strip()
                    if state not in (b"online", b"offline"):
                        raise _Invalid("bad_payload", "status must be `online` or `offline`")
                    st.append((device.slot, state == b"online", arrival, retained, message.dup))
            except _Invalid as exc:
                rejects.append(
                    Reject(
                        arrival,
                        topic,
                        exc.reason,
                        payload,
                        exc.detail,
                        device.id if device else None,
                    )
                )

        n = len(slots)
        values = np.full((n, N_READINGS), np.nan)
        if pos:
            values.reshape(-1)[np.array(pos, dtype=np.int64)] = vals
        ev_arr = np.array(ev, dtype=np.int64).reshape(-1, 5)
        st_slot = np.array([s[0] for s in st], dtype=np.int64)
        return DecodedBatch(
            slot=np.array(slots, dtype=np.int64),
            ts=np.array(tss, dtype=np.int64),
            seq=np.array(seqs, dtype=np.int64),
            received=np.array(received, dtype=np.int64),
            values=values,
            extra=extra,
            ev_slot=ev_arr[:, 0].copy(),
            ev_ts=ev_arr[:, 1].copy(),
            ev_seq=ev_arr[:, 2].copy(),
            ev_received=ev_arr[:, 3].copy(),
            ev_code=ev_arr[:, 4].astype(np.int16),
            ev_detail=ev_detail,
            st_slot=st_slot,
            st_online=np.array([s[1] for s in st], dtype=np.bool_),
            st_received=np.array([s[2] for s in st], dtype=np.int64),
            st_retained=np.array([s[3] for s in st], dtype=np.bool_),
            st_dup=np.array([s[4] for s in st], dtype=np.bool_),
            rejects=rejects,
            messages=len(burst),
            gateways=gateways,
        )

    def _gateway(
        self,
        topic: str,
        payload: bytes,
        arrival: int,
        site: str,
        slots: list[int],
        tss: list[int],
        seqs: list[int],
        received: list[int],
        pos: list[int],
        vals: list[float],
        extra: dict[int, dict[str, float]],
        rejects: list[Reject],
    ) -> None:
        obj = _object(payload)
        _ts(obj)  # the gateway's send time: required, otherwise informational
        readings = obj.get("readings")
        if type(readings) is not list:
            raise _Invalid("bad_payload", "`readings` must be a list")
        repeated = self._repeated_in_batch(payload, obj, readings)
        known = self._gateway_devices
        values_flat = _values_flat
        for i, reading in enumerate(readings):
            # The common case inline: a known device of this site, int ts and seq
            # in range; anything else goes through the checks that name the fault.
            device: Device | None = None
            mark = len(pos)
            try:
                if type(reading) is not dict:
                    raise _Invalid("bad_payload", f"reading {i} is not an object")
                if repeated and i in repeated:
                    raise _Invalid(
                        "bad_payload", f"key {repeated[i]!r} is given twice (JSON keeps one)"
                    )
                device_id = reading.get("device")
                device = known.get(device_id) if type(device_id) is str else None
                if device is None:
                    device = self._gateway_device(device_id, i)
                if device.site != site:
                    raise _Invalid(
                        "site_mismatch",
                        f"device {device_id!r} is registered at site {device.site!r}, not {site!r}",
                    )
                ts = reading.get("ts")
                if type(ts) is not int or not MIN_TS_MS <= ts < MAX_TS_MS:
                    ts = _ts(reading)
                seq = reading.get("seq")
                if type(seq) is not int or not 0 <= seq < SEQ_MODULUS:
                    seq = _seq(reading)
                v = reading.get("v")
                if v is None:
                    raise _Invalid(
                        "bad_payload",
                        "an event cannot travel in a batch (v1): publish it on the device's "
                        "event topic"
                        if "type" in reading
                        else _NO_V,
                    )
                unknown = values_flat(v, len(slots) * N_READINGS, pos, vals)
            except _Invalid as exc:
                del pos[mark:], vals[mark:]
                rejects.append(
                    Reject(
                        arrival,
                        topic,
                        exc.reason,
                        orjson.dumps(reading),
                        f"reading {i} of the batch: {exc.detail}",
                        device.id if device else None,
                    )
                )
                continue
            if unknown:
                extra[len(slots)] = unknown
            slots.append(device.slot)
            tss.append(ts)
            seqs.append(seq)
            received.append(arrival)

    @staticmethod
    def _repeated_in_batch(
        payload: bytes, obj: dict[str, Any], readings: list[Any]
    ) -> dict[int, str] | None:
        """The batch's readings that give a key twice (index -> key), each a reject;
        a key repeated outside them rejects the batch. Counted in C: a few tens
        of ns per reading on the common path."""
        try:
            keys = len(obj) + sum(map(len, readings))
            keys += sum(map(len, map(_V, readings)))
        except (TypeError, AttributeError):  # a reading, or its `v`, not an object
            keys = 0
        if not _may_repeat_a_key(payload, keys):
            return None
        strict = _strict(payload)
        if not isinstance(strict, Pairs):
            return None
        if strict.dup is not None:
            raise _Invalid("bad_payload", f"key {strict.dup!r} is given twice (JSON keeps one)")
        found = {i: key for i, r in enumerate(strict["readings"]) if (key := repeated(r))}
        outside = next(
            (k for k in map(repeated, (v for n, v in strict.items() if n != "readings")) if k),
            None,
        )
        if outside is not None:
            raise _Invalid("bad_payload", f"key {outside!r} is given twice (JSON keeps one)")
        return found or None

    def _gateway_device(self, device_id: object, i: int) -> Device:
        """The device a gateway reading names, or the reject that says why not;
        a valid registered id is remembered for the next readings."""
        if type(device_id) is not str or not ID_RE.match(device_id):
            raise _Invalid("bad_payload", f"reading {i}: `device` must be a device id")
        device = self.registry.get(device_id)
        if device is None:
            raise _Invalid("unknown_device", f"device {device_id!r} is not registered")
        if len(self._gateway_devices) < 1_000_000:
            self._gateway_devices[device_id] = device
        return device
