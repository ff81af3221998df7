"""Timestamps the database holds but Python cannot: clamped when read.

PostgreSQL's timestamptz reaches year 294276 and has +/-infinity; Python's
datetime stops at year 9999. One stored value beyond (a device clock gone
wild, written by an older ingest, or by hand) must not turn every page that
shows it into an error: the API's connections read such values as the
nearest representable instant (`TS_MAX` / `TS_MIN`), rendered as
9999-12-31T23:59:59.999Z / 0001-01-01T00:00:00.000Z.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

TS_MAX = datetime.max.replace(tzinfo=UTC)
TS_MIN = datetime.min.replace(tzinfo=UTC)
_OID = psycopg.postgres.types["timestamptz"].oid
_TEXT = psycopg.adapters.get_loader(_OID, Format.TEXT)
_BINARY = psycopg.adapters.get_loader(_OID, Format.BINARY)


def _clamped(data: Buffer, exc: psycopg.DataError) -> datetime:
    return TS_MIN if "small" in str(exc) else TS_MAX


class SafeTimestamptzLoader(Loader):
    """psycopg's own loader, with out-of-range values clamped instead of raising."""

    format = Format.TEXT
    _base: Any = _TEXT

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._inner = self._base(oid, context)

    def load(self, data: Buffer) -> datetime:
        try:
            value: datetime = self._inner.load(data)
        except psycopg.DataError as exc:
            return _clamped(data, exc)
        return value


class SafeTimestamptzBinaryLoader(SafeTimestamptzLoader):
    format = Format.BINARY
    _base: Any = _BINARY


def register(context: AdaptContext) -> None:
    """Install the clamping loaders on a connection (or any adapt context)."""
    if _TEXT is not None:
        context.adapters.register_loader(_OID, SafeTimestamptzLoader)
    if _BINARY is not None:
        context.adapters.register_loader(_OID, SafeTimestamptzBinaryLoader)


def shift(value: datetime, delta: timedelta) -> datetime:
    """value + delta, saturating at the ends of Python's range."""
    try:
        return value + delta
    except OverflowError:
        return TS_MAX if delta > timedelta(0) else TS_MIN
