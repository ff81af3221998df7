"""The shard runtime: which sites this process serves, and the rounds that change it.

Ownership (`ingest/ownership.py`) holds the leases and the MQTT sessions; this
module maps the registry's sites onto shards, answers "which sites are mine",
and runs one sharing round at a time: surplus shards are handed over once
their messages are drained and acknowledged, free ones are taken and adopted
together (one restore for the whole round). What a handover or a takeover
means for detection and supervision is the host's (the ingest service's).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any, Protocol

import psycopg

from firesafe.contract import GATEWAY_SITE
from ingest import shards
from ingest.mqtt import SUBSCRIPTION
from ingest.ownership import SINGLE, Ownership
from storage import shards as leases

log = logging.getLogger(__name__)

# A process holding shards that has not reported (ingest_stats, every 5 s) for
# this long is stopped or wedged, not slow: a batch commits in well under a
# second, and a restore of many sites in seconds (it reports first). Every
# second of it is a second its sites' fires wait (an outside check froze a
# process for 60 s: its fires were confirmed 66 s late with 60 here).
STALLED_AFTER_S = 20.0
# A shard whose broker session has been away this long is handed to another
# live process, and a process that cannot reach the broker takes no shard: an
# outside check started a process with a wrong broker URL, which took four
# shards and held them, their sites silent and unsupervised, until it stopped.
DEAF_HANDOVER_S = 20.0


class ShardHost(Protocol):
    """What a sharing round asks of the process that serves the shards."""

    def holds_messages_of(self, shard: int) -> bool:
        """Messages of this shard received and not yet acknowledged."""
        ...

    async def flush_device_state(self) -> None: ...

    def drop_sites(self, sites: set[str]) -> None:
        """Stop serving these sites (their shard was handed over)."""
        ...

    async def adopt_sites(self, sites: set[str]) -> None:
        """Start serving these sites: their state from the database, their
        supervision clocks restarted (a takeover is not the estate going silent)."""
        ...


class ShardRuntime:
    def __init__(self, ownership: Ownership, *, sharded: bool) -> None:
        self.ownership = ownership
        self.sharded = sharded
        self._sites: dict[int, list[str]] = {}  # shard -> its registered sites
        self._said_deaf = False  # the broker's unreachability was logged

    def map_sites(self, sites: Collection[str]) -> None:
        """Place the registry's sites on their shards; the sessions held subscribe
        to sites registered since."""
        self._sites = {}
        if not self.sharded:
            return
        # Gateways' rejects (`fs/v1/_gateway/...`) belong to the shard of that site.
        for site in [*sites, GATEWAY_SITE]:
            self._sites.setdefault(self.ownership.shard_of(site), []).append(site)
        for shard, source in self.ownership.sources.items():
            source.add_subscriptions(self.subscriptions(shard))

    def subscriptions(self, shard: int) -> list[str]:
        if shard == SINGLE:
            return [SUBSCRIPTION]
        return shards.subscriptions(self._sites.get(shard, ()))

    def held_sites(self) -> set[str] | None:
        """The sites of the shards held; None when this process serves everything."""
        if not self.sharded:
            return None
        return {site for k in self.ownership.owned for site in self._sites.get(k, ())}

    def sites_of(self, taken: Sequence[int]) -> set[str]:
        return {site for k in taken for site in self._sites.get(k, ())}

    async def balance(
        self,
        host: ShardHost,
        writer: psycopg.AsyncConnection[Any],
        aux: psycopg.AsyncConnection[Any] | None,
    ) -> None:
        """One round of sharing: hand over surplus shards once drained, take free
        ones up to our share. Runs between commits (it uses the writer)."""
        ownership = self.ownership
        stalled = await leases.end_stalled_holders(
            aux or writer, STALLED_AFTER_S, ownership.writer_pid
        )
        for pid in stalled:
            log.warning(
                "ended the database session (pid %d) of an ingest process that holds shards "
                "but has not reported for %.0f s (stopped or wedged): its shards are free",
                pid,
                STALLED_AFTER_S,
            )
        hears = await ownership.broker_reachable()
        if hears == self._said_deaf:  # said once per change, from the first round on
            self._said_deaf = not hears
            if hears:
                log.info("broker reachable: sharing the shards with the other processes")
            else:
                log.warning(
                    "broker %s unreachable: taking no shard until it is",
                    ownership.settings.mqtt.url(),
                )
        if hears != ownership.member:
            await ownership.set_member(writer, hears)
        take, release = await ownership.plan(aux)
        deaf = ownership.deaf(DEAF_HANDOVER_S)
        if deaf and (
            await ownership.probe_broker()
            or not await leases.others_hear_the_broker(
                aux or writer, ownership.members, ownership.writer_pid
            )
        ):
            # The broker answers us (the sessions are on their way back: after
            # a restart for everyone, an outside check saw shards churn), or
            # nobody can do better: keep them, and their state.
            deaf = []
        for shard in deaf:
            if shard not in ownership.releasing:
                log.warning(
                    "shard %d: handing over, its broker session has been away for %.0f s or "
                    "more (another process can serve its sites)",
                    shard,
                    DEAF_HANDOVER_S,
                )
        release = sorted({*release, *deaf})
        for shard in release:
            if shard not in ownership.releasing:
                if shard not in deaf:
                    log.info("shard %d: handing over (another process joined)", shard)
                ownership.releasing.add(shard)
                source = ownership.sources.get(shard)
                if source is not None:
                    source.pause()
        for shard in sorted(ownership.releasing):
            if not host.holds_messages_of(shard):  # drained and acknowledged
                await host.flush_device_state()
                await ownership.release(writer, shard)
                host.drop_sites(set(self._sites.get(shard, [])))
                log.info("shard %d: handed over", shard)
        taken = [k for k in take if await ownership.try_take(writer, k)]
        if taken:
            await self.take_over(host, taken)

    async def take_over(self, host: ShardHost, taken: Sequence[int]) -> None:
        """Shards just locked: adopted all at once (one reconfiguration, one
        restore), then their sessions started."""
        sites = self.sites_of(taken)
        await host.adopt_sites(sites)
        for shard in taken:
            self.ownership.start_session(shard, self.subscriptions(shard))
        log.info("shard(s) %s taken over (%d site(s))", list(taken), len(sites))
