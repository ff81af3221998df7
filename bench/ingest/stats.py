"""Median and spread of repeated, interleaved ingest runs (python -m bench.ingest --repeats N).

One run per consumer in a fixed order measures the order and the machine's
load as much as the consumers. With --repeats N every scenario runs N rounds,
the consumers' order rotated each round, and this module reports per
consumer the median and range of its rates and, per round, the paired ratio
firesafe / batched (both measured minutes apart, under similar load).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Protocol


class Run(Protocol):
    scenario: str
    consumer: str
    ok: bool
    round: int

    @property
    def msgs_per_s(self) -> float: ...

    @property
    def rows_per_s(self) -> float: ...


def rotated(items: Sequence[str], round_no: int) -> list[str]:
    """The consumers' order in round `round_no` (each starts first once per len rounds)."""
    if not items:
        return []
    k = round_no % len(items)
    return [*items[k:], *items[:k]]


def spread(values: Sequence[float]) -> str:
    """'median (min-max, n=...)'."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.0f} (n=1)"
    return f"{med:,.0f} ({min(values):,.0f}-{max(values):,.0f}, n={len(values)})"


def _ratio_spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.2f}x ({min(values):.2f}-{max(values):.2f}, n={len(values)})"


def report(results: Sequence[Run], pair: tuple[str, str] = ("firesafe", "batched")) -> list[str]:
    """Lines: per scenario and consumer, median and range of msg/s and rows/s;
    per scenario the per-round ratio pair[0] / pair[1]."""
    lines: list[str] = []
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    for sc in scenarios:
        runs = [r for r in results if r.scenario == sc and r.ok]
        for consumer in dict.fromkeys(r.consumer for r in runs):
            mine = [r for r in runs if r.consumer == consumer]
            lines.append(
                f"{sc:<9} {consumer:<16} msg/s {spread([r.msgs_per_s for r in mine]):<32} "
                f"rows/s {spread([r.rows_per_s for r in mine])}"
            )
        ratios = paired(runs, pair, lambda r: r.rows_per_s)
        if ratios:
            lines.append(f"{sc:<9} {pair[0]} / {pair[1]} per round: {_ratio_spread(ratios)}")
    return lines


def paired(
    runs: Sequence[Run], pair: tuple[str, str], value: Callable[[Run], float]
) -> list[float]:
    """Per round where both ran: value(pair[0]) / value(pair[1])."""
    out = []
    for rnd in sorted({r.round for r in runs}):
        a = [value(r) for r in runs if r.round == rnd and r.consumer == pair[0]]
        b = [value(r) for r in runs if r.round == rnd and r.consumer == pair[1]]
        if a and b and b[0] > 0:
            out.append(a[0] / b[0])
    return out


def report_pair(results: Sequence[Run], pair: tuple[str, str]) -> list[str]:
    """Per scenario, the per-round ratio pair[0] / pair[1] of rows/s."""
    lines = []
    for sc in dict.fromkeys(r.scenario for r in results):
        runs = [r for r in results if r.scenario == sc and r.ok]
        ratios = paired(runs, pair, lambda r: r.rows_per_s)
        if ratios:
            lines.append(f"{sc:<9} {pair[0]} / {pair[1]} per round: {_ratio_spread(ratios)}")
    return lines
