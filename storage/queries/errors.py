"""The query layer's exceptions; the API translates them to HTTP statuses."""

from __future__ import annotations

from storage.errors import StorageError


class QueryError(StorageError):
    """A query could not be answered as asked."""


class NotFoundError(QueryError):
    """The object does not exist."""


class OutOfScopeError(QueryError):
    """The object exists but belongs to a site outside the caller's scope."""


class ConflictError(QueryError):
    """The object's state does not allow the change."""


class InvalidInputError(QueryError):
    """The input is well-formed but inconsistent with what is stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
