"""Gateway batches built from columns (`--speed max`): what ingest decodes is what was meant.

The columnar path (device_sim/gwtext.py) writes readings as text pieces picked
from tables; the reference path serializes one dict per reading with orjson.
Both run on the same seed, and the columnar batches go through ingest's own
decoder: same devices, ts, seq and values, bit for bit, and nothing rejected.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pytest

from device_sim import contract as c
from device_sim.estate import generate_estate
from device_sim.gwtext import ReadingText, batch_payloads, single_row
from device_sim.payload_schemas import errors
from device_sim.physics import BOUNDS, DECIMALS, INTEGER_READINGS, finish
from device_sim.scenarios import LIBRARY
from device_sim.timeline import Message, Simulation, simulate
from firesafe.contract import READING_INDEX, READINGS
from ingest.decode import Decoder, RawMessage
from ingest.registry import Device, Registry

START = 1_764_072_000_000

Row = tuple[int, int, int, tuple[float | None, ...]]


def _sims() -> tuple[Simulation, Simulation]:
    estate = generate_estate(3, 80, seed=4)
    scenarios = [n for n in LIBRARY if n != "malformed"]
    fast = simulate(
        estate, scenarios, duration_s=1800, seed=3, start_ms=START, gateway_fraction=1.0
    )
    return fast, dataclasses.replace(fast, columnar=False)


@pytest.fixture(scope="module")
def sims() -> tuple[Simulation, Simulation]:
    return _sims()


def _registry(sim: Simulation) -> Registry:
    return Registry(
        Device(d.id, i + 1, d.site, d.building, d.floor, d.zone, d.kind, float(d.interval_s))
        for i, d in enumerate(sim.estate.devices)
    )


def _batches(sim: Simulation) -> list[Message]:
    return [m for m in sim.messages if "/gateway/" in m.topic]


def _meant(sim: Simulation, registry: Registry) -> Counter[tuple[str, Row]]:
    """The reference path's readings, per batch topic, as the decoder would hold them."""
    out: Counter[tuple[str, Row]] = Counter()
    for m in _batches(sim):
        for r in orjson.loads(m.payload)["readings"]:
            device = registry.get(r["device"])
            assert device is not None
            values: list[float | None] = [None] * len(READINGS)
            for name, x in r["v"].items():
                values[READING_INDEX[name]] = float(x)
            out[(m.topic, (device.slot, r["ts"], r["seq"], tuple(values)))] += 1
    return out


def _decoded(sim: Simulation, registry: Registry) -> Counter[tuple[str, Row]]:
    decoder = Decoder(registry)
    out: Counter[tuple[str, Row]] = Counter()
    for m in _batches(sim):
        batch = decoder.decode([RawMessage(m.topic, m.payload, m.ts_ms, qos=1)])
        assert batch.rejects == [], batch.rejects[:3]
        assert batch.readings == m.readings
        for i in range(batch.readings):
            row = tuple(None if math.isnan(x) else x for x in batch.values[i].tolist())
            out[(m.topic, (int(batch.slot[i]), int(batch.ts[i]), int(batch.seq[i]), row))] += 1
    return out


def test_max_speed_batches_decode_to_the_readings_meant(
    sims: tuple[Simulation, Simulation],
) -> None:
    fast, reference = sims
    registry = _registry(fast)
    decoded = _decoded(fast, registry)
    meant = _meant(reference, registry)
    assert sum(decoded.values()) > 10_000
    assert decoded == meant
    # And the rest of the traffic (events, status, readings under stream effects) is the same.
    rest = [m for m in fast.messages if "/gateway/" not in m.topic]
    assert rest == [m for m in reference.messages if "/gateway/" not in m.topic]


def test_max_speed_batches_follow_the_contract(sims: tuple[Simulation, Simulation]) -> None:
    fast, _ = sims
    batches = _batches(fast)
    assert batches
    for m in batches:
        assert len(m.payload) <= c.MAX_PAYLOAD_BYTES
        assert m.qos == 1
        assert not m.retain
        body: dict[str, Any] = orjson.loads(m.payload)
        assert errors("batch", body) == [], m.topic
        assert body["ts"] == m.ts_ms
        assert len(body["readings"]) == m.readings
        # Compact JSON, as orjson writes it: a device's text, not a pretty-printer's.
        assert m.payload == orjson.dumps(body)


@pytest.mark.parametrize("name", READINGS)
def test_value_text_reads_back_as_the_rounded_value(name: str) -> None:
    lo, hi = BOUNDS[name]
    rng = np.random.default_rng(7)
    step = 10.0 ** -DECIMALS[name]
    column = np.concatenate(
        [
            rng.uniform(lo - 5, hi + 5, 2_000),  # clipped at both ends
            [lo, hi, lo + step / 2, hi - step / 2, -0.0, 0.0004999, 23.455, 0.1 + 0.2],
            np.arange(-3, 3) * step / 2 + (lo + hi) / 2,  # rounding ties around the middle
        ]
    )
    text = ReadingText(["D1"], ["smoke"])
    for first in (True, False):
        pieces = text._value_text(name, first, column).tolist()
        want = finish(name, column)
        for piece, value in zip(pieces, want, strict=True):
            key, _, number = piece.partition(":")
            assert key == ("" if first else ",") + f'"{name}"'
            parsed = orjson.loads(number)
            assert parsed == value, (piece, value)
            assert type(parsed) is type(value), (piece, value)
            if name in INTEGER_READINGS:
                assert isinstance(parsed, int)


def test_a_non_finite_value_is_refused_not_written() -> None:
    text = ReadingText(["D1"], ["heat"])
    with pytest.raises(ValueError, match="non-finite"):
        text._value_text("temperature", True, np.array([21.0, math.nan]))


def test_batches_split_to_stay_under_the_size_limit() -> None:
    reading = orjson.dumps({"device": "D" * 64, "ts": START, "seq": 1, "v": {"co": 1.5}}).decode()
    rows = np.concatenate([single_row(reading) for _ in range(900)])
    out = batch_payloads(START, rows, max_readings=400, max_bytes=20_000)
    assert sum(n for _, n in out) == 900
    for payload, n in out:
        assert len(payload) <= 20_000
        body = orjson.loads(payload)
        assert len(body["readings"]) == n
        assert body["readings"][0] == orjson.loads(reading)
