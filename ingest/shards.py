"""Site shards: the estate split into S self-contained units of state.

Fire logic never crosses a site (coincidence, linkage and supervision are
per site and building), so a shard, a set of sites picked by a stable hash of
the site id, can live in any process. Each shard is one persistent MQTT
session with a stable client id (`{client id}-s{k}`) subscribed to its sites,
so the broker's queue follows the shard wherever it goes. Ownership is a
PostgreSQL session lock (storage/shards.py). The live processes share the
shards to within one of each other: each aims at ceil(S / N).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Iterable, Mapping


class ShardLost(Exception):
    """This process may no longer own a shard it was working for: start over."""


def shard_of(site: str, shards: int) -> int:
    """The shard of a site: CRC-32 of its UTF-8 id, modulo the shard count
    (stable across processes, machines and Python versions)."""
    return zlib.crc32(site.encode()) % shards


def client_id(base: str, shard: int) -> str:
    return f"{base}-s{shard}"


def subscriptions(sites: Iterable[str]) -> list[str]:
    return sorted(f"fs/v1/{site}/#" for site in sites)


def target(shards: int, processes: int) -> int:
    """The most shards a live process holds: ceil(S / N)."""
    return math.ceil(shards / max(1, processes))


def balance(
    owned: Collection[int], free: Collection[int], shards: int, held: Mapping[int, int], me: int
) -> tuple[list[int], list[int]]:
    """(shards to try to take, shards to hand over) this round, so that the live
    processes end within one shard of each other: floor(S/N) or ceil(S/N) each.

    `held`: shards held per live process (by its session id), `me` among them.
    Free shards go to whoever is short of ceil(S/N); when none is free but a
    process is short of floor(S/N), the fullest process (highest id among equals)
    hands one over. Lowest shard numbers are kept, highest handed over."""
    counts = {**held, me: len(owned)}
    n = len(counts)
    high, low = target(shards, n), shards // n
    mine = len(owned)
    if mine > high:
        return [], sorted(owned)[high:]
    if free:
        return sorted(free)[: high - mine], []
    if mine > low and any(c < low for c in counts.values()):
        fullest = max(counts, key=lambda pid: (counts[pid], pid))
        if fullest == me:
            return [], sorted(owned)[-1:]
    return [], []
