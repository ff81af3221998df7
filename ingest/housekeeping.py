"""Cluster-wide chores of ingest, done by whichever process gets to them first:
daily partitions ahead of time (plain PostgreSQL) and pruning of old rejects."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import psycopg

from firesafe.settings import Settings
from storage import ingest_store as store
from storage import partitions

log = logging.getLogger(__name__)

PARTITIONS_EVERY_S = 3600.0
# Rejects are pruned often: a flood must not outgrow its bound for long.
REJECT_PRUNE_EVERY_S = 60.0
PRUNE_LOCK = 0x46495246  # advisory lock key: one pruner at a time in a cluster


async def run_housekeeping(settings: Settings, flavour: store.Flavour, application: str) -> None:
    """Forever (cancelled at shutdown); a failed round is logged and retried."""
    next_partitions = 0.0
    while True:
        try:
            if time.monotonic() >= next_partitions:
                next_partitions = time.monotonic() + PARTITIONS_EVERY_S
                if flavour == "plain":
                    await asyncio.to_thread(ensure_partitions, settings)
            await asyncio.to_thread(prune_rejects, settings, application)
        except psycopg.Error as exc:
            log.warning("housekeeping failed: %s", exc)
        await asyncio.sleep(REJECT_PRUNE_EVERY_S)


def ensure_partitions(settings: Settings) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        partitions.ensure(conn, now=datetime.now(UTC), retention_days=settings.retention_days)


def prune_rejects(settings: Settings, application: str) -> None:
    with psycopg.connect(settings.require_database_url(), application_name=application) as conn:
        lock = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        row = lock.fetchone()
        if not row or not row[0]:
            return  # another process is at it
        dropped = store.prune_rejects_sync(
            conn, max_age_days=settings.reject_retention_days, per_site=settings.rejects_per_site
        )
    if dropped:
        log.info("rejects: %d old or surplus row(s) pruned", dropped)
