"""API tokens: stored as sha256 of a high-entropy random token, shown once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from storage.queries.common import Conn
from storage.queries.confusables import skeleton
from storage.queries.errors import InvalidInputError, NotFoundError


def token_hash(token: str) -> str:
    """sha256 hex: enough for random 256-bit tokens (no dictionary to attack)."""
    return hashlib.sha256(token.encode()).hexdigest()


# Names no token may carry: `system` is the actor of ingest's own alarm
# transitions, `admin` the audit name of FIRESAFE_ADMIN_TOKEN (migration 0050
# enforces the same with a CHECK constraint).
RESERVED_NAMES = frozenset({"system", "admin"})
# A token is live when not revoked and not expired.
_LIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"


_RESERVED_SKELETONS = frozenset(skeleton(n) for n in RESERVED_NAMES)


def is_reserved_name(name: str) -> bool:
    """Whether a name reads as a reserved one: compared on its confusable
    skeleton (Unicode TR39, `storage.queries.confusables`), case-insensitively,
    so that lookalikes (`admın` with a dotless i, `ꜱystem`, Cyrillic `аdmin`,
    `ſystem`, `ａｄｍｉｎ`, `adrnin`) and names PostgreSQL's lower() folds into
    one (`ADMİN`, which Python's does not) are refused before the CHECK
    constraint sees them. Stricter than the constraint (lower(btrim(name))),
    never looser: tests/test_api_hardening.py checks every character
    PostgreSQL lowers into a letter of a reserved name."""
    return skeleton(name) in _RESERVED_SKELETONS


async def create_token(
    conn: Conn,
    *,
    token: str,
    role: str,
    sites: Sequence[str],
    name: str,
    created_by: str,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    if is_reserved_name(name):
        raise InvalidInputError("name", f"{name.strip()!r} is reserved (the system's own actor)")
    try:
        cur = await conn.execute(
            "INSERT INTO api_tokens (name, role, sites, token_hash, created_by, expires_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, name, role, sites, created_at, "
            "expires_at",
            (name, role, list(sites), token_hash(token), created_by, expires_at),
        )
    except psycopg.errors.CheckViolation as exc:  # the constraint's own folding
        if exc.diag.constraint_name != "api_tokens_name_not_reserved":
            raise
        raise InvalidInputError(
            "name", f"{name.strip()!r} is reserved (the system's own actor)"
        ) from exc
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
    """The live (not revoked, not expired) token with this value, or None."""
    cur = await conn.execute(
        f"SELECT id, name, role, sites FROM api_tokens WHERE token_hash = %s AND {_LIVE}",
        (token_hash(token),),
    )
    return await cur.fetchone()


async def live_token_ids(conn: Conn, *, ids: Sequence[str]) -> set[str]:
    """Which of these token ids are still live."""
    cur = await conn.execute(
        f"SELECT id FROM api_tokens WHERE id = ANY(%s::text[]) AND {_LIVE}", (list(ids),)
    )
    return {row["id"] for row in await cur.fetchall()}


async def list_tokens(conn: Conn) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT id, name, role, sites, created_by, created_at, revoked_at, expires_at "
        "FROM api_tokens "
        "ORDER BY created_at, id"
    )
    return await cur.fetchall()
