"""Alarm floods grouped: a site or a gateway that falls silent as a whole is one alarm.

When the line from a building to the broker fails (its router, its uplink),
every device there stops at once, and when a gateway fails, every device
behind it; supervision would raise hundreds of `offline` alarms. An operator
needs one: "site S7 went silent" or "gateway GW3 of S7 went silent", with the
device alarms attached to it. Judged on supervision's own verdicts: a group
(a site, or the devices last heard through one gateway) is silent when at
least FLOOD_SHARE of its supervised devices (and at least FLOOD_MIN_DEVICES)
went offline within one reporting interval of each other; it is back when
fewer than that remain offline. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

# Half of a group's devices silent together is its line, not its devices.
FLOOD_SHARE = 0.5
# A few silent devices at a small site are just devices.
FLOOD_MIN_DEVICES = 5

# (site, gateway id); the gateway is "" for the site as a whole.
Group = tuple[str, str]


@dataclass(frozen=True, slots=True)
class SiteChange:
    site: str
    action: Literal["open", "clear"]
    at_ms: int
    silent: int  # devices offline at the decision
    of: int  # devices supervised in the group
    since_ms: int  # the first of the devices' offline times that made the decision
    gateway: str = ""  # the gateway whose devices fell silent ("" : the site)
    slots: tuple[int, ...] = ()  # open: the group's devices offline at the decision

    @property
    def group(self) -> Group:
        return (self.site, self.gateway)


@dataclass
class FloodWatch:
    # group -> slot -> when it went offline (only devices offline now)
    offline: dict[Group, dict[int, int]] = field(default_factory=dict)
    silent_groups: set[Group] = field(default_factory=set)
    # slot -> the groups it is offline in (a site, and maybe one gateway): a device
    # heard again visits only those, and an emptied group is dropped.
    groups_of: dict[int, set[Group]] = field(default_factory=dict)

    def threshold(self, supervised: int) -> int:
        return max(FLOOD_MIN_DEVICES, math.ceil(FLOOD_SHARE * supervised))

    def went_offline(
        self,
        group: Group,
        slot: int,
        at_ms: int,
        supervised: int,
        window_ms: int,
    ) -> SiteChange | None:
        """A device of `group` went offline; a SiteChange when the group falls silent."""
        self.mark_offline(group, slot, at_ms)
        offline = self.offline[group]
        if group in self.silent_groups:
            return None
        recent = {s: t for s, t in offline.items() if t >= at_ms - window_ms}
        if len(recent) < self.threshold(supervised):
            return None
        self.silent_groups.add(group)
        site, gateway = group
        return SiteChange(
            site,
            "open",
            at_ms,
            len(offline),
            supervised,
            min(recent.values()),
            gateway,
            tuple(sorted(offline)),
        )

    def came_back(
        self, slot: int, at_ms: int, supervised: Callable[[Group], int]
    ) -> list[SiteChange]:
        """A device was heard again; a SiteChange for each of its groups that is back."""
        out = []
        for group in sorted(self.groups_of.pop(slot, ())):
            offline = self.offline.get(group, {})
            if offline.pop(slot, None) is None:
                continue
            if group in self.silent_groups and len(offline) < self.threshold(supervised(group)):
                self.silent_groups.discard(group)
                site, gateway = group
                out.append(
                    SiteChange(
                        site, "clear", at_ms, len(offline), supervised(group), at_ms, gateway
                    )
                )
            if not offline and group not in self.silent_groups:
                del self.offline[group]
        return out

    def is_silent(self, group: Group) -> bool:
        return group in self.silent_groups

    def restore(self, silent: Mapping[Group, str]) -> None:
        """Groups whose silence is an open alarm (start-up, takeover)."""
        self.silent_groups |= set(silent)

    def mark_offline(self, group: Group, slot: int, at_ms: int) -> None:
        """A device of `group` is offline since `at_ms` (also: restored at start-up)."""
        self.offline.setdefault(group, {})[slot] = at_ms
        self.groups_of.setdefault(slot, set()).add(group)

    def forget(self, sites: set[str]) -> None:
        for group in [g for g in self.offline.keys() | self.silent_groups if g[0] in sites]:
            for slot in self.offline.pop(group, {}):
                groups = self.groups_of.get(slot)
                if groups is not None:
                    groups.discard(group)
                    if not groups:
                        del self.groups_of[slot]
            self.silent_groups.discard(group)


class GatewayMembers:
    """Which gateway each device was last heard through (slot -> group), and how
    many devices each gateway carries: the groups a gateway's silence is judged
    on. Kept as arrays so a gateway batch costs a few numpy operations. Changes
    are drained (`drain`) to the database, which gives them back after a restart
    or a takeover (`restore`)."""

    def __init__(self) -> None:
        self._via = np.full(0, -1, np.int32)  # slot -> group index (-1: direct)
        self._dirty = np.zeros(0, np.bool_)  # slot -> gateway changed since the last drain
        self._count = np.zeros(0, np.int64)  # group index -> devices heard through it
        self._groups: list[Group] = []
        self._index: dict[Group, int] = {}

    def heard(self, group: Group, slots: NDArray[np.int64]) -> None:
        """These devices' readings just arrived through `group`'s gateway."""
        if not slots.size:
            return
        idx = self._index.get(group)
        if idx is None:
            idx = self._index[group] = len(self._groups)
            self._groups.append(group)
            self._count = np.append(self._count, 0)
        top = int(slots.max()) + 1
        if top > self._via.size:
            grown = np.full(max(top, 2 * self._via.size), -1, np.int32)
            grown[: self._via.size] = self._via
            dirty = np.zeros(grown.size, np.bool_)
            dirty[: self._dirty.size] = self._dirty
            self._via, self._dirty = grown, dirty
        old = self._via[slots]
        moved = old != idx
        if not moved.any():
            return
        slots = np.unique(slots[moved])
        old = self._via[slots]
        np.subtract.at(self._count, old[old >= 0], 1)
        self._count[idx] += slots.size
        self._via[slots] = idx
        self._dirty[slots] = True

    def restore(self, group: Group, slots: NDArray[np.int64]) -> None:
        """What the database has stored: known, and nothing to write back."""
        self.heard(group, slots)
        self._dirty[slots] = False

    def drain(self) -> tuple[NDArray[np.int64], list[Group]]:
        """Devices whose gateway changed since the last drain, with their group;
        `undrain` them if storing fails."""
        slots = np.flatnonzero(self._dirty & (self._via >= 0)).astype(np.int64)
        self._dirty[:] = False
        return slots, [self._groups[i] for i in self._via[slots].tolist()]

    def undrain(self, slots: NDArray[np.int64]) -> None:
        self._dirty[slots] = True

    def group_of(self, slot: int) -> Group | None:
        if slot >= self._via.size or self._via[slot] < 0:
            return None
        return self._groups[int(self._via[slot])]

    def count(self, group: Group) -> int:
        idx = self._index.get(group)
        return 0 if idx is None else int(self._count[idx])

    def forget(self, slots: NDArray[np.int64]) -> None:
        """Devices no longer supervised here (unregistered, another shard's site)."""
        slots = np.unique(slots[slots < self._via.size])
        old = self._via[slots]
        np.subtract.at(self._count, old[old >= 0], 1)
        self._via[slots] = -1
        self._dirty[slots] = False
