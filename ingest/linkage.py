"""Evacuation linkage (contract section 2): on a confirmed fire, command the
evac devices of that building; `normal` once its last fire alarm clears.

A pure comparison of what each sign should show (from the building's open
confirmed fires) against the last command written for it. The commands are
written as pending rows in the transaction that changed the fire state (an
outbox, see `ingest/commands.py`), so a retried transaction, a broker outage
or a restart neither loses nor repeats one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from detection.linkage import sign_direction
from ingest.registry import Device

Building = tuple[str, str]  # (site, building)
FloorZone = tuple[str, str]  # (floor, zone)
SignState = tuple[str, str | None]  # (cmd, direction)


@dataclass(frozen=True, slots=True)
class Command:
    device_id: str
    site: str
    building: str
    cmd: str  # emergency | normal
    direction: str | None
    alarm_id: str | None


def wanted_state(device: Device, burning: Collection[FloorZone]) -> SignState:
    """What one evac device of a building must show, given the building's zones on fire."""
    if not burning:
        return ("normal", None)
    routes = device.routes or {}
    left, right = routes.get("left"), routes.get("right")
    direction = sign_direction(
        None if left is None else (device.floor, left) in burning,
        None if right is None else (device.floor, right) in burning,
    )
    return ("emergency", direction)


def commands_for(
    building: Building,
    signs: Iterable[Device],
    burning: Collection[FloorZone],
    last: Mapping[str, SignState],
    alarm_id: str | None,
    resend: Collection[str] = frozenset(),
) -> list[Command]:
    """Commands for the signs whose wanted state differs from their last command.
    A sign never commanded needs no `normal`: it shows normal already.
    `alarm_id`: the alarm the commands answer (the newest fire, or the one cleared).
    `resend`: signs just back (online again, or heard after being offline),
    told what they must show whatever was sent before: a sign that restarted
    shows normal, and one that was away may have missed its last command (an
    emergency, or the `normal` after it). One never commanded shows normal."""
    site, name = building
    out: list[Command] = []
    for device in signs:
        wanted = wanted_state(device, burning)
        previous = last.get(device.id)
        again = device.id in resend and (wanted[0] == "emergency" or previous is not None)
        if not again and (previous == wanted or (previous is None and wanted[0] == "normal")):
            continue
        out.append(Command(device.id, site, name, wanted[0], wanted[1], alarm_id))
    return out
