"""Evacuation linkage (contract section 2): on a confirmed fire, command the
evac devices of that building; `normal` once its last fire alarm clears.

Keeps the set of zones with an open confirmed fire per building, and the last
command sent to each sign so that a sign is only told something new.
"""

from __future__ import annotations

from dataclasses import dataclass

from detection.linkage import sign_direction
from ingest.registry import Registry

Building = tuple[str, str]  # (site, building)
FloorZone = tuple[str, str]  # (floor, zone)


@dataclass(frozen=True, slots=True)
class Command:
    device_id: str
    site: str
    building: str
    cmd: str  # emergency | normal
    direction: str | None
    alarm_id: str | None


class Linkage:
    def __init__(self) -> None:
        # building -> (floor, zone) -> ids of open confirmed fire alarms there
        self.burning: dict[Building, dict[FloorZone, set[str]]] = {}
        self.last_sent: dict[str, tuple[str, str | None]] = {}

    def fire_confirmed(
        self, alarm_id: str, site: str, building: str, floor: str, zone: str
    ) -> Building:
        self.burning.setdefault((site, building), {}).setdefault((floor, zone), set()).add(alarm_id)
        return (site, building)

    def fire_cleared(self, alarm_id: str, site: str, building: str) -> Building:
        zones = self.burning.get((site, building), {})
        for key in list(zones):
            zones[key].discard(alarm_id)
            if not zones[key]:
                del zones[key]
        if not zones:
            self.burning.pop((site, building), None)
        return (site, building)

    def commands(
        self, registry: Registry, building: Building, alarm_id: str | None
    ) -> list[Command]:
        """What each evac device of the building must show now, where it changed."""
        site, name = building
        zones = self.burning.get(building)
        out: list[Command] = []
        for device in registry.evac_devices(site, name):
            if zones:
                routes = device.routes or {}
                left, right = routes.get("left"), routes.get("right")
                direction = sign_direction(
                    None if left is None else (device.floor, left) in zones,
                    None if right is None else (device.floor, right) in zones,
                )
                wanted: tuple[str, str | None] = ("emergency", direction)
            else:
                wanted = ("normal", None)
            previous = self.last_sent.get(device.id)
            if previous == wanted or (previous is None and wanted[0] == "normal"):
                continue
            self.last_sent[device.id] = wanted
            out.append(Command(device.id, site, name, wanted[0], wanted[1], alarm_id))
        return out
