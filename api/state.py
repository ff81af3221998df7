"""What the app keeps between requests (built by the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from api.stream import AlarmHub
from api.tasks import Supervisor


@dataclass(slots=True)
class AppState:
    pool: AsyncConnectionPool[AsyncConnection[DictRow]]
    hub: AlarmHub
    admin_token: str | None
    heartbeat_s: float
    tasks: Supervisor
