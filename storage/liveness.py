"""Connections that notice a database gone without a word.

A partition or dropped packets give a client no error: it waits for an answer
for ever (the kernel's keepalive starts after two hours). An outside check
black-holed one ingest process's connections: its writer now notices within
about 15 s, but the connection that sends evacuation commands did not, and a
confirmed fire's commands left 14 minutes late. Every long-lived connection of
ingest and the notifier is opened with these libpq options.
"""

from __future__ import annotations

from typing import Final

from psycopg import conninfo

CLIENT_KEEPALIVES: Final[dict[str, int]] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,  # ms: data sent and not acknowledged
    "connect_timeout": 10,  # s: a host that answers nothing
}


def noticing(dsn: str) -> str:
    """`dsn` with the options above (those it sets itself win)."""
    given = conninfo.conninfo_to_dict(dsn)
    return conninfo.make_conninfo(
        dsn, **{k: v for k, v in CLIENT_KEEPALIVES.items() if k not in given}
    )
