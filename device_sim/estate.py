"""A seeded, realistic estate: sites, buildings, floors, zones and devices.

`generate_estate(sites, devices_per_site, seed)` is deterministic: the same
arguments give the same ids, layout and per-device calibration, so labels,
registry files and published traffic always agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device_sim.contract import DEFAULT_INTERVAL_S, KIND_READINGS, KINDS

# Zone types and the detectors fire engineering puts there (BS 5839-1 /
# EN 54-14 practice): smoke in circulation and rooms, heat where cooking or
# plant would false-alarm a smoke detector, multi-criteria in wet rooms.
ZONE_TYPES = ("corridor", "office", "kitchen", "bathroom", "stairwell", "plant", "electrical")
PRIMARY_DETECTOR: Mapping[str, str] = {
    "corridor": "smoke",
    "office": "smoke",
    "kitchen": "heat",
    "bathroom": "multi",
    "stairwell": "smoke",
    "plant": "heat",
    "electrical": "smoke",
}
# Extra devices after the minimum cover: relative weights of (zone type, kind).
FILL_WEIGHTS: Mapping[tuple[str, str], float] = {
    ("corridor", "smoke"): 6.0,
    ("corridor", "multi"): 1.5,
    ("corridor", "evac"): 3.0,
    ("corridor", "mcp"): 1.5,
    ("office", "smoke"): 6.0,
    ("office", "multi"): 3.0,
    ("kitchen", "heat"): 1.5,
    ("kitchen", "multi"): 1.0,
    ("bathroom", "multi"): 1.0,
    ("stairwell", "smoke"): 1.5,
    ("stairwell", "evac"): 2.0,
    ("stairwell", "mcp"): 1.0,
    ("plant", "heat"): 1.0,
    ("plant", "electrical"): 2.0,
    ("electrical", "electrical"): 3.0,
    ("electrical", "heat"): 0.5,
}
# Typical ambient of each zone type: (temperature °C, relative humidity %RH).
ZONE_AMBIENT: Mapping[str, tuple[float, float]] = {
    "corridor": (20.0, 40.0),
    "office": (22.0, 40.0),
    "kitchen": (25.0, 55.0),
    "bathroom": (23.0, 60.0),
    "stairwell": (17.0, 45.0),
    "plant": (28.0, 35.0),
    "electrical": (26.0, 30.0),
}
KIND_CODE: Mapping[str, str] = {
    "smoke": "SD",
    "heat": "HD",
    "multi": "MD",
    "mcp": "CP",
    "electrical": "EF",
    "evac": "EX",
}
KIND_LABEL: Mapping[str, str] = {
    "smoke": "Smoke detector",
    "heat": "Heat detector",
    "multi": "Multi-sensor",
    "mcp": "Call point",
    "electrical": "Electrical fire monitor",
    "evac": "Exit sign",
}
# Roughly four devices per zone in an office building.
DEVICES_PER_ZONE = 4
MAX_BUILDINGS = 4
OFFICES_PER_FLOOR = (1, 4)


@dataclass(frozen=True, slots=True)
class Zone:
    site: str
    building: str
    floor: str
    zone: str
    type: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.site, self.building, self.floor, self.zone)


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    site: str
    building: str
    floor: str
    zone: str
    zone_type: str
    kind: str
    name: str
    interval_s: int
    # Clean-air calibration of this unit: reading name -> baseline value.
    baseline: Mapping[str, float] = field(default_factory=dict)
    routes: Mapping[str, str] | None = None

    @property
    def zone_key(self) -> tuple[str, str, str, str]:
        return (self.site, self.building, self.floor, self.zone)

    def registry_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "site": self.site,
            "building": self.building,
            "floor": self.floor,
            "zone": self.zone,
            "kind": self.kind,
            "name": self.name,
            "interval_s": self.interval_s,
        }
        if self.routes is not None:
            body["routes"] = dict(self.routes)
        return body


@dataclass(frozen=True)
class Estate:
    seed: int
    sites: tuple[str, ...]
    zones: tuple[Zone, ...]
    devices: tuple[Device, ...]

    def registry(self) -> list[dict[str, Any]]:
        """Bodies for `POST /api/v1/devices` (contract sections 4 and 6)."""
        return [d.registry_body() for d in self.devices]

    def index(self) -> dict[str, int]:
        return {d.id: i for i, d in enumerate(self.devices)}

    def by_zone(self) -> dict[tuple[str, str, str, str], list[int]]:
        """Zone key -> indices of its devices, in estate order."""
        out: dict[tuple[str, str, str, str], list[int]] = {}
        for i, d in enumerate(self.devices):
            out.setdefault(d.zone_key, []).append(i)
        return out

    def subset(self, sites: Sequence[str]) -> Estate:
        keep = set(sites)
        return Estate(
            seed=self.seed,
            sites=tuple(s for s in self.sites if s in keep),
            zones=tuple(z for z in self.zones if z.site in keep),
            devices=tuple(d for d in self.devices if d.site in keep),
        )


def generate_estate(
    sites: int, devices_per_site: int, seed: int, *, site_prefix: str = "S"
) -> Estate:
    """A deterministic estate of `sites` sites with `devices_per_site` devices each."""
    if sites < 1 or devices_per_site < 1:
        raise ValueError("sites and devices_per_site must be >= 1")
    site_ids = make_site_ids(sites, site_prefix)
    zones: list[Zone] = []
    devices: list[Device] = []
    for i, site in enumerate(site_ids):
        # One stream per site: a site's layout does not depend on how many
        # other sites the estate has.
        rng = np.random.default_rng([seed, i])
        site_zones = _layout_site(site, devices_per_site, rng)
        zones.extend(site_zones)
        devices.extend(_populate_site(site, site_zones, devices_per_site, rng))
    return Estate(seed=seed, sites=site_ids, zones=tuple(zones), devices=tuple(devices))


def make_site_ids(sites: int, prefix: str = "S") -> tuple[str, ...]:
    width = max(3, len(str(sites)))
    return tuple(f"{prefix}{i + 1:0{width}d}" for i in range(sites))


def _floor_layout(rng: np.random.Generator, floor: int) -> list[str]:
    if floor < 0:  # basement: services
        return ["corridor", "stairwell", "plant", "electrical"]
    offices = int(rng.integers(OFFICES_PER_FLOOR[0], OFFICES_PER_FLOOR[1] + 1))
    layout = ["corridor", "stairwell", *["office"] * offices, "bathroom"]
    if floor == 0:
        layout.append("electrical")
    if rng.random() < 0.5:
        layout.append("kitchen")
    return layout


def _layout_site(site: str, n_devices: int, rng: np.random.Generator) -> list[Zone]:
    target = max(1, math.ceil(n_devices / DEVICES_PER_ZONE))
    n_buildings = int(rng.integers(1, min(MAX_BUILDINGS, 1 + n_devices // 40) + 1))
    has_basement = [bool(rng.random() < 0.5) for _ in range(n_buildings)]
    next_floor = [-1 if b else 0 for b in has_basement]
    zones: list[Zone] = []
    b = 0
    while len(zones) < target:
        building = f"B{b + 1}"
        floor = next_floor[b]
        next_floor[b] += 1
        counts: dict[str, int] = {}
        for ztype in _floor_layout(rng, floor):
            if len(zones) >= target:
                break
            counts[ztype] = counts.get(ztype, 0) + 1
            zone_id = f"{ztype}-{counts[ztype]}"
            zones.append(Zone(site, building, str(floor), zone_id, ztype))
        b = (b + 1) % n_buildings
    return zones


def _populate_site(
    site: str, zones: list[Zone], n_devices: int, rng: np.random.Generator
) -> list[Device]:
    picks: list[tuple[Zone, str]] = []
    # Tier 1: every kind present on the site as early as possible.
    ground = [z for z in zones if z.floor in ("0", zones[0].floor)]
    first_corridor = next((z for z in ground if z.type == "corridor"), zones[0])
    elec_room = next((z for z in zones if z.type in ("electrical", "plant")), first_corridor)
    kitchen = next((z for z in zones if z.type == "kitchen"), first_corridor)
    bathroom = next((z for z in zones if z.type == "bathroom"), first_corridor)
    picks += [
        (first_corridor, "smoke"),
        (first_corridor, "mcp"),
        (first_corridor, "evac"),
        (kitchen, "heat"),
        (bathroom, "multi"),
        (elec_room, "electrical"),
    ]
    # Tier 2: every zone covered by its primary detector; one call point and
    # one exit sign per floor; two monitors per plant/electrical room.
    floors_seen: set[tuple[str, str]] = set()
    for z in zones:
        kind = PRIMARY_DETECTOR[z.type]
        if z.type == "office" and rng.random() < 0.3:
            kind = "multi"
        picks.append((z, kind))
        if z.type == "corridor" and (z.building, z.floor) not in floors_seen:
            floors_seen.add((z.building, z.floor))
            picks += [(z, "evac"), (z, "mcp")]
        if z.type in ("electrical", "plant"):
            picks.append((z, "electrical"))
    # Tier 3: weighted fill (more detectors in the big rooms, so most zones
    # have the two detectors coincidence verification needs).
    options = [(z, k) for z in zones for (t, k) in FILL_WEIGHTS if t == z.type]
    weights = np.array([FILL_WEIGHTS[(z.type, k)] for z, k in options])
    if len(picks) < n_devices:
        chosen = rng.choice(len(options), size=n_devices - len(picks), p=weights / weights.sum())
        picks += [options[int(c)] for c in chosen]
    picks = picks[:n_devices]
    zone_pos = {id(z): i for i, z in enumerate(zones)}
    picks.sort(key=lambda p: (zone_pos[id(p[0])], KINDS.index(p[1])))

    zones_of_floor: dict[tuple[str, str], list[Zone]] = {}
    for z in zones:
        zones_of_floor.setdefault((z.building, z.floor), []).append(z)
    devices = []
    for n, (z, kind) in enumerate(picks):
        dev_id = f"{site}-{KIND_CODE[kind]}{n + 1:04d}"
        routes = None
        if kind == "evac":
            routes = _routes(z, zones_of_floor[(z.building, z.floor)], rng)
        devices.append(
            Device(
                id=dev_id,
                site=site,
                building=z.building,
                floor=z.floor,
                zone=z.zone,
                zone_type=z.type,
                kind=kind,
                name=f"{KIND_LABEL[kind]} {z.building}/{z.floor}/{z.zone}",
                interval_s=DEFAULT_INTERVAL_S[kind],
                baseline=_baseline(kind, z.type, rng),
                routes=routes,
            )
        )
    return devices


def _routes(own: Zone, floor_zones: list[Zone], rng: np.random.Generator) -> dict[str, str]:
    """Two escape directions: zones of the same building and floor (contract 6)."""
    exits = [z for z in floor_zones if z.type in ("stairwell", "corridor") and z != own]
    others = exits or [z for z in floor_zones if z != own] or [own]
    left = others[int(rng.integers(len(others)))]
    rest = [z for z in others if z != left] or [own]
    right = rest[int(rng.integers(len(rest)))]
    return {"left": left.zone, "right": right.zone}


def _baseline(kind: str, zone_type: str, rng: np.random.Generator) -> dict[str, float]:
    temp, rh = ZONE_AMBIENT[zone_type]
    values = {
        # Clean air reads a little above zero in a photoelectric chamber.
        "obscuration": float(rng.uniform(0.05, 0.3)),
        "temperature": temp + float(rng.normal(0.0, 1.0)),
        "co": float(rng.uniform(0.0, 3.0)),
        "humidity": rh + float(rng.normal(0.0, 4.0)),
        # Healthy installations leak a few to a few tens of mA to earth.
        "residual_current": float(rng.uniform(3.0, 40.0)),
        "cable_temperature": temp + float(rng.uniform(5.0, 15.0)),
        "current": float(rng.uniform(5.0, 60.0)),
        "voltage": 230.0 + float(rng.normal(0.0, 2.0)),  # EN 50160 nominal
        "battery": float(rng.uniform(96.0, 100.0)),
        "mains": 1.0,
        "lamp_ok": 1.0,
    }
    return {name: values[name] for name in KIND_READINGS[kind]}
