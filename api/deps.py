"""Dependencies of the routers, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from api.auth import ENV_ADMIN_NAME, Caller, is_admin_token
from api.errors import Unauthorized
from api.state import AppState
from storage.queries import Conn, tokens

Pool = AsyncConnectionPool[AsyncConnection[DictRow]]

bearer = HTTPBearer(
    auto_error=False, description="A token from FIRESAFE_ADMIN_TOKEN or POST /api/v1/tokens"
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.firesafe
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_caller(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    token = credentials.credentials
    if is_admin_token(token, state.admin_token):
        return Caller(name=ENV_ADMIN_NAME, role="admin")
    async with state.pool.connection() as conn:
        row = await tokens.find_token(conn, token=token)
    if row is None:
        raise Unauthorized("unknown, revoked or expired token")
    return Caller(name=row["name"], role=row["role"], sites=tuple(row["sites"]), token_id=row["id"])


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_conn(state: StateDep, _caller: CallerDep) -> AsyncIterator[Conn]:
    """A pooled connection for the duration of the request, taken once the
    caller is known. The token lookup takes and gives back its own connection
    first: a request holding one connection never waits for a second (with
    every connection held by requests waiting for their lookup, the API would
    stall, and a flood of made-up tokens would hold the connections)."""
    async with state.pool.connection() as conn:
        yield conn


ConnDep = Annotated[Conn, Depends(get_conn)]
