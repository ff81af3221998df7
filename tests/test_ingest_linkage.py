"""Evacuation linkage's pure parts: which signs get a command, and which
buildings a registry change puts back in question (the end-to-end cases are
in tests/test_ingest_alarms.py)."""

from __future__ import annotations

from dataclasses import replace

from ingest.linkage import commands_for
from ingest.registry import Device, Registry


def sign(device_id: str, floor: str = "1", routes: dict[str, str] | None = None) -> Device:
    return Device(device_id, 0, "S", "B", floor, "Hall", "evac", 60.0, routes=routes)


BUILDING = ("S", "B")


def test_only_a_sign_whose_state_changes_is_commanded_unless_it_is_back() -> None:
    signs = [sign("E1", routes={"left": "West"}), sign("E2"), sign("E3")]
    burning = {("1", "West")}
    last = {"E1": ("emergency", "right"), "E2": ("emergency", "both")}
    made = commands_for(BUILDING, signs, burning, last, "A1")
    assert [(c.device_id, c.cmd, c.direction) for c in made] == [("E3", "emergency", "both")]
    # Back (online again, or heard after being offline): told again.
    again = commands_for(BUILDING, signs, burning, last, "A1", resend={"E1"})
    assert [(c.device_id, c.direction) for c in again] == [("E1", "right"), ("E3", "both")]


def test_after_the_fire_a_sign_back_is_told_normal_unless_never_commanded() -> None:
    signs = [sign("E1"), sign("E2")]
    last = {"E1": ("normal", None)}
    assert commands_for(BUILDING, signs, set(), last, "A1") == []
    made = commands_for(BUILDING, signs, set(), last, "A1", resend={"E1", "E2"})
    assert [(c.device_id, c.cmd) for c in made] == [("E1", "normal")]


def test_a_registry_change_names_the_buildings_whose_signs_changed() -> None:
    def registry(*devices: Device) -> Registry:
        return Registry([replace(d, slot=i) for i, d in enumerate(devices)])

    other = Device("F1", 0, "S", "C", "1", "Hall", "evac", 60.0)
    smoke = Device("D1", 0, "S", "B", "1", "Hall", "smoke", 60.0)
    before = registry(sign("E1", routes={"left": "West"}), other, smoke)
    assert before.evac_changed(before) == []
    assert registry(sign("E1", routes={"left": "West"}), other).evac_changed(before) == []
    rerouted = registry(sign("E1", routes={"left": "East"}), other)
    assert rerouted.evac_changed(before) == [BUILDING]
    added = registry(sign("E1", routes={"left": "West"}), sign("E2"), other)
    assert added.evac_changed(before) == [BUILDING]
    moved = registry(
        sign("E1", routes={"left": "West"}), Device("F1", 0, "S", "B", "1", "H", "evac", 60.0)
    )
    assert moved.evac_changed(before) == [BUILDING, ("S", "C")]
    assert registry().evac_changed(before) == [BUILDING, ("S", "C")]
