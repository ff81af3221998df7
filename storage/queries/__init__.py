"""Read and write queries of the REST API (ingest may reuse the read ones).

Every function takes an open connection first and keyword-only arguments
after it; every function that returns site data takes a `Scope` and filters
by it in SQL, so a caller limited to some sites never receives another
site's rows.
"""

from storage.queries.common import Conn, Scope
from storage.queries.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OutOfScopeError,
    QueryError,
)

__all__ = [
    "ConflictError",
    "Conn",
    "InvalidInputError",
    "NotFoundError",
    "OutOfScopeError",
    "QueryError",
    "Scope",
]
