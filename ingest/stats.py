"""Ingest's own figures: counted per batch, stored every few seconds in
`ingest_stats` (Grafana's platform-health dashboard, `/health`, `/metrics`)."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from psycopg.types.json import Jsonb

from ingest.decode import RawMessage
from ingest.ownership import Ownership
from storage import ingest_store as store


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Counters:
    messages: int = 0
    readings: int = 0
    events: int = 0
    rejects: int = 0
    duplicates: int = 0
    seq_gaps: int = 0
    batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)


async def write_stats(
    writer: store.AsyncConn,
    counters: Counters,
    intake: Sequence[RawMessage],
    ownership: Ownership,
    *,
    instance: str,
    sharded: bool,
) -> bool:
    """One `ingest_stats` row; the batch latencies counted since the last one
    are taken (their p95 is stored). Returns the broker state it recorded."""
    c = counters
    connected = ownership.connected  # connected and subscribed
    latencies, c.latencies_ms = c.latencies_ms, []
    now = now_ms()
    async with writer.transaction():
        await store.write_stats(
            writer,
            {
                "at": datetime.now(UTC),
                "instance": instance,
                "messages": c.messages,
                "readings": c.readings,
                "events": c.events,
                "rejects": c.rejects,
                "duplicates": c.duplicates,
                "seq_gaps": c.seq_gaps,
                "batches": c.batches,
                "batch_latency_ms": float(np.percentile(latencies, 95)) if latencies else None,
                "queue_depth": len(intake),
                "lag_ms": float(now - intake[0].received_ms) if intake else 0.0,
                "broker_connected": connected,
                "backend_pid": ownership.writer_pid,
                "shards": sorted(ownership.owned),
                "shard_stats": Jsonb(shard_stats(intake, ownership.owned, now) if sharded else {}),
                "takeovers": ownership.takeovers,
            },
        )
    return connected


def shard_stats(
    intake: Sequence[RawMessage], owned: Collection[int], now: int
) -> dict[str, dict[str, float]]:
    """Queue depth and lag of each shard's messages waiting here (sharded mode)."""
    out = {str(k): {"queue_depth": 0.0, "lag_ms": 0.0} for k in sorted(owned)}
    for m in intake:
        entry = out.get(str(m.shard))
        if entry is not None:
            entry["queue_depth"] += 1
            entry["lag_ms"] = max(entry["lag_ms"], float(now - m.received_ms))
    return out
