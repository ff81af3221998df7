"""Choosing the schema flavour on a server where TimescaleDB cannot be created."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from storage import migrate as migrate_mod

pytestmark = pytest.mark.integration

# What a server with timescaledb installed but not in shared_preload_libraries
# does on CREATE EXTENSION: a FATAL error that ends the session. Reproduced
# with an event trigger that terminates the backend running the command.
KILL_ON_CREATE_EXTENSION = """
CREATE FUNCTION firesafe_test_die() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_terminate_backend(pg_backend_pid());
    PERFORM pg_sleep(5);  -- the termination lands here
END $$;
CREATE EVENT TRIGGER firesafe_test_die ON ddl_command_start
    WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION firesafe_test_die();
"""


@pytest.fixture
def fatal_create_extension_db(pg_server_url: str, drop_later: Callable[[str], None]) -> str:
    name = f"firesafe_flavour_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    drop_later(name)
    url = pg_conninfo.make_conninfo(pg_server_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(KILL_ON_CREATE_EXTENSION)
    return url


def test_the_failed_create_extension_does_not_take_the_migration_with_it(
    fatal_create_extension_db: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = fatal_create_extension_db
    # The probe really ends its session on this server.
    with pytest.raises(psycopg.OperationalError), psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    # As if the extension's files were installed (they are not on this server).
    monkeypatch.setattr(migrate_mod, "timescaledb_available", lambda conn: True)
    report = migrate_mod.migrate(url)
    assert report.flavour == "plain"
    assert report.applied  # every migration ran on the session that survived
    assert migrate_mod.current_flavour(url) == "plain"
    # Said once, with what it means: the choice is for good.
    assert "this database stays plain" in caplog.text
    caplog.clear()
    # And again: the recorded flavour is kept, nothing is re-probed; once the
    # server could load TimescaleDB, the operator is told this database won't.
    monkeypatch.setattr(migrate_mod, "timescaledb_loadable", lambda conn: True)
    assert migrate_mod.migrate(url).applied == []
    assert "TimescaleDB is now available on this server" in caplog.text
