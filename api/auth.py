"""Bearer tokens and roles (contract section 4).

| role     | sites          | may                                                      |
|----------|----------------|----------------------------------------------------------|
| admin    | all            | everything: devices, tokens, alarms, rejects, /metrics   |
| operator | all            | read everything, acknowledge and clear alarms, /metrics  |
| manager  | token's sites  | read its sites' data, acknowledge (not clear) alarms     |

Registering devices is an admin's job: the contract gives operators
"read + acknowledge/clear" and nothing else.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from api.errors import Forbidden, or_list
from storage.queries import Scope

Role = Literal["admin", "operator", "manager"]

# 32 random bytes: a token cannot be guessed, so a plain sha256 suffices to store it.
TOKEN_BYTES = 32
# The name recorded in audit trails for the token from FIRESAFE_ADMIN_TOKEN.
ENV_ADMIN_NAME = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the token's name (for audit), role and sites."""

    name: str
    role: Role
    sites: tuple[str, ...] = ()
    token_id: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.sites) if self.role == "manager" else Scope.everything()

    @property
    def stream_key(self) -> str:
        """What the per-token stream cap counts by."""
        return f"token:{self.token_id}" if self.token_id else f"env:{self.name}"

    def require(self, *roles: Role) -> None:
        if self.role not in roles:
            raise Forbidden(f"the {self.role} role may not do this (needs {or_list(roles)})")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_admin_token(token: str, admin_token: str | None) -> bool:
    """Constant-time comparison with the environment's admin token."""
    if not admin_token:
        return False
    return hmac.compare_digest(token.encode(), admin_token.encode())
