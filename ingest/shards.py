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
from collections.abc import Collection, Iterable


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
    """How many shards each live process aims to own."""
    return math.ceil(shards / max(1, processes))


def balance(
    owned: Collection[int], free: Collection[int], shards: int, processes: int
) -> tuple[list[int], list[int]]:
    """(shards to try to take, shards to hand over), lowest numbers kept."""
    want = target(shards, processes)
    if len(owned) > want:
        return [], sorted(owned)[want:]
    return sorted(free)[: want - len(owned)], []
