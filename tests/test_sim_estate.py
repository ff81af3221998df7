"""Estate generation: deterministic, realistic, registrable."""

from __future__ import annotations

from collections import Counter

from device_sim import contract as c
from device_sim.estate import ZONE_TYPES, generate_estate
from device_sim.payload_schemas import errors


def test_same_seed_same_estate_other_seed_differs() -> None:
    a = generate_estate(3, 40, seed=7)
    b = generate_estate(3, 40, seed=7)
    other = generate_estate(3, 40, seed=8)
    assert a.registry() == b.registry()
    assert a.devices == b.devices
    assert a.registry() != other.registry()


def test_counts_kinds_and_zone_types() -> None:
    estate = generate_estate(4, 60, seed=1)
    assert len(estate.sites) == 4
    assert len(estate.devices) == 4 * 60
    per_site = Counter(d.site for d in estate.devices)
    assert set(per_site.values()) == {60}
    kinds = Counter(d.kind for d in estate.devices)
    assert set(kinds) == set(c.KINDS)
    # Point smoke detectors dominate a real installation.
    assert kinds["smoke"] == max(kinds.values())
    zone_types = {z.type for z in estate.zones}
    assert {"corridor", "office", "stairwell", "bathroom"} <= zone_types <= set(ZONE_TYPES)
    assert len({d.id for d in estate.devices}) == len(estate.devices)
    for site in estate.sites:
        assert {d.kind for d in estate.devices if d.site == site} == set(c.KINDS)


def test_small_site_still_has_every_kind() -> None:
    estate = generate_estate(1, 6, seed=3)
    assert {d.kind for d in estate.devices} == set(c.KINDS)


def test_registry_bodies_follow_the_contract() -> None:
    estate = generate_estate(2, 50, seed=2)
    zones: dict[tuple[str, str, str], set[str]] = {
        (z.site, z.building, z.floor): set() for z in estate.zones
    }
    for z in estate.zones:
        zones[(z.site, z.building, z.floor)].add(z.zone)
    for body in estate.registry():
        assert errors("device", body) == [], body
        assert c.ID_RE.match(body["id"])
        assert c.ID_RE.match(body["site"])
        assert body["interval_s"] == c.DEFAULT_INTERVAL_S[body["kind"]]
        if body["kind"] == "evac":
            floor_zones = zones[(body["site"], body["building"], body["floor"])]
            assert set(body["routes"]) == {"left", "right"}
            assert set(body["routes"].values()) <= floor_zones
        else:
            assert "routes" not in body


def test_detectors_are_placed_where_fire_engineering_puts_them() -> None:
    estate = generate_estate(5, 80, seed=4)
    for d in estate.devices:
        if d.kind == "electrical":
            assert d.zone_type in ("electrical", "plant", "corridor")
        if d.zone_type == "kitchen" and d.kind in ("heat", "smoke", "multi"):
            assert d.kind != "smoke"  # smoke heads false-alarm over cookers
