"""The gateway decoder's fast path (flat value columns, remembered device ids)
against a plain reference: the same columns, the same rejects, in any order."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import orjson

from firesafe.contract import READING_INDEX, READINGS
from ingest.decode import Decoder, RawMessage
from ingest.registry import Device, Registry

T0 = 1_764_072_000_000
EARLIEST, LATEST = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 .. 2100-01-01 (contract)
REG = Registry(
    [
        Device("D1", 1, "S1", "B", "1", "Z1", "smoke", 10.0),
        Device("D2", 2, "S1", "B", "1", "Z1", "multi", 10.0),
        Device("X9", 4, "S2", "B", "1", "Z1", "heat", 10.0),
    ]
)
GOOD = {"ts": T0, "seq": 1}


def gateway(readings: list[Any], site: str = "S1") -> RawMessage:
    body = orjson.dumps({"ts": T0, "readings": readings})
    return RawMessage(f"fs/v1/{site}/gateway/G1/batch", body, 1000)


def test_a_bad_value_after_good_ones_leaves_nothing_behind() -> None:
    """The reading is rejected whole; its good values must not land in the next row."""
    b = Decoder(REG).decode(
        [
            gateway(
                [
                    {"device": "D1", **GOOD, "v": {"temperature": 21.0, "co": "x"}},
                    {"device": "D2", **GOOD, "v": {"humidity": 40.0}},
                ]
            )
        ]
    )
    assert b.slot.tolist() == [2]
    assert math.isnan(b.values[0, READING_INDEX["temperature"]])
    assert b.values[0, READING_INDEX["humidity"]] == 40.0
    assert [(r.reason, r.device_id) for r in b.rejects] == [("bad_value", "D1")]


def test_a_remembered_device_is_still_checked_against_the_gateways_site() -> None:
    decoder = Decoder(REG)
    decoder.decode([gateway([{"device": "D1", **GOOD, "v": {}}])])  # D1 now remembered
    b = decoder.decode([gateway([{"device": "D1", **GOOD, "seq": 2, "v": {}}], site="S2")])
    assert not b.slot.size
    assert [(r.reason, r.device_id) for r in b.rejects] == [("site_mismatch", "D1")]


def test_made_up_topics_do_not_grow_the_topic_cache() -> None:
    """The security check's flood: 12,000 messages on topics of 60,000
    characters took ingest from 464 to 803 MB (every topic was cached whole,
    up to a million of them). Topics of registered devices are still cached;
    the others only while short, and at most OTHER_TOPICS_MAX of them."""
    from ingest import decode

    decoder = Decoder(REG)
    msgs = [RawMessage(f"fs/v1/{n:08d}{'x' * 60_000}/d/telemetry", b"{}", 1000) for n in range(300)]
    msgs += [RawMessage(f"fs/v1/S1/U{n}/telemetry", b"{}", 1000) for n in range(25_000)]
    # a registered device under made-up sites: site_mismatch, not its own topic
    msgs += [RawMessage(f"fs/v1/X{n}/D1/telemetry", b"{}", 1000) for n in range(15_000)]
    msgs.append(RawMessage("fs/v1/S1/D1/telemetry", orjson.dumps({**GOOD, "v": {}}), 1000))
    b = decoder.decode(msgs)
    reasons = [r.reason for r in b.rejects]
    assert reasons.count("bad_topic") == 300
    assert reasons.count("unknown_device") == 25_000
    assert reasons.count("site_mismatch") == 15_000
    assert b.slot.tolist() == [1]
    cached = [*decoder._topics, *decoder._others]
    assert "fs/v1/S1/D1/telemetry" in cached
    assert len(cached) <= decode.OTHER_TOPICS_MAX + 1
    assert max(map(len, cached)) <= decode.OTHER_TOPIC_MAX_LEN


def test_a_batched_event_or_a_reading_without_v_is_a_reject_not_a_heartbeat() -> None:
    """Events are never batched in v1: one put into a batch would otherwise be
    stored as an empty reading and its alarm lost without a word."""
    b = Decoder(REG).decode(
        [
            gateway(
                [
                    {"device": "D1", **GOOD, "type": "fire_alarm"},
                    {"device": "D2", **GOOD},
                    {"device": "D2", **GOOD, "seq": 2, "v": {}},  # a heartbeat
                ]
            )
        ]
    )
    assert b.seq.tolist() == [2]
    assert [(r.reason, r.device_id) for r in b.rejects] == [
        ("bad_payload", "D1"),
        ("bad_payload", "D2"),
    ]
    assert "event topic" in b.rejects[0].detail
    assert "`v` is missing" in b.rejects[1].detail


def reference(readings: list[Any], site: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    """What each reading should become, written plainly."""
    rows, reasons = [], []
    for r in readings:
        if not isinstance(r, dict):
            reasons.append("bad_payload")
            continue
        d = r.get("device")
        if not isinstance(d, str) or not d or not all(c.isalnum() or c in "_-" for c in d):
            reasons.append("bad_payload")
            continue
        dev = REG.get(d)
        if dev is None:
            reasons.append("unknown_device")
            continue
        if dev.site != site:
            reasons.append("site_mismatch")
            continue
        ts, seq, v = r.get("ts"), r.get("seq"), r.get("v")
        if ts is None:
            reasons.append("missing_ts")
            continue
        if type(ts) is not int or not EARLIEST <= ts < LATEST:
            reasons.append("bad_value")
            continue
        if seq is None:
            reasons.append("missing_seq")
            continue
        if type(seq) is not int or not 0 <= seq < 2**32:
            reasons.append("bad_value")
            continue
        if v is None:  # missing `v`, or an event put into a batch
            reasons.append("bad_payload")
            continue
        row = [math.nan] * len(READINGS)
        bad = False
        for name, value in v.items():
            if type(value) not in (int, float) or not math.isfinite(value):
                bad = True
                break
            if name in READING_INDEX and abs(value) > 1e12:  # no measurement (decode.py)
                bad = True
                break
            if name in READING_INDEX:
                row[READING_INDEX[name]] = float(value)
        if bad:
            reasons.append("bad_value")
            continue
        rows.append((dev.slot, ts, seq, *row))
    return rows, reasons


def test_random_gateway_batches_decode_as_the_reference_says() -> None:
    rng = random.Random(14)
    decoder = Decoder(REG)
    choices: list[Any] = [
        lambda: {"device": rng.choice(["D1", "D2", "X9", "nope", "bad id", 7]), **GOOD},
        lambda: {
            "device": "D2",
            "ts": rng.choice([T0, T0 + 5, "x", 2**62, EARLIEST - 1]),
            "seq": 3,
        },
        lambda: {"device": "D1", "ts": T0, "seq": rng.choice([0, 2**32, -1, "1"])},
        lambda: {
            "device": rng.choice(["D1", "D2"]),
            **GOOD,
            "v": {
                rng.choice(READINGS): rng.choice([1, 2.5, -3.0, "x", None, 10**18]),
                rng.choice(READINGS): rng.uniform(-50, 50),
            },
        },
        lambda: rng.choice([[], "r", 5]),
    ]
    for _ in range(200):
        readings = [rng.choice(choices)() for _ in range(rng.randint(0, 8))]
        site = rng.choice(["S1", "S2"])
        b = decoder.decode([gateway(readings, site)])
        rows, reasons = reference(readings, site)
        got = [
            (int(s), int(t), int(q), *v)
            for s, t, q, v in zip(b.slot, b.ts, b.seq, b.values.tolist(), strict=True)
        ]
        assert len(got) == len(rows)
        for g, want in zip(got, rows, strict=True):
            assert np.array_equal(np.array(g, float), np.array(want, float), equal_nan=True)
        assert [r.reason for r in b.rejects] == reasons
