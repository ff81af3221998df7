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

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
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
        wanted = None if sites is None else set(sites)  # a takeover passes thousands
        return sorted(b for b in self._evac if wanted is None or b[0] in wanted)

    def evac_changed(self, before: Registry) -> list[tuple[str, str]]:
        """Buildings whose evac devices differ from `before`'s: one added, gone,
        moved to another floor or re-routed (what each must show may differ)."""

        def layout(devices: Iterable[Device]) -> set[tuple[str, str, tuple[tuple[str, str], ...]]]:
            return {(d.id, d.floor, tuple(sorted((d.routes or {}).items()))) for d in devices}

        buildings = self._evac.keys() | before._evac.keys()
        return sorted(
            b for b in buildings if layout(self._evac.get(b, ())) != layout(before._evac.get(b, ()))
        )

    def slots_of_sites(self, sites: Collection[str]) -> NDArray[np.int64]:
        """The registered slots of the devices of these sites."""
        codes = [i for i, site in enumerate(self.sites) if site in sites]
        slots = self.slots
        return slots[np.isin(self.site_code[slots], codes)]


# Memory per registered device (issue #9: <= 1.5 KiB with 1,000,000 devices).
# Most devices share their site's names and a handful of threshold sets: one
# object for each instead of one per device. The shared thresholds are
# read-only views, so no holder can change another device's levels; the
# cache is cleared past this many distinct sets (per-device tuning).
_THRESHOLD_SETS_MAX = 65_536
_threshold_sets: dict[tuple[str, str, tuple[tuple[str, float], ...]], Mapping[str, float]] = {}
_EMPTY: Mapping[str, float] = MappingProxyType({})
_NAMES_MAX = 1_000_000


def _shared_thresholds(
    standard: str, kind: str, overrides: Mapping[str, Any]
) -> Mapping[str, float]:
    own = tuple(sorted((str(k), float(v)) for k, v in overrides.items())) if overrides else ()
    key = (standard, kind, own)
    found = _threshold_sets.get(key)
    if found is None:
        if len(_threshold_sets) >= _THRESHOLD_SETS_MAX:
            _threshold_sets.clear()
        # Stored under a key of fresh objects (see _own); the site's standard
        # (sites.standard) puts its levels beneath the device's own.
        own = tuple((_own(k), float(repr(v))) for k, v in own)
        levels = with_standard_defaults(standard, kind, dict(own))
        found = MappingProxyType(levels) if levels else _EMPTY
        _threshold_sets[(_own(standard), _own(kind), own)] = found
    return found


_names: dict[str, str] = {}


def _name(value: Any) -> str:
    """One shared object per distinct name (site, building, ...), never the row's own
    (see _own)."""
    text = str(value)
    found = _names.get(text)
    if found is None:
        if len(_names) >= _NAMES_MAX:
            _names.clear()
        found = _own(text)
        _names[found] = found  # the key too: the row's string must not be kept
    return found


def _own(text: str) -> str:
    """A fresh copy of a row's string. A Device must keep nothing the database
    rows were built from: the rows of a large registry are freed right after
    the load, and one kept object would pin the allocator's memory around it,
    so the process would stay as large as the rows were (~1.3 KiB per device)."""
    return text.encode().decode()


def device_from_row(row: Mapping[str, Any]) -> Device:
    """Build a Device from a `devices` row (see storage.ingest_store.load_registry)."""
    kind = _name(row["kind"])
    interval = row.get("interval_s")
    routes = row.get("routes")
    return Device(
        id=_own(str(row["id"])),
        slot=int(str(row["slot"])),
        site=_name(row["site_id"]),
        building=_name(row["building"]),
        floor=_name(row["floor"]),
        zone=_name(row["zone"]),
        kind=kind,
        interval_s=float(str(interval)) if interval else DEFAULT_INTERVAL_S[kind],
        thresholds=_shared_thresholds(
            str(row.get("standard") or DEFAULT_STANDARD), kind, row.get("thresholds") or {}
        ),
        routes=json.loads(json.dumps(routes)) if routes else None,  # fresh objects
        registered_ms=int(str(row.get("registered_ms") or 0)),
    )
