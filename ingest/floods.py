"""Alarm floods grouped: a site that falls silent as a whole is one alarm.

When the line from a building to the broker fails (its router, its uplink,
the site's gateway), every device there stops at once and supervision would
raise hundreds of `offline` alarms. An operator needs one: "site S7 went
silent", with the device alarms attached to it. Judged on supervision's own
verdicts: a site is silent when at least FLOOD_SHARE of its supervised devices
(and at least FLOOD_MIN_DEVICES) went offline within one reporting interval
of each other; it is back when fewer than that remain offline. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Half of a site's devices silent together is the site's line, not its devices.
FLOOD_SHARE = 0.5
# A few silent devices at a small site are just devices.
FLOOD_MIN_DEVICES = 5


@dataclass(frozen=True, slots=True)
class SiteChange:
    site: str
    action: Literal["open", "clear"]
    at_ms: int
    silent: int  # devices offline at the decision
    of: int  # devices supervised at the site
    since_ms: int  # the first of the devices' offline times that made the decision


@dataclass
class FloodWatch:
    # site -> slot -> when it went offline (only devices offline now)
    offline: dict[str, dict[int, int]] = field(default_factory=dict)
    silent_sites: set[str] = field(default_factory=set)

    def threshold(self, supervised: int) -> int:
        return max(FLOOD_MIN_DEVICES, math.ceil(FLOOD_SHARE * supervised))

    def went_offline(
        self,
        site: str,
        slot: int,
        at_ms: int,
        supervised: int,
        window_ms: int,
    ) -> SiteChange | None:
        """A device of `site` went offline; a SiteChange when the site falls silent."""
        offline = self.offline.setdefault(site, {})
        offline[slot] = at_ms
        if site in self.silent_sites:
            return None
        recent = [t for t in offline.values() if t >= at_ms - window_ms]
        if len(recent) < self.threshold(supervised):
            return None
        self.silent_sites.add(site)
        return SiteChange(site, "open", at_ms, len(offline), supervised, min(recent))

    def came_back(self, site: str, slot: int, at_ms: int, supervised: int) -> SiteChange | None:
        """A device of `site` was heard again; a SiteChange when the site is back."""
        offline = self.offline.get(site)
        if offline is None or offline.pop(slot, None) is None:
            return None
        if site in self.silent_sites and len(offline) < self.threshold(supervised):
            self.silent_sites.discard(site)
            return SiteChange(site, "clear", at_ms, len(offline), supervised, at_ms)
        return None

    def restore(self, silent: Mapping[str, str]) -> None:
        """Sites whose silence is an open alarm (start-up, takeover)."""
        self.silent_sites |= set(silent)

    def forget(self, sites: set[str]) -> None:
        for site in sites:
            self.offline.pop(site, None)
            self.silent_sites.discard(site)
