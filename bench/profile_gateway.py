"""Where each second of the gateway path goes: a profile of `firesafe ingest`'s
own code on gateway batches, with no broker in the way.

The real IngestService (its decoder, planner, transaction, detection and
after-commit step) is driven in-process: gateway messages as bench/ingest.py
publishes them (100 readings each, 10,000 devices, 100 per site) are cut into
bursts the way the service cuts its intake (10,000 messages or 4 MiB), then
decoded and committed one after the other. Every database statement is timed
on the client, by kind, and the commit is timed on its own. The phases run
in sequence here; `firesafe ingest` overlaps decoding with the previous
batch's commit, so the table is a cost breakdown (seconds of work per
1,000,000 readings), not a wall-clock schedule.

Index maintenance is measured, not guessed: the same run is repeated on a
database whose telemetry has no (device_id, ts, seq) index (--compare-index),
and the difference in the insert statement is the index's cost.

pg_stat_statements (when the server has it loaded) and EXPLAIN (ANALYZE,
BUFFERS) of the insert on one batch are printed with --explain.

    python bench/profile_gateway.py --server-url postgresql://postgres@127.0.0.1:5432/postgres
    python bench/profile_gateway.py --server-url postgresql://postgres@127.0.0.1:5433/postgres \\
        --compare-index --explain
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import register_copy, scratch_database  # noqa: E402
from bench.ingest.workload import Workload, build_messages, fleet  # noqa: E402
from firesafe.contract import ID_RE  # noqa: E402
from firesafe.settings import Settings  # noqa: E402
from ingest import pipeline  # noqa: E402
from ingest.decode import RawMessage  # noqa: E402
from storage import ingest_store, rollup  # noqa: E402
from storage.migrate import migrate  # noqa: E402

log = logging.getLogger("bench.profile_gateway")

# Statement text -> phase of the table. First match wins.
_KINDS = [
    ("COPY telemetry ", "COPY into telemetry (binary)"),
    ("COPY stage_telemetry", "COPY into the stage (binary)"),
    ("INSERT INTO rollup_pending", "rollup (minutes noted, in the transaction)"),
    ("DELETE FROM stage_telemetry", "dedup check (database)"),
    ("UPDATE stage_telemetry", "dedup check (database)"),
    ("COPY stage_extra", "COPY into the stage (binary)"),
    ("INSERT INTO telemetry ", "INSERT INTO telemetry SELECT (stage)"),
    ("INSERT INTO telemetry\n", "INSERT INTO telemetry SELECT (stage)"),
    ("INSERT INTO device_events", "events"),
    ("COPY rejects", "rejects"),
    ("INSERT INTO reject_counts", "rejects"),
]
ORDER = [
    "decode (orjson, columns)",
    "registry (device lookup, site check)",
    "plan (in-batch dedup, high-water marks)",
    "dedup check (database)",
    "COPY into telemetry (binary)",
    "COPY into the stage (binary)",
    "INSERT INTO telemetry SELECT (stage)",
    "index maintenance (telemetry_key_idx)",
    "rollup (minutes noted, in the transaction)",
    "rollup refresh (after, out of the transaction)",
    "events",
    "rejects",
    "detection",
    "commit",
    "acks (after commit: tracker, counters)",
    "other (savepoints, alarms, Python glue)",
]


class Clock:
    """Seconds spent per phase, by wrapping the functions and statements involved."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds
        self.calls[phase] += 1

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t)


def _kind(query: Any) -> str | None:
    text = query.decode() if isinstance(query, bytes) else str(query)
    text = text.lstrip()
    for prefix, kind in _KINDS:
        if text.startswith(prefix) or prefix.strip() == text.split("(")[0].strip():
            return kind
    return None


class Router(Clock):
    """Hands every measurement to the clock of the variant running now."""

    def __init__(self) -> None:
        super().__init__()
        self.current = Clock()

    def add(self, phase: str, seconds: float) -> None:
        self.current.add(phase, seconds)


def instrument(clock: Clock) -> None:
    """Time psycopg statements, COPYs and commits by kind (client side, awaited)."""
    cursor = psycopg.AsyncCursor
    execute = cursor.execute
    copy = cursor.copy

    async def timed_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        kind = _kind(query)
        if kind is None:
            return await execute(self, query, *args, **kwargs)
        t = time.perf_counter()
        try:
            return await execute(self, query, *args, **kwargs)
        finally:
            clock.add(kind, time.perf_counter() - t)

    @contextlib.asynccontextmanager
    async def timed_copy(self: Any, statement: Any, *args: Any, **kwargs: Any) -> Any:
        kind = _kind(statement) or "other (savepoints, alarms, Python glue)"
        t = time.perf_counter()
        try:
            async with copy(self, statement, *args, **kwargs) as c:
                yield c
        finally:
            clock.add(kind, time.perf_counter() - t)

    setattr(cursor, "execute", timed_execute)  # noqa: B010 (instrumentation)
    setattr(cursor, "copy", timed_copy)  # noqa: B010

    transaction = psycopg.AsyncTransaction
    aexit = transaction.__aexit__

    async def timed_exit(self: Any, *exc: Any) -> Any:
        if self.savepoint_name:
            return await aexit(self, *exc)
        t = time.perf_counter()
        try:
            return await aexit(self, *exc)
        finally:
            clock.add("commit", time.perf_counter() - t)

    setattr(transaction, "__aexit__", timed_exit)  # noqa: B010


def gateway_messages(devices: int, readings: int, batch: int, base_ts: int) -> list[RawMessage]:
    w = Workload("batch", devices, -(-readings // batch), readings, base_ts=base_ts, batch=batch)
    out, _ = build_messages(w, 0, 1)
    now = int(time.time() * 1000)
    return [
        RawMessage(topic, payload, now, False, i + 1, 1) for i, (topic, payload) in enumerate(out)
    ]


class Variant:
    """One service on its own scratch database, with its own clock."""

    def __init__(self, name: str, dsn: str, staged: bool) -> None:
        self.name, self.dsn, self.staged = name, dsn, staged
        self.clock = Clock()
        self.readings = 0
        self.flavour = "?"
        self.service: Any = None

    async def start(self, router: Router) -> None:
        from ingest.housekeeping import ensure_partitions
        from ingest.service import IngestService

        settings = Settings(
            database_url=self.dsn, mqtt_url="mqtt://127.0.0.1:1", ingest_mode="single"
        )
        service = IngestService(settings)
        await service._open_database()
        await service._load_state()
        if service._flavour == "plain":
            ensure_partitions(settings)  # what housekeeping does at start
        self.flavour = service._flavour
        setattr(service.ownership, "ack", lambda burst: None)  # noqa: B010 (no broker here)
        if self.staged:  # every row through the stage (the path before direct COPY)
            setattr(service, "_device_ids", lambda: None)  # noqa: B010
        clock = router

        decode = service.decoder.decode

        def timed_decode(burst: Any) -> Any:
            with clock.timing("decode (orjson, columns)"):
                return decode(burst)

        setattr(service.decoder, "decode", timed_decode)  # noqa: B010
        detect, after = service._detect, service._after_commit

        def timed_detect(*args: Any) -> Any:
            with clock.timing("detection"):
                return detect(*args)

        def timed_after(p: Any) -> Any:
            with clock.timing("acks (after commit: tracker, counters)"):
                return after(p)

        setattr(service, "_detect", timed_detect)  # noqa: B010
        setattr(service, "_after_commit", timed_after)  # noqa: B010
        self.service = service

    async def burst(self, router: Router, burst: list[RawMessage]) -> None:
        router.current = self.clock
        service = self.service
        with router.timing("total"):
            batch = await service._decode(burst)
            self.readings += batch.readings
            await service._commit(burst, batch)

    async def stop(self) -> None:
        assert self.service.counters.readings == self.readings
        if self.flavour == "plain":  # what housekeeping does a few seconds later
            with self.clock.timing("rollup refresh (after, out of the transaction)"):
                await rollup.refresh_database(self.dsn, settle=timedelta(0))
        await self.service._close_database()


def patch_phases(router: Router) -> None:
    """Time the planner wherever the service calls it."""
    import ingest.service as service_module

    plan = pipeline.plan_batch

    def timed_plan(*args: Any) -> Any:
        with router.timing("plan (in-batch dedup, high-water marks)"):
            return plan(*args)

    setattr(service_module, "plan_batch", timed_plan)  # noqa: B010


def registry_seconds(messages: list[RawMessage], registry: Any) -> float:
    """What the decoder's per-reading device lookup and site check cost, timed
    apart on the same readings (it runs inside decode)."""
    import orjson

    ids = [
        (r["device"], m.topic.split("/")[2])
        for m in messages
        for r in orjson.loads(m.payload)["readings"]
    ]
    t = time.perf_counter()
    for device_id, site in ids:
        if ID_RE.match(device_id):
            d = registry.get(device_id)
            if d is None or d.site != site:
                raise AssertionError(device_id)
    return time.perf_counter() - t


async def run_variants(variants: list[Variant], messages: list[RawMessage]) -> None:
    """Every variant on the same bursts, in lockstep: machine load hits them alike."""
    router = Router()
    instrument(router)
    patch_phases(router)
    for v in variants:
        await v.start(router)
    cutter = variants[0].service
    cutter.intake = list(messages)
    cutter._intake_bytes = sum(len(m.payload) for m in messages)
    bursts = []
    while cutter.intake:
        bursts.append(cutter._take_batch())
    for k, burst in enumerate(bursts):
        for v in variants[k % len(variants) :] + variants[: k % len(variants)]:
            await v.burst(router, burst)
    for v in variants:
        registry_s = registry_seconds(messages, v.service.registry)
        v.clock.seconds["decode (orjson, columns)"] -= registry_s
        v.clock.add("registry (device lookup, site check)", registry_s)
        await v.stop()


def fresh_database(
    server_url: str, devices: int, drop_key_index: bool, flavour: str, setup: str = ""
) -> Any:
    db = scratch_database(server_url)
    dsn = db.__enter__()
    with psycopg.connect(dsn, autocommit=True) as conn:
        with contextlib.suppress(psycopg.Error):
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if flavour != "auto":  # what `firesafe db migrate` records on its first run
            conn.execute("CREATE TABLE firesafe_meta (key text PRIMARY KEY, value text NOT NULL)")
            conn.execute("INSERT INTO firesafe_meta VALUES ('flavour', %s)", (flavour,))
    migrate(dsn)
    register_copy(dsn, fleet(devices))
    with psycopg.connect(dsn, autocommit=True) as conn:
        if drop_key_index:
            conn.execute("DROP INDEX IF EXISTS telemetry_key_idx")
        if setup:
            conn.execute(setup.encode())
    return db, dsn


def statements_report(dsn: str) -> str:
    lines: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            rows = conn.execute(
                "SELECT calls, round(total_exec_time::numeric, 1), rows, "
                "shared_blks_hit + shared_blks_read + shared_blks_dirtied, "
                "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database "
                "WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT 12"
            ).fetchall()
        except psycopg.Error as exc:
            return f"(pg_stat_statements not available: {str(exc).strip()})"
    lines.append("| calls | server ms | rows | buffers | statement |")
    lines.append("|---:|---:|---:|---:|---|")
    for calls, ms, nrows, bufs, query in rows:
        lines.append(f"| {calls} | {ms} | {nrows} | {bufs} | `{query}` |")
    return "\n".join(lines)


def explain_insert(dsn: str, messages: list[RawMessage]) -> str:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of the insert of one staged burst, rolled back."""
    from ingest.service import IngestService

    async def decoded() -> Any:
        service = IngestService(
            Settings(database_url=dsn, mqtt_url="mqtt://127.0.0.1:1", ingest_mode="single")
        )
        await service._open_database()
        await service._refresh_registry(force=True)
        batch = service.decoder.decode(messages)
        await service._close_database()
        return batch

    batch = asyncio.run(decoded())
    with psycopg.connect(dsn) as conn:
        conn.execute(ingest_store.STAGE_DDL.encode())
        with conn.cursor() as cur:
            with cur.copy("COPY stage_telemetry FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(
                    ingest_store.encode_stage(
                        batch.slot,
                        batch.ts + 1,  # keys not stored yet: a real insert
                        batch.seq,
                        batch.received,
                        batch.slot < 0,
                        batch.values,
                    )
                )
            plan = cur.execute(
                b"EXPLAIN (ANALYZE, BUFFERS, WAL) " + ingest_store._INSERT_NEW_TELEMETRY
            ).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in plan)


def table(runs: dict[str, tuple[Clock, float, int]], scale: int) -> str:
    head = "| phase | " + " | ".join(f"{name} s / {scale:,} readings" for name in runs) + " |"
    lines = [head, "|---|" + "---:|" * len(runs)]
    for phase in ORDER:
        cells = []
        for clock, _, readings in runs.values():
            cells.append(f"{clock.seconds.get(phase, 0.0) * scale / readings:.2f}")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    cells = [f"**{c.seconds['total'] * scale / r:.2f}**" for c, _, r in runs.values()]
    lines.append("| **total (in sequence)** | " + " | ".join(cells) + " |")
    cells = [f"{r / c.seconds['total']:,.0f}" for c, _, r in runs.values()]
    lines.append("| readings/s, phases in sequence | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def attribute(clock: Clock, bare: Clock | None) -> None:
    """Split the insert into index maintenance and the rest; what the timed
    statements and steps leave of the transaction is "other"."""
    if bare is not None:
        writes = ("COPY into telemetry (binary)", "INSERT INTO telemetry SELECT (stage)")
        with_index = sum(clock.seconds.get(p, 0.0) for p in writes)
        without = sum(bare.seconds.get(p, 0.0) for p in writes)
        index = max(0.0, with_index - without)
        for p in writes:  # the index's share, taken from each statement pro rata
            clock.seconds[p] -= index * clock.seconds.get(p, 0.0) / (with_index or 1.0)
        clock.seconds["index maintenance (telemetry_key_idx)"] = index
    inside = sum(
        clock.seconds.get(p, 0.0)
        for p in ORDER
        if p
        not in (
            "decode (orjson, columns)",
            "registry (device lookup, site check)",
            "plan (in-batch dedup, high-water marks)",
            "acks (after commit: tracker, counters)",
            "other (savepoints, alarms, Python glue)",
        )
    )
    outside = sum(
        clock.seconds.get(p, 0.0)
        for p in (
            "decode (orjson, columns)",
            "registry (device lookup, site check)",
            "plan (in-batch dedup, high-water marks)",
            "acks (after commit: tracker, counters)",
        )
    )
    clock.seconds["other (savepoints, alarms, Python glue)"] = max(
        0.0, clock.seconds["total"] - inside - outside
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-url", required=True, help="PostgreSQL server for scratch databases")
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100, help="readings per gateway message")
    ap.add_argument(
        "--compare-index",
        action="store_true",
        help="repeat without telemetry_key_idx to measure its maintenance",
    )
    ap.add_argument(
        "--explain",
        action="store_true",
        help="print pg_stat_statements and EXPLAIN (ANALYZE, BUFFERS) of the insert",
    )
    ap.add_argument(
        "--flavour",
        choices=("auto", "plain", "timescale"),
        default="auto",
        help="schema flavour (auto: what `firesafe db migrate` detects)",
    )
    ap.add_argument(
        "--compare-stage",
        action="store_true",
        help="repeat with every row through the stage table "
        "(the path before direct COPY), same workload",
    )
    ap.add_argument(
        "--compare-sql",
        action="append",
        default=[],
        metavar="SQL",
        help="also run on a database where this SQL ran after migrate "
        "(e.g. to measure a schema setting); repeatable",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    base_ts = int(time.time() * 1000) - 6 * 3_600_000  # as bench/ingest.py: hours ago
    messages = gateway_messages(args.devices, args.readings, args.batch, base_ts)
    gc.collect()
    gc.freeze()  # the workload is long-lived: keep full collections off the timed phases
    wanted = [("firesafe", False, False, "")]
    if args.compare_index:
        wanted.append(("no key index", True, False, ""))
    if args.compare_stage:
        wanted.append(("all through the stage", False, True, ""))
    for i, setup in enumerate(args.compare_sql):
        wanted.append((f"variant {i + 1}", False, False, setup))
    with contextlib.ExitStack() as stack:
        variants = []
        for name, drop, staged, setup in wanted:
            db, dsn = fresh_database(args.server_url, args.devices, drop, args.flavour, setup)
            stack.callback(db.__exit__, None, None, None)
            with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, autocommit=True) as c:
                c.execute("SELECT pg_stat_statements_reset()")
            variants.append(Variant(name, dsn, staged))
        t = time.perf_counter()
        asyncio.run(run_variants(variants, messages))
        print(f"{len(variants)} variant(s) in lockstep, {time.perf_counter() - t:.1f} s")
        for v in variants:
            total = v.clock.seconds["total"]
            print(
                f"{v.name}: {v.readings:,} readings, {total:.1f} s of work "
                f"({v.readings / total:,.0f} readings/s, phases in sequence), {v.flavour}"
            )
        flavour = variants[0].flavour
        if args.explain:
            print("\npg_stat_statements (firesafe variant):\n" + statements_report(variants[0].dsn))
            print(
                "\nEXPLAIN (ANALYZE, BUFFERS, WAL) of the insert of one burst through the "
                "stage:\n" + explain_insert(variants[0].dsn, messages[:400])
            )
    runs = {v.name: (v.clock, 0.0, v.readings) for v in variants}
    first = runs["firesafe"][0]
    attribute(first, runs["no key index"][0] if "no key index" in runs else None)
    print(
        f"\nGateway path, {flavour} flavour, {args.readings:,} readings in batches of "
        f"{args.batch} (seconds of work per 1,000,000 readings):\n"
    )
    for name, (clock, _, _) in runs.items():
        if name != "firesafe":
            attribute(clock, None)
    print(table(runs, 1_000_000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
