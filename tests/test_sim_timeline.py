"""The pure simulation: deterministic, schema-valid, physically what it claims."""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from typing import Any

import pytest

from device_sim import contract as c
from device_sim.estate import generate_estate
from device_sim.payload_schemas import errors
from device_sim.scenarios import LIBRARY
from device_sim.timeline import Message, Simulation, simulate

START = 1_764_072_000_000


def _topic_kind(topic: str) -> str:
    return "batch" if "/gateway/" in topic else topic.rsplit("/", 1)[1]


_SERIES: dict[int, dict[str, list[tuple[int, dict[str, Any]]]]] = {}


def _series(sim: Simulation, device: str) -> list[tuple[int, dict[str, Any]]]:
    """The readings of `device` (direct or via a gateway), in ts order."""
    if id(sim) not in _SERIES:
        index: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        for m in sim.messages:
            if m.topic.endswith("/telemetry"):
                body = json.loads(m.payload)
                index[m.topic.split("/")[3]].append((body["ts"], body["v"]))
            elif "/gateway/" in m.topic:
                for r in json.loads(m.payload)["readings"]:
                    index[r["device"]].append((r["ts"], r["v"]))
        for series in index.values():
            series.sort(key=lambda x: x[0])
        _SERIES[id(sim)] = index
    return _SERIES[id(sim)][device]


@pytest.fixture(scope="module")
def everything() -> Simulation:
    estate = generate_estate(2, 60, seed=11)
    scenarios = [n for n in LIBRARY if n != "malformed"]
    return simulate(
        estate, scenarios, duration_s=3600, seed=5, start_ms=START, gateway_fraction=0.3
    )


def test_deterministic_for_a_seed() -> None:
    estate = generate_estate(1, 30, seed=1)
    a = simulate(estate, ["all"], duration_s=900, seed=9, start_ms=START)
    b = simulate(estate, ["all"], duration_s=900, seed=9, start_ms=START)
    assert [lab.to_json() for lab in a.labels] == [lab.to_json() for lab in b.labels]
    assert list(a.messages) == list(b.messages)
    assert list(a.messages) == list(a.messages)  # re-iterable
    c2 = simulate(estate, ["all"], duration_s=900, seed=10, start_ms=START)
    assert list(c2.messages) != list(a.messages)


def test_every_message_validates(everything: Simulation) -> None:
    kinds: set[str] = set()
    for m in everything.messages:
        kind = _topic_kind(m.topic)
        kinds.add(kind)
        assert len(m.payload) <= c.MAX_PAYLOAD_BYTES
        if kind == "status":
            assert m.retain
            assert m.qos == 1
            assert errors("status", m.payload.decode()) == []
            continue
        body = json.loads(m.payload)
        assert errors(kind, body) == [], (m.topic, body)
        assert m.retain is False
    assert kinds == {"telemetry", "event", "status", "batch"}


def test_event_time_order_and_rate(everything: Simulation) -> None:
    msgs = list(everything.messages)
    assert all(a.ts_ms <= b.ts_ms for a, b in itertools.pairwise(msgs))
    readings = sum(m.readings for m in msgs)
    expected = everything.messages_per_s() * 3600
    assert 0.9 * expected < readings < 1.05 * expected


def test_seq_is_one_counter_per_device() -> None:
    estate = generate_estate(1, 30, seed=2)
    sim = simulate(estate, ["call_point", "flaming_fire"], duration_s=1200, seed=1,
                   start_ms=START, gateway_fraction=0.5)  # fmt: skip
    seqs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for m in sim.messages:
        if m.topic.endswith("/status"):
            continue
        body = json.loads(m.payload)
        items = body["readings"] if "readings" in body else [
            {**body, "device": m.topic.split("/")[3]}]  # fmt: skip
        for it in items:
            seqs[it["device"]].append((it["ts"], it["seq"]))
    for dev, pairs in seqs.items():
        ordered = [s for _, s in sorted(pairs)]
        assert all(b - a == 1 for a, b in itertools.pairwise(ordered)), dev


def _label(sim: Simulation, name: str) -> Any:
    return next(lab for lab in sim.labels if lab.scenario == name)


def test_flaming_fire_crosses_57c_and_spreads(everything: Simulation) -> None:
    lab = _label(everything, "flaming_fire")
    assert lab.expected_alarm_type == "fire"
    assert lab.kind == "fire"
    peaks = {}
    for dev in lab.devices:
        series = [(ts, v) for ts, v in _series(everything, dev) if lab.start_ms <= ts <= lab.end_ms]
        peaks[dev] = max(v.get("temperature", -math.inf) for _, v in series)
        obs = [v["obscuration"] for _, v in series if "obscuration" in v]
        if obs:
            assert max(obs) > 10  # dense smoke, EN 54 TF4/TF5
    assert max(peaks.values()) > 57.0
    assert len(lab.devices) >= 2  # it reached the neighbours
    # Before the fire the air was clean.
    before = [v for ts, v in _series(everything, lab.devices[0]) if ts < lab.start_ms]
    assert before
    assert max(v.get("temperature", 0) for v in before) < 35


def test_smouldering_fire_is_slow_smoke_with_co_and_little_heat(everything: Simulation) -> None:
    lab = _label(everything, "smouldering_fire")
    series = [v for ts, v in _series(everything, lab.devices[0]) if ts >= lab.start_ms]
    base = _series(everything, lab.devices[0])[0][1]
    assert max(v["obscuration"] for v in series) > 4
    assert max(v["temperature"] for v in series) - base["temperature"] < 8
    co = [v["co"] for v in series if "co" in v]
    if co:
        assert max(co) > 30


def test_steam_carries_humidity_above_90(everything: Simulation) -> None:
    lab = _label(everything, "steam")
    assert lab.expected_alarm_type is None
    assert lab.kind == "nuisance"
    rh = [v["humidity"] for dev in lab.devices for ts, v in _series(everything, dev)
          if "humidity" in v and lab.start_ms <= ts <= lab.end_ms]  # fmt: skip
    assert max(rh) > 90


def test_electrical_and_evac_profiles(everything: Simulation) -> None:
    leak = _label(everything, "leakage")
    assert max(v["residual_current"] for _, v in _series(everything, leak.devices[0])) > 300
    hot = _label(everything, "cable_overheat")
    assert max(v["cable_temperature"] for _, v in _series(everything, hot.devices[0])) > 70
    lamp = _label(everything, "evac_lamp_failure")
    assert lamp.expected_alarm_type == "evac_fault"
    lamp_vals = [v["lamp_ok"] for ts, v in _series(everything, lamp.devices[0])
                 if lamp.start_ms < ts < lamp.end_ms]  # fmt: skip
    assert lamp_vals
    assert set(lamp_vals) == {0}


def test_labels_match_published_events(everything: Simulation) -> None:
    events = defaultdict(list)
    for m in everything.messages:
        if m.topic.endswith("/event"):
            body = json.loads(m.payload)
            events[m.topic.split("/")[3]].append((body["ts"], body["type"]))
    cp = _label(everything, "call_point")
    assert (cp.start_ms, "activated") in events[cp.devices[0]]
    fault = _label(everything, "detector_fault")
    assert (fault.start_ms, "fault") in events[fault.devices[0]]
    assert (fault.end_ms, "restore") in events[fault.devices[0]]
    silent = _label(everything, "offline_silent")
    quiet = [ts for ts, _ in _series(everything, silent.devices[0])
             if silent.start_ms <= ts < silent.end_ms]  # fmt: skip
    assert quiet == []
    will = _label(everything, "offline_will")
    status = [(m.ts_ms, m.payload) for m in everything.messages
              if m.topic == c.status_topic(will.site, will.devices[0])]  # fmt: skip
    assert (will.start_ms, b"offline") in status
    assert (will.end_ms, b"online") in status
    for lab in everything.labels:
        assert lab.start_ms <= lab.end_ms <= everything.end_ms
        assert lab.expected_alarm_type in (None, *c.ALARM_TYPES)


def test_malformed_produces_each_bad_input() -> None:
    estate = generate_estate(2, 20, seed=3)
    sim = simulate(estate, ["malformed"], duration_s=900, seed=2, start_ms=START)
    lab = sim.labels[0]
    dev = lab.devices[0]
    bad: list[Message] = []
    for m in sim.messages:
        mine = dev in m.topic or "UNREGISTERED" in m.topic or dev.encode() in m.payload
        if mine and lab.start_ms <= m.ts_ms <= lab.end_ms and not m.topic.endswith("status"):
            bad.append(m)
    payloads = b"\n".join(m.payload for m in bad)
    assert b"NaN" in payloads
    assert b"null" in payloads
    assert b"true" in payloads
    assert any(len(m.payload) > c.MAX_PAYLOAD_BYTES for m in bad)
    assert any("UNREGISTERED" in m.topic for m in bad)
    assert any(m.topic.split("/")[2] != lab.site and dev in m.topic for m in bad)
    assert any("/gateway/" in m.topic for m in bad)


def test_partitioned_sites_add_up_to_the_whole() -> None:
    estate = generate_estate(3, 20, seed=4)
    sim = simulate(estate, ["all"], duration_s=600, seed=4, start_ms=START)
    whole = sorted((m.topic, m.payload) for m in sim.messages)
    parts = sorted(
        (m.topic, m.payload)
        for share in (["S001", "S003"], ["S002"])
        for m in sim.with_sites(share).messages
    )
    assert parts == whole


def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        simulate(generate_estate(1, 5, seed=1), ["meteor"], duration_s=60, seed=1, start_ms=0)
