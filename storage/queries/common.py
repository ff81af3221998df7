"""Shared pieces of the query functions: connection type, scope, WHERE builder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from storage.queries.errors import OutOfScopeError

# Connections of the API pool return rows as dicts.
Conn = AsyncConnection[DictRow]


@dataclass(frozen=True, slots=True)
class Scope:
    """The sites a caller may see: `None` means every site."""

    sites: tuple[str, ...] | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls(None)

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def check(self, site: str, *, alarm: str | None = None, device: str | None = None) -> None:
        """OutOfScopeError unless the site is the caller's. Given the alarm or
        device asked for, the error names it instead of its site, which the
        caller may not know and must not learn."""
        if self.allows(site):
            return
        if alarm is not None:
            raise OutOfScopeError(f"alarm {alarm!r} is outside the caller's sites")
        if device is not None:
            raise OutOfScopeError(f"device {device!r} is outside the caller's sites")
        raise OutOfScopeError(f"site {site!r} is outside the caller's sites")


@dataclass(slots=True)
class Where:
    """AND-ed conditions with their named parameters, composed safely."""

    parts: list[sql.Composable] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, condition: str, **params: Any) -> None:
        self.parts.append(sql.SQL(condition))
        self.params.update(params)

    def eq(self, column: str, name: str, value: Any) -> None:
        """`column = %(name)s` when a value is given."""
        if value is not None:
            self.add(f"{column} = %({name})s", **{name: value})

    def scope(self, column: str, scope: Scope) -> None:
        """Restrict `column` (a site id) to the scope's sites."""
        if scope.sites is not None:
            self.add(f"{column} = ANY(%(scope_sites)s::text[])", scope_sites=list(scope.sites))

    def clause(self) -> sql.Composable:
        if not self.parts:
            return sql.SQL("")
        return sql.SQL("WHERE ") + sql.SQL(" AND ").join(self.parts)


def one_of(values: Sequence[str]) -> list[str]:
    """A list parameter for `= ANY(%s)`."""
    return list(values)
