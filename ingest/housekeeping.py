"""Cluster-wide chores of ingest, done by whichever process gets to them first:
on plain PostgreSQL the 1-minute rollup's refresh and daily partitions ahead
of time; on both flavours pruning of old rejects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from firesafe.settings import Settings
from storage import ingest_store as store
from storage import partitions, rollup
from storage.liveness import noticing

log = logging.getLogger(__name__)

PARTITIONS_EVERY_S = 3600.0
# Rejects are pruned often: a flood must not outgrow its bound for long.
REJECT_PRUNE_EVERY_S = 60.0
# Noted minutes wait at least rollup.SETTLE; this only bounds how much longer.
ROLLUP_REFRESH_EVERY_S = 5.0
PRUNE_LOCK = 0x46495246  # advisory lock key: one pruner at a time in a cluster


async def run_housekeeping(settings: Settings, flavour: store.Flavour, application: str) -> None:
    """Forever (cancelled at shutdown); a failed chore is logged and retried."""
    # Only this flavour's chores: one never run would keep the sleep below at 0.1 s.
    due = dict.fromkeys(
        ("rollup", "partitions", "rejects") if flavour == "plain" else ("rejects",), 0.0
    )
    while True:
        now = time.monotonic()
        try:
            if now >= due.get("rollup", math.inf):
                due["rollup"] = now + ROLLUP_REFRESH_EVERY_S
                await refresh_rollup(settings, application)
            if now >= due.get("partitions", math.inf):
                due["partitions"] = now + PARTITIONS_EVERY_S
                await _off_loop(ensure_partitions, settings)
            if now >= due["rejects"]:
                due["rejects"] = now + REJECT_PRUNE_EVERY_S
                await _off_loop(prune_rejects, settings, application)
        except (psycopg.Error, rollup.RefreshFailed) as exc:
            log.warning("housekeeping failed: %s", exc)
        await asyncio.sleep(max(0.1, min(due.values()) - time.monotonic()))


async def _off_loop(chore: Callable[..., None], *args: Any) -> None:
    """Run a blocking chore in a daemon thread of its own. A stop cancels the
    wait at once, and neither the loop's shutdown nor the interpreter's exit
    waits for the thread: a database that hangs (connections accepted, nothing
    answered) held a sync query, and with it the stop, for ever (an outside
    check; `asyncio.to_thread`'s pool is joined at exit). The chores are
    idempotent: one cut short is done again by whoever comes next."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if done.done():
            return  # the wait was cancelled (a stop)
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def work() -> None:
        error: BaseException | None = None
        try:
            chore(*args)
        except Exception as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name=f"housekeeping-{chore.__name__}", daemon=True).start()
    await done


async def refresh_rollup(settings: Settings, application: str) -> None:
    """Async, so that stopping ingest cancels it at once, even mid-connect."""
    minutes = await rollup.refresh_database(noticing(settings.require_database_url()), application)
    if minutes:
        log.debug("rollup: %d minute(s) refreshed", minutes)


def ensure_partitions(settings: Settings) -> None:
    with psycopg.connect(noticing(settings.require_database_url()), autocommit=True) as conn:
        partitions.ensure(conn, now=datetime.now(UTC), retention_days=settings.retention_days)


def prune_rejects(settings: Settings, application: str) -> None:
    with psycopg.connect(
        noticing(settings.require_database_url()), application_name=application
    ) as conn:
        lock = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        row = lock.fetchone()
        if not row or not row[0]:
            return  # another process is at it
        dropped = store.prune_rejects_sync(
            conn, max_age_days=settings.reject_retention_days, per_site=settings.rejects_per_site
        )
    if dropped:
        log.info("rejects: %d old or surplus row(s) pruned", dropped)
