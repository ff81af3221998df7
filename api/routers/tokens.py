"""/api/v1/tokens: admins create and revoke bearer tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.auth import new_token
from api.deps import CallerDep, ConnDep
from api.errors import ERROR_RESPONSES, ErrorResponse
from api.jsonbody import JsonRoute
from api.params import NAME_REGEX
from api.schemas import Page, TokenCreated, TokenIn, TokenOut
from storage.queries import tokens as token_q

router = APIRouter(
    prefix="/api/v1/tokens", tags=["tokens"], responses=ERROR_RESPONSES, route_class=JsonRoute
)


@router.post(
    "",
    response_model=TokenCreated,
    status_code=201,
    summary="Create a token (admin); the token is shown only in this response",
)
async def create_token(body: TokenIn, conn: ConnDep, caller: CallerDep) -> TokenCreated:
    caller.require("admin")
    token = new_token()
    row = await token_q.create_token(
        conn,
        token=token,
        role=body.role,
        sites=body.sites,
        name=body.name,
        created_by=caller.name,
        expires_at=body.expires_at,
    )
    return TokenCreated(
        token=token,
        id=row["id"],
        role=row["role"],
        sites=row["sites"],
        name=row["name"],
        expires_at=row["expires_at"],
    )


@router.get("", response_model=Page[TokenOut], summary="List tokens, without their values (admin)")
async def list_tokens(conn: ConnDep, caller: CallerDep) -> Page[TokenOut]:
    caller.require("admin")
    rows = await token_q.list_tokens(conn)
    return Page[TokenOut](items=[TokenOut.model_validate(r) for r in rows], next_cursor=None)


@router.delete(
    "/{token_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorResponse}},
    summary="Revoke a token (admin); revoking twice is not an error",
)
async def revoke_token(
    token_id: Annotated[str, Path(pattern=NAME_REGEX)], conn: ConnDep, caller: CallerDep
) -> Response:
    caller.require("admin")
    await token_q.revoke_token(conn, token_id=token_id)
    return Response(status_code=204)
