"""Silence: supervision's verdicts turned into `offline` alarm writes, grouped.

The ingest service's part of supervision (contract section 6): arrivals clear
`offline`, a last will raises it at once, the supervision tick raises it for
devices silent past 3 x `interval_s`; when most of a site, or of the devices
behind one gateway, fall silent together, one group alarm stands for them
(`ingest/floods.py`) and the device alarms point to it. Decisions are pure
(`Silence.batch`, `Silence.silent`); only `apply` talks to the database, inside
the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
from numpy.typing import NDArray

from ingest.decode import DecodedBatch
from ingest.floods import FloodWatch, GatewayMembers, Group, SiteChange
from ingest.registry import Registry
from ingest.supervision import Supervisor
from storage import ingest_store as store

log = logging.getLogger(__name__)

# Reject reasons that say nothing about whether the device itself is alive.
NOT_FROM_THE_DEVICE = frozenset({"unknown_device", "site_mismatch", "bad_topic"})

# A will the broker delivers again (MQTT DUP: it was in flight to us when the
# broker stopped) within this long of one this process raised an alarm for is
# that same will: the alarm was raised once already (an outside check saw two
# for one will after a broker restart: the device's last reading, redelivered
# first, had cleared the first).
WILL_REDELIVERY_MS = 600_000

Writes = list[store.AlarmWrite]
Changes = list[SiteChange]


class Silence:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.supervisor = Supervisor()
        self.floods = FloodWatch()
        self.gateways = GatewayMembers()
        self.group_alarms: dict[Group, str] = {}  # (site, gateway or "") -> open alarm id
        self._site_supervised: dict[str, int] = {}
        self._will_at: dict[int, int] = {}  # slot -> arrival of the last will raised

    # ------------------------------------------------------------ state
    def configure(
        self, registry: Registry, slots: NDArray[np.int64], baseline: NDArray[np.int64]
    ) -> None:
        """Supervise exactly `slots`, each silent-since no earlier than `baseline`."""
        self.registry = registry
        self.supervisor.configure(slots, registry.interval_ms, baseline)
        counts = np.bincount(registry.site_code[slots], minlength=len(registry.sites))
        self._site_supervised = {
            site: int(n) for site, n in zip(registry.sites, counts.tolist(), strict=True) if n
        }

    def forget(self, slots: NDArray[np.int64]) -> None:
        self.supervisor.forget(slots)
        for slot in slots.tolist():
            self._will_at.pop(slot, None)
        self.gateways.forget(slots)

    def forget_sites(self, sites: Collection[str]) -> None:
        self.floods.forget(set(sites))
        for group in [g for g in self.group_alarms if g[0] in sites]:
            del self.group_alarms[group]

    def restore(
        self,
        group_alarms: Mapping[Group, str],
        offline: Sequence[tuple[int, str, int]],
        members: Sequence[tuple[int, str, str]] = (),
    ) -> None:
        """Open group alarms, device `offline` alarms (slot, site, opened ms) and the
        gateway each device was last heard through (slot, site, gateway) as the
        database has them (start-up, takeover)."""
        by_group: dict[Group, list[int]] = {}
        for slot, site, gateway in members:
            if slot < self.registry.size:
                by_group.setdefault((site, gateway), []).append(slot)
        for group, slots in by_group.items():
            self.gateways.restore(group, np.array(slots, np.int64))
        self.group_alarms.update(group_alarms)
        self.floods.restore(group_alarms)
        for slot, site, opened_ms in offline:
            self.supervisor.mark_offline(slot)
            self.floods.mark_offline((site, ""), slot, opened_ms)

    # --------------------------------------------------------- decisions
    def batch(
        self, batch: DecodedBatch, heard_ms: NDArray[np.int64] | None = None
    ) -> tuple[Writes, Changes]:
        """Arrivals clear `offline`; a status `offline` (last will) raises it at once.
        `heard_ms`: per slot, the arrival of the device's newest message committed
        before this batch (0: none)."""
        for site, gateway, first, end in batch.gateways:
            self.gateways.heard((site, gateway), batch.slot[first:end])
        live = ~batch.st_retained
        heard_slot, heard_at = self.heard_in_rejects(batch)
        seen_slot = np.concatenate(
            [batch.slot, batch.ev_slot, batch.st_slot[live & batch.st_online], heard_slot]
        )
        seen_at = np.concatenate(
            [batch.received, batch.ev_received, batch.st_received[live & batch.st_online], heard_at]
        )
        writes: Writes = []
        changes: Changes = []
        for s in self.supervisor.seen(seen_slot, seen_at).tolist():
            at = int(seen_at[seen_slot == s].min())
            writes.append(self._write(s, "clear", "back_online", at))
            changes += self.floods.came_back(s, at, self._supervised)
        gone = batch.st_slot[~batch.st_online]
        if gone.size:
            # A will that arrived with newer messages of its device (no later
            # than them: one read of the broker's queue after its restart) is
            # old news: it was cleared and reopened in one batch before (an
            # outside check), though the device was back.
            will_at = {
                s: int(batch.st_received[(batch.st_slot == s) & ~batch.st_online].max())
                for s in np.unique(gone).tolist()
            }
            stale = [s for s, at in will_at.items() if (seen_at[seen_slot == s] >= at).any()]
            # A retained will is the broker's memory, replayed at every
            # (re)subscription (a database restart restarts ingest's sessions):
            # from a device heard within its supervision limit before it came,
            # it is old news (the device reconnected without a retained
            # `online`); one that went quiet is raised by supervision. An outside
            # check paged two live devices offline at each database restart.
            if heard_ms is not None:
                limit = self.supervisor.limit_ms
                for s in np.unique(batch.st_slot[~batch.st_online & batch.st_retained]).tolist():
                    heard = int(heard_ms[s]) if s < heard_ms.size else 0
                    if heard > 0 and s < limit.size and will_at[s] - heard < int(limit[s]):
                        stale.append(s)
            for s in np.unique(batch.st_slot[~batch.st_online & batch.st_dup]).tolist():
                raised = self._will_at.get(s)
                if raised is not None and 0 <= will_at[s] - raised <= WILL_REDELIVERY_MS:
                    stale.append(s)  # redelivered: raised once already
            gone = gone[~np.isin(gone, stale)]
        if gone.size:
            for s in self.supervisor.went_offline(gone).tolist():
                at = int(batch.st_received[(batch.st_slot == s) & ~batch.st_online].min())
                self._will_at[s] = at
                writes.append(self._write(s, "open", "last_will", at))
                changes += self._went_offline(s, at)
        return writes, self._site_covers_its_gateways(changes)

    def silent(self, now: int) -> tuple[Writes, Changes]:
        """Devices silent past their limit at `now` (arrival time)."""
        slots, deadlines = self.supervisor.check(now)
        writes: Writes = []
        changes: Changes = []
        for s, d in zip(slots.tolist(), deadlines.tolist(), strict=True):
            writes.append(self._write(s, "open", "silent", d))
            changes += self._went_offline(s, d)
        return writes, self._site_covers_its_gateways(changes)

    def _site_covers_its_gateways(self, changes: Changes) -> Changes:
        """A gateway found silent in the same pass as its whole site (its devices
        happened to be judged first) is covered by the site's one alarm."""
        return [
            c
            for c in changes
            if not (c.action == "open" and c.gateway and self.floods.is_silent((c.site, "")))
        ]

    def heard_in_rejects(self, batch: DecodedBatch) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Registered devices whose messages were rejected for their content: a broken
        payload on a device's own topic still shows the device is alive."""
        heard = [
            (device.slot, r.received_ms)
            for r in batch.rejects
            if r.device_id is not None
            and r.reason not in NOT_FROM_THE_DEVICE
            and (device := self.registry.get(r.device_id)) is not None
        ]
        arr = np.array(heard, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def _write(self, slot: int, action: str, reason: str, at_ms: int) -> store.AlarmWrite:
        device = self.registry.device(slot)
        cause = None
        if action == "open":  # the site's silence first, else its gateway's
            cause = self.group_alarms.get((device.site, ""))
            group = self.gateways.group_of(slot)
            if cause is None and group is not None:
                cause = self.group_alarms.get(group)
        return store.AlarmWrite(
            device_id=device.id,
            site=device.site,
            building=device.building,
            floor=device.floor,
            zone=device.zone,
            alarm_type="offline",
            action=action,  # type: ignore[arg-type]
            verdict="confirmed",
            reason=reason,
            at_ms=at_ms,
            detail={"cause": cause} if cause else {},
        )

    def _went_offline(self, slot: int, at_ms: int) -> Changes:
        device = self.registry.device(slot)
        site: Group = (device.site, "")
        window = int(self.registry.interval_ms[slot])
        changes = []
        change = self.floods.went_offline(site, slot, at_ms, self._supervised(site), window)
        if change:
            changes.append(change)
        gateway = self.gateways.group_of(slot)
        if gateway is not None and gateway[0] == device.site:
            change = self.floods.went_offline(
                gateway, slot, at_ms, self._supervised(gateway), window
            )
            if change:  # kept unless its site is silent too (_site_covers_its_gateways)
                changes.append(change)
        return changes

    def _supervised(self, group: Group) -> int:
        site, gateway = group
        if gateway:
            return self.gateways.count(group)
        return self._site_supervised.get(site, 0)

    # ------------------------------------------------------------- writes
    async def apply(
        self, conn: psycopg.AsyncConnection[Any], changes: Sequence[SiteChange]
    ) -> dict[Group, str | None]:
        """Open or clear site- and gateway-level offline alarms (in the caller's
        transaction); group -> its open alarm id (None: cleared). Call `applied`
        with the result once the transaction committed."""
        done: dict[Group, str | None] = {}
        for c in changes:
            if c.action == "open":
                detail: dict[str, Any] = {"silent": c.silent, "of": c.of}
                if c.gateway:
                    detail["gateway"] = c.gateway
                reason = "gateway_silent" if c.gateway else "site_silent"
                alarm_id = await store.open_site_alarm(
                    conn, site=c.site, reason=reason, at_ms=c.at_ms, detail=detail
                )
                if alarm_id is None:  # a retried write that had committed
                    alarm_id = (await store.load_open_site_alarms(conn)).get(c.group)
                if alarm_id is not None:
                    devices = [self.registry.device(s).id for s in c.slots] if c.gateway else None
                    await store.link_cause(
                        conn, site=c.site, cause=alarm_id, since_ms=c.since_ms, devices=devices
                    )
                    what = (
                        f"gateway {c.gateway} of site {c.site}" if c.gateway else f"site {c.site}"
                    )
                    log.warning("%s went silent (%d of %d devices)", what, c.silent, c.of)
                done[c.group] = alarm_id
            else:
                alarm_id = self.group_alarms.get(c.group)
                if alarm_id is not None:
                    await store.clear_site_alarm(
                        conn, alarm_id=alarm_id, reason="back_online", at_ms=c.at_ms
                    )
                done[c.group] = None
        return done

    def applied(self, done: Mapping[Group, str | None]) -> None:
        for group, alarm_id in done.items():
            if alarm_id is None:
                self.group_alarms.pop(group, None)
            else:
                self.group_alarms[group] = alarm_id
