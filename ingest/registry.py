"""The device registry cache: device id -> slot and per-slot columns.

Slots are the database's dense `devices.slot` integers, stable across
restarts, so every per-device array in ingest and detection is indexed by
them. The cache is rebuilt from a snapshot whenever the registry changes.

Zone ids (the integer key of (site, building, floor, zone) that detection's
coincidence and call-point bookkeeping are keyed by) come from a `ZoneIds`
allocator that outlives the snapshots: a zone keeps its number across every
reload, whatever order the rows arrive in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detection.standards import DEFAULT_STANDARD, with_standard_defaults
from firesafe.contract import ALL_KINDS, DEFAULT_INTERVAL_S

KIND_CODE = {kind: code for code, kind in enumerate(ALL_KINDS)}


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    slot: int
    site: str
    building: str
    floor: str
    zone: str
    kind: str
    interval_s: float
    thresholds: Mapping[str, float] = field(default_factory=dict)
    routes: Mapping[str, str] | None = None
    registered_ms: int = 0

    @property
    def zone_key(self) -> tuple[str, str, str, str]:
        return (self.site, self.building, self.floor, self.zone)


ZoneKey = tuple[str, str, str, str]


class ZoneIds:
    """Stable integer ids for zones: a zone seen once keeps its id for good."""

    def __init__(self) -> None:
        self.ids: dict[ZoneKey, int] = {}

    def __call__(self, key: ZoneKey) -> int:
        return self.ids.setdefault(key, len(self.ids))


class Registry:
    """Immutable snapshot of the registry with columnar per-slot views."""

    def __init__(self, devices: Iterable[Device], zone_ids: ZoneIds | None = None) -> None:
        self.by_id: dict[str, Device] = {d.id: d for d in devices}
        size = max((d.slot for d in self.by_id.values()), default=0) + 1
        self.size = size
        self.by_slot: list[Device | None] = [None] * size
        zone_id = zone_ids or ZoneIds()
        self._evac: dict[tuple[str, str], list[Device]] = {}
        self.kind = np.full(size, -1, dtype=np.int8)
        self.zone = np.full(size, -1, dtype=np.int64)
        self.interval_ms = np.zeros(size, dtype=np.int64)
        self.registered_ms = np.zeros(size, dtype=np.int64)
        for d in self.by_id.values():
            self.by_slot[d.slot] = d
            self.kind[d.slot] = KIND_CODE[d.kind]
            self.zone[d.slot] = zone_id(d.zone_key)
            if d.kind == "evac":
                self._evac.setdefault((d.site, d.building), []).append(d)
            self.interval_ms[d.slot] = round(d.interval_s * 1000)
            self.registered_ms[d.slot] = d.registered_ms
        self.slots: NDArray[np.int64] = np.array(
            sorted(d.slot for d in self.by_id.values()), dtype=np.int64
        )
        # Sites, and each slot's site as an index into them (shards select by site).
        self.sites: list[str] = sorted({d.site for d in self.by_id.values()})
        code = {site: i for i, site in enumerate(self.sites)}
        self.site_code = np.full(size, -1, dtype=np.int64)
        for d in self.by_id.values():
            self.site_code[d.slot] = code[d.site]

    def detection_config(
        self, slots: NDArray[np.int64] | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int8], NDArray[np.int64], list[Mapping[str, float]]]:
        """What `Engine.configure` takes: slots, kinds, zone ids and thresholds
        (of every device, or of these slots)."""
        slots = self.slots if slots is None else slots
        thresholds = [self.device(int(s)).thresholds for s in slots]
        return slots, self.kind[slots], self.zone[slots], thresholds

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, device_id: str) -> Device | None:
        return self.by_id.get(device_id)

    def device(self, slot: int) -> Device:
        device = self.by_slot[slot] if 0 <= slot < self.size else None
        if device is None:
            raise KeyError(f"no device at slot {slot}")
        return device

    def evac_devices(self, site: str, building: str) -> list[Device]:
        return sorted(self._evac.get((site, building), ()), key=lambda d: d.slot)

    def evac_buildings(self, sites: Collection[str] | None = None) -> list[tuple[str, str]]:
        """Every (site, building) with at least one evac device (of these sites)."""
        return sorted(b for b in self._evac if sites is None or b[0] in sites)

    def slots_of_sites(self, sites: Collection[str]) -> NDArray[np.int64]:
        """The registered slots of the devices of these sites."""
        codes = [i for i, site in enumerate(self.sites) if site in sites]
        slots = self.slots
        return slots[np.isin(self.site_code[slots], codes)]


def device_from_row(row: Mapping[str, Any]) -> Device:
    """Build a Device from a `devices` row (see storage.ingest_store.load_registry)."""
    kind = str(row["kind"])
    interval = row.get("interval_s")
    thresholds = row.get("thresholds") or {}
    return Device(
        id=str(row["id"]),
        slot=int(row["slot"]),
        site=str(row["site_id"]),
        building=str(row["building"]),
        floor=str(row["floor"]),
        zone=str(row["zone"]),
        kind=kind,
        interval_s=float(interval) if interval else DEFAULT_INTERVAL_S[kind],
        # The site's standard (sites.standard) puts its levels beneath the device's own.
        thresholds=with_standard_defaults(
            str(row.get("standard") or DEFAULT_STANDARD),
            kind,
            {str(k): float(v) for k, v in thresholds.items()},
        ),
        routes=row.get("routes"),
        registered_ms=int(row.get("registered_ms") or 0),
    )
