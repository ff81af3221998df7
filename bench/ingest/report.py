"""The report: the table, the PASS/FAIL verdicts, latency, the py-spy summary."""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    fmt_int,
)

if TYPE_CHECKING:
    from bench.ingest.runner import Result

ROOT = Path(__file__).resolve().parents[2]
TARGET_GATEWAY_READINGS_S = 200_000


def summarize_profile(raw: str, top: int = 15) -> str:
    """Top functions by self and by cumulative samples, from py-spy's collapsed stacks."""
    self_count: collections.Counter[str] = collections.Counter()
    cum_count: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_count[_frame(frames[-1])] += count
        for name in {_frame(f) for f in frames}:
            if not name.endswith(_PLUMBING):
                cum_count[name] += count
    if not total:
        return "(no samples)"
    lines = [f"py-spy, {total} samples at 100 Hz of non-idle threads (firesafe consumer process)"]
    for title, counter in (("self", self_count), ("cumulative", cum_count)):
        lines.append(f"  top {top} by {title} time:")
        for name, hits in counter.most_common(top):
            lines.append(f"    {100 * hits / total:5.1f}%  {name}")
    return "\n".join(lines)


# Frames every sample goes through (threads, the event loop, the bench's own
# wrapper): left out of the cumulative list, where they would only say 100%.
_PLUMBING = (
    "(threading.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(asyncio/runners.py)",
    "(tests/helpers.py)",
)


def _frame(frame: str) -> str:
    # "func (path/to/file.py)" -> "func (pkg/file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    marker = "site-packages/"
    if marker in where:
        where = where.split(marker, 1)[1]
    elif str(ROOT) in where:
        where = where.split(str(ROOT) + "/", 1)[1]
    else:
        where = "/".join(where.split("/")[-2:])
    return f"{name} ({where})"


# ==================================================================== report
def table(results: list[Result], cores: int) -> str:
    head = (
        f"{'scenario':<9} {'consumer':<16} {'msgs':>9} {'rows':>9} {'wall s':>7} "
        f"{'msg/s':>8} {'rows/s':>9} {'1st row s':>9} {'loss':>6} {'dups':>5} {'pub msg/s':>9} "
        f"{'CPU% pub/brk/cons/pg/other (of ' + str(cores * 100) + ')':>34}  note"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if not r.ok:
            lines.append(f"{r.scenario:<9} {r.consumer:<16} FAILED: {r.error[:200]}")
            continue
        wall = r.elapsed or 1e-9
        ours = (
            r.pub_cpu,
            r.cpu.get("broker", 0),
            r.cpu.get("consumer", 0),
            r.cpu.get("postgres", 0),
        )
        # Machine-wide busy time over the run window minus ours: other work on
        # the machine (publishers' CPU is their own measurement over their own
        # span, so this is approximate).
        other = max(0.0, r.cpu.get("machine", 0) - sum(ours))
        cpu = "/".join(f"{100 * v / wall:.0f}" for v in (*ours, other))
        loss = "-" if r.loss is None else f"{r.loss:,}"
        dups = "-" if r.consumer.startswith(("publisher", "trivial")) else f"{r.duplicates:,}"
        note = r.note
        first_row = "-" if r.first_row is None else f"{r.first_row:.2f}"
        if r.partial:
            note = (note + " capped: rate of the part before the cap").strip()
        lines.append(
            f"{r.scenario:<9} {r.consumer:<16} {r.messages:>9,} {r.readings:>9,} {r.elapsed:>7.2f} "
            f"{r.msgs_per_s:>8,.0f} {r.rows_per_s:>9,.0f} {first_row:>9} {loss:>6} {dups:>5} "
            f"{r.pub_rate:>9,.0f} {cpu:>34}  {note}"
        )
    return "\n".join(lines)


def find(results: list[Result], scenario: str, consumer: str) -> Result | None:
    """The run of median rate (with --repeats, the verdicts judge the median round)."""
    runs = sorted(
        (r for r in results if r.scenario == scenario and r.consumer == consumer and r.ok),
        key=lambda r: r.rows_per_s,
    )
    return runs[(len(runs) - 1) // 2] if runs else None


def verdicts(results: list[Result], args: argparse.Namespace) -> list[str]:
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    for scenario in ("burst", "gateway", "steady"):
        fs = find(results, scenario, "firesafe")
        if not any(r.scenario == scenario for r in results):
            continue
        if fs is None:
            line(False, f"{scenario}: firesafe ingest did not run (see the table)")
            continue
        for base in ("batched", "naive"):
            b = find(results, scenario, base)
            if b and b.msgs_per_s:
                out.append(
                    f"INFO  {scenario}: firesafe / {base} = {fs.msgs_per_s / b.msgs_per_s:.2f}x "
                    f"({fs.msgs_per_s:,.0f} vs {b.msgs_per_s:,.0f} msg/s"
                    + (", naive capped and extrapolated)" if base == "naive" else ")")
                )
        line(
            fs.complete and fs.loss == 0 and fs.duplicates == 0,
            f"{scenario}: firesafe stored every row once (loss {fs.loss}, duplicates "
            f"{fs.duplicates})",
        )
        if scenario == "burst":
            b = find(results, "burst", "batched")
            if b:
                line(
                    fs.msgs_per_s >= b.msgs_per_s,
                    f"burst: firesafe {fs.msgs_per_s:,.0f} msg/s >= bare batched "
                    f"{b.msgs_per_s:,.0f} msg/s",
                )
        if scenario == "gateway":
            line(
                fs.rows_per_s >= TARGET_GATEWAY_READINGS_S,
                f"gateway: firesafe {fs.rows_per_s:,.0f} readings/s >= "
                f"{TARGET_GATEWAY_READINGS_S:,}",
            )
    pub = find(results, "publish", "publisher alone")
    fs = find(results, "burst", "firesafe")
    if pub and fs and fs.msgs_per_s:
        line(
            pub.pub_rate >= 1.5 * fs.msgs_per_s,
            f"publisher alone {pub.pub_rate:,.0f} msg/s >= 1.5x firesafe burst "
            f"{fs.msgs_per_s:,.0f} msg/s (the publisher is not the bottleneck)",
        )
    return out


def latency_report(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.scenario != "steady" or not r.ok:
            continue
        p50, p90, p99, pmax = r.stats.get("lat", (None,) * 4)
        pubs = r.pub
        lag99 = max((p["lag_p99"] or 0 for p in pubs), default=None)
        a50, a99 = r.db_latency

        def ms(x: float | None) -> str:
            return "-" if x is None else f"{x:,.0f}"

        text = (
            f"  {r.consumer:<9} publish->commit p50 {ms(p50)} ms, p90 {ms(p90)}, p99 {ms(p99)}, "
            f"max {ms(pmax)} ({fmt_int(r.stats.get('lat_n'))} msgs); publish->arrival "
            f"(rows: received_at - ts) p50 {ms(a50)}, p99 {ms(a99)}; publisher schedule "
            f"lag p99 {ms(lag99)} ms"
        )
        if r.consumer == "firesafe":
            b50, bmax = r.batch_latency
            text += (
                f"; ingest_stats batch_latency_ms (p95 per 5 s) median {ms(b50)}, max {ms(bmax)}"
            )
        out.append(text)
    return out
