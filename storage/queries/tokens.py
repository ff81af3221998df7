"""API tokens: stored as sha256 of a high-entropy random token, shown once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from storage.queries.common import Conn
from storage.queries.errors import NotFoundError


def token_hash(token: str) -> str:
    """sha256 hex: enough for random 256-bit tokens (no dictionary to attack)."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    conn: Conn, *, token: str, role: str, sites: Sequence[str], name: str, created_by: str
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO api_tokens (name, role, sites, token_hash, created_by) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id, name, role, sites, created_at",
        (name, role, list(sites), token_hash(token), created_by),
    )
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return row


async def revoke_token(conn: Conn, *, token_id: str) -> None:
    """Revoke a token (again is fine); NotFoundError when there is no such token."""
    cur = await conn.execute(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s RETURNING id",
        (token_id,),
    )
    if await cur.fetchone() is None:
        raise NotFoundError(f"token {token_id!r} not found")


async def find_token(conn: Conn, *, token: str) -> dict[str, Any] | None:
    """The live token with this value, or None."""
    cur = await conn.execute(
        "SELECT id, name, role, sites FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (token_hash(token),),
    )
    return await cur.fetchone()


async def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, name, role, sites, created_by, created_at, revoked_at FROM api_tokens "
        "ORDER BY created_at, id"
    )
    return await cur.fetchall()
