"""The burst decoder: every message lands in exactly one place."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from firesafe.contract import READING_INDEX
from ingest.decode import DecodedBatch, Decoder, RawMessage
from ingest.registry import Device, Registry
from tests.helpers import reads_in_chinese

T0 = 1_764_072_000_000  # 2025-11-25: a plausible device clock

REG = Registry(
    [
        Device("D1", 1, "S1", "B", "1", "Z1", "smoke", 10.0),
        Device("D2", 2, "S1", "B", "1", "Z1", "multi", 10.0),
        Device("E1", 3, "S1", "B", "1", "Z2", "evac", 60.0),
        Device("X9", 4, "S2", "B", "1", "Z1", "heat", 10.0),
    ]
)


def msg(topic: str, payload: object, at: int = 1000) -> RawMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(topic, raw, at)


def decode(*messages: RawMessage) -> DecodedBatch:
    return Decoder(REG).decode(list(messages))


def test_telemetry_goes_to_columns_with_nan_for_absent_readings() -> None:
    b = decode(msg("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 7, "v": {"obscuration": 0.8}}))
    assert b.slot.tolist() == [1]
    assert b.ts.tolist() == [T0]
    assert b.seq.tolist() == [7]
    assert b.values[0, READING_INDEX["obscuration"]] == 0.8
    assert math.isnan(b.values[0, READING_INDEX["temperature"]])
    assert not b.rejects


def test_unknown_reading_names_are_kept_aside() -> None:
    b = decode(msg("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"foo": 2, "co": 1}}))
    assert b.extra == {0: {"foo": 2.0}}
    assert b.values[0, READING_INDEX["co"]] == 1.0


def test_heartbeat_without_readings_is_a_row() -> None:
    b = decode(msg("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {}}))
    assert b.readings == 1
    assert np.isnan(b.values).all()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("fs/v1/S1/D1/telemetry", b"{not json", "invalid_json"),
        ("fs/v1/S1/D1/telemetry", b"\xff\xfe", "invalid_json"),
        ("fs/v1/S1/D1/telemetry", [1, 2], "invalid_json"),
        ("fs/v1/S1/D1/telemetry", {"seq": 1, "v": {}}, "missing_ts"),
        ("fs/v1/S1/D1/telemetry", {"ts": "5", "seq": 1, "v": {}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0 + 0.5, "seq": 1, "v": {}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "v": {}}, "missing_seq"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 2**32, "v": {}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": -1, "v": {}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"co": None}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"co": True}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"co": "1"}}, "bad_value"),
        (
            "fs/v1/S1/D1/telemetry",
            b'{"ts": 1764072000000, "seq": 1, "v": {"co": 1e999}}',
            "invalid_json",
        ),
        # Finite, but no measurement: its sums would overflow the database's floats.
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"obscuration": 1e308}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"co": -(10**13)}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": [1]}, "bad_payload"),
        # The schema requires `v` (an empty object for a heartbeat), as a batch does.
        ("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1}, "bad_payload"),
        ("fs/v1/S1/D1/event", {"ts": T0, "seq": 1}, "bad_payload"),
        ("fs/v1/S1/NOPE/telemetry", {"ts": T0, "seq": 1, "v": {}}, "unknown_device"),
        ("fs/v1/S2/D1/telemetry", {"ts": T0, "seq": 1, "v": {}}, "site_mismatch"),
        ("fs/v1/S1/D1/other", {"ts": T0, "seq": 1}, "bad_topic"),
        ("fs/v2/S1/D1/telemetry", {"ts": T0, "seq": 1}, "bad_topic"),
        ("fs/v1/S1/D 1/telemetry", {"ts": T0, "seq": 1}, "bad_topic"),
        ("fs/v1/S1/D1/event", {"ts": T0, "seq": 1, "type": "activated"}, "bad_payload"),
        (
            "fs/v1/S1/D1/event",
            {"ts": T0, "seq": 1, "type": "fire_alarm", "detail": 3},
            "bad_payload",
        ),
        ("fs/v1/S1/D1/status", b"maybe", "bad_payload"),
        # Event time outside 2000..2100: a broken clock, never a datetime overflow later.
        ("fs/v1/S1/D1/event", {"ts": 253402300800000, "seq": 1, "type": "activated"}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": 4102444800000, "seq": 1, "v": {}}, "bad_value"),
        ("fs/v1/S1/D1/telemetry", {"ts": 946684799999, "seq": 1, "v": {}}, "bad_value"),
        (
            "fs/v1/S1/D1/telemetry",
            b'{"ts": 1764072000000, "seq": 1, "v": {}, "pad": "' + b"x" * 70000 + b'"}',
            "too_large",
        ),
    ],
)
def test_bad_input_is_rejected_with_its_reason(topic: str, payload: object, reason: str) -> None:
    m = msg(topic, payload, at=4242)
    good = msg("fs/v1/S1/D2/telemetry", {"ts": T0 + 9, "seq": 3, "v": {"co": 2.5}})
    b = decode(m, good)
    assert [r.reason for r in b.rejects] == [reason]
    r = b.rejects[0]
    assert (r.topic, r.payload, r.received_ms) == (topic, m.payload, 4242)
    assert r.detail
    reads_in_chinese(r.detail)
    # The other message of the burst is unaffected.
    assert b.slot.tolist() == [2]
    assert b.values[0, READING_INDEX["co"]] == 2.5


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"ts": T0 // 1000, "seq": 1, "v": {}}, f"send epoch milliseconds ({T0 // 1000}000)"),
        ({"ts": T0, "seq": 1, "v": {"co": None}}, "is not a number (null)"),
        ({"ts": T0, "seq": 1, "v": {"co": True}}, "is not a number (true)"),
        ({"ts": T0, "seq": 1, "v": {"co": "1"}}, "is not a number (a string)"),
        ({"ts": T0, "seq": 1, "v": {"co": [1]}}, "is not a number (an array)"),
    ],
)
def test_a_firmware_engineer_reads_what_to_fix(payload: object, says: str) -> None:
    """The common slips are named in JSON's words, not Python's (an outside
    check read "(NoneType)" and "outside 2000-01-01..2100-01-01" for seconds)."""
    [r] = decode(msg("fs/v1/S1/D1/telemetry", payload)).rejects
    assert says in r.detail, r.detail


def test_a_key_given_twice_is_a_reject_not_a_silent_choice() -> None:
    """JSON keeps one of a repeated key: `{"obscuration": 0.2, "obscuration": 99}`
    was stored as 99 and fed detection (two outside checks; the API refuses
    such bodies). A message, or a batch's reading, that repeats a key is a
    reject saying which; a `":` inside a string is no repeated key."""
    twice = b'{"ts": %d, "seq": 1, "v": {"obscuration": 0.2, "obscuration": 99}}' % T0
    outer = b'{"ts": %d, "seq": 1, "seq": 2, "v": {}}' % T0
    event = b'{"ts": %d, "seq": 3, "type": "fault", "type": "restore"}' % T0
    quoted = b'{"ts": %d, "seq": 4, "type": "fault", "detail": "x\\":y"}' % T0
    fine = b'{"ts": %d, "seq": 5, "v": {"obscuration": 0.2}}' % T0
    b = decode(
        RawMessage("fs/v1/S1/D1/telemetry", twice, 1),
        RawMessage("fs/v1/S1/D1/telemetry", outer, 1),
        RawMessage("fs/v1/S1/D1/event", event, 1),
        RawMessage("fs/v1/S1/D1/event", quoted, 1),
        RawMessage("fs/v1/S1/D2/telemetry", fine, 1),
    )
    assert [(r.reason, r.detail) for r in b.rejects] == [
        ("bad_payload", "key 'obscuration' is given twice (JSON keeps one)"),
        ("bad_payload", "key 'seq' is given twice (JSON keeps one)"),
        ("bad_payload", "key 'type' is given twice (JSON keeps one)"),
    ]
    assert b.seq.tolist() == [5]
    assert b.ev_seq.tolist() == [4]
    for r in b.rejects:
        reads_in_chinese(r.detail)
    batch = (
        b'{"ts": %d, "readings": [{"device": "D1", "ts": %d, "seq": 6, "v": {"co": 1}},'
        b' {"device": "D2", "ts": %d, "seq": 7, "v": {"co": 1, "co": 80}},'
        b' {"device": "D2", "ts": %d, "seq": 8, "device": "D1", "v": {}}]}'
    ) % (T0 + 9, T0, T0 + 1, T0 + 2)
    g = decode(RawMessage("fs/v1/S1/gateway/G1/batch", batch, 1))
    assert g.seq.tolist() == [6]
    assert [r.detail for r in g.rejects] == [
        "reading 1 of the batch: key 'co' is given twice (JSON keeps one)",
        "reading 2 of the batch: key 'device' is given twice (JSON keeps one)",
    ]
    # Nested deeper than the strict parser goes (orjson takes it): no crash.
    deep = b'{"ts": %d, "seq": 9, "v": {}, "x": %s%s, "y": "\\":"}' % (T0, b"[" * 1000, b"]" * 1000)
    assert decode(RawMessage("fs/v1/S1/D1/telemetry", deep, 1)).seq.tolist() == [9]
    whole = b'{"ts": %d, "ts": %d, "readings": []}' % (T0, T0)
    [r] = decode(RawMessage("fs/v1/S1/gateway/G1/batch", whole, 1)).rejects
    assert r.detail == "key 'ts' is given twice (JSON keeps one)"


def test_gateway_batch_rejects_only_its_bad_readings() -> None:
    b = decode(
        msg(
            "fs/v1/S1/gateway/G1/batch",
            {
                "ts": T0 + 100,
                "readings": [
                    {"device": "D1", "ts": T0 + 90, "seq": 1, "v": {"obscuration": 0.1}},
                    {"device": "D2", "ts": T0 + 91, "seq": 2, "v": {"co": None}},
                    {"device": "X9", "ts": T0 + 92, "seq": 3, "v": {}},
                    {"device": "ZZ", "ts": T0 + 93, "seq": 4, "v": {}},
                    {"device": "D2", "ts": T0 + 94, "seq": 5, "v": {"humidity": 40}},
                ],
            },
        )
    )
    assert b.slot.tolist() == [1, 2]
    assert b.ts.tolist() == [T0 + 90, T0 + 94]
    assert [r.reason for r in b.rejects] == ["bad_value", "site_mismatch", "unknown_device"]
    assert orjson.loads(b.rejects[0].payload)["seq"] == 2
    for r in b.rejects:
        reads_in_chinese(r.detail)


def test_gateway_batch_without_outer_ts_is_rejected_whole() -> None:
    b = decode(msg("fs/v1/S1/gateway/G1/batch", {"readings": []}))
    assert [r.reason for r in b.rejects] == ["missing_ts"]


def test_events_status_and_own_commands() -> None:
    b = decode(
        msg("fs/v1/S1/D1/event", {"ts": T0, "seq": 9, "type": "fire_alarm", "detail": "x"}),
        msg("fs/v1/S1/E1/status", b"offline"),
        msg("fs/v1/S1/E1/cmd", {"ts": T0 + 1, "cmd": "normal"}),
    )
    assert b.ev_slot.tolist() == [1]
    assert b.ev_seq.tolist() == [9]
    assert b.ev_detail == ["x"]
    assert b.st_slot.tolist() == [3]
    assert b.st_online.tolist() == [False]
    assert not b.rejects
    assert b.readings == 0


def test_nul_characters_cannot_reach_the_database() -> None:
    b = decode(
        msg("fs/v1/S1/D1/telemetry", {"ts": T0, "seq": 1, "v": {"a\u0000": 1}}),
        msg("fs/v1/S1/D1/event", {"ts": T0, "seq": 2, "type": "fault", "detail": "a\u0000"}),
    )
    assert [r.reason for r in b.rejects] == ["bad_payload", "bad_payload"]
    assert all("\x00" not in r.detail for r in b.rejects)


def test_ts_bounds_are_inclusive_of_the_contract_range() -> None:
    first, last = 946_684_800_000, 4_102_444_799_999  # 2000-01-01, 2099-12-31T23:59:59.999
    b = decode(
        msg("fs/v1/S1/D1/telemetry", {"ts": first, "seq": 1, "v": {}}),
        msg("fs/v1/S1/D1/telemetry", {"ts": last, "seq": 2, "v": {}}),
    )
    assert b.ts.tolist() == [first, last]
    assert not b.rejects


def test_payload_cut_short_on_arrival_is_judged_by_its_original_size() -> None:
    m = RawMessage("fs/v1/S1/D1/telemetry", b'{"ts": 1', 7, size=9_000_000)
    b = decode(m)
    assert [r.reason for r in b.rejects] == ["too_large"]
    assert "9000000 bytes" in b.rejects[0].detail


def test_a_registered_device_cannot_speak_for_another_site_through_a_gateway_topic() -> None:
    """Device X9 (site S2) publishing S1's gateway topic with S1's detectors."""
    spoof = {"ts": T0, "readings": [{"device": "D1", "ts": T0, "seq": 1, "v": {"obscuration": 20}}]}
    b = decode(msg("fs/v1/S1/gateway/X9/batch", spoof))
    assert b.slot.size == 0
    assert [r.reason for r in b.rejects] == ["site_mismatch"]
    # An unregistered gateway id (the contract's default) and a gateway id
    # registered at the topic's own site are heard as before.
    assert decode(msg("fs/v1/S1/gateway/GW-1/batch", spoof)).slot.tolist() == [1]
    assert decode(msg("fs/v1/S1/gateway/E1/batch", spoof)).slot.tolist() == [1]


def test_reading_magnitudes_up_to_the_limit_are_stored_and_unknown_names_are_not_limited() -> None:
    b = decode(
        msg(
            "fs/v1/S1/D2/telemetry",
            {"ts": T0, "seq": 1, "v": {"co": 1e12, "humidity": -1e12, "gauge": 1e308}},
        )
    )
    assert not b.rejects
    assert b.values[0, READING_INDEX["co"]] == 1e12
    assert b.values[0, READING_INDEX["humidity"]] == -1e12
    assert b.extra == {0: {"gauge": 1e308}}
