"""Shared fixtures: the real database and broker given by the environment.

- FIRESAFE_TEST_DATABASE_URL: a PostgreSQL/TimescaleDB server (any database on
  it); the suite creates its own fresh database there, migrates it and drops
  it at the end. Unset: an embedded PostgreSQL in a temporary directory.
- FIRESAFE_TEST_MQTT_URL: a broker. Unset: an embedded broker.

Run in parallel (pytest-xdist, `-n 2`), each worker has its own database on
that server and, past the first worker, its own embedded broker: ingest
subscribes to everything of the contract, so two workers on one broker would
each see the other's devices.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from firesafe import embedded
from firesafe.settings import Settings
from storage.migrate import MigrationReport, migrate
from tests.helpers import Publisher, clear_retained, forget_session, refresh_rollup

# CI draws the same examples every run (derived from each test), so a landing
# is not decided by a lucky draw; anywhere else each run explores new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# Tables that hold configuration rather than data: kept between tests.
_KEEP_TABLES = {"schema_migrations", "firesafe_meta"}


def _first_worker() -> bool:
    """This run is not parallel, or this is its first worker."""
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0"


def _with_dbname(url: str, dbname: str) -> str:
    return pg_conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server URL: the configured one, or an embedded PostgreSQL."""
    url = os.environ.get("FIRESAFE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = embedded.EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def drop_later(pg_server_url: str) -> Iterator[Callable[[str], None]]:
    """Tests' scratch databases, dropped together when the session ends: each
    DROP DATABASE forces a checkpoint, which after the suite's writes took
    10-17 s when a test dropped its own."""
    names: list[str] = []
    yield names.append
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped afterwards."""
    name = f"firesafe_test_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_dbname(pg_server_url, name)
    try:
        yield url
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def migration(database_url: str) -> MigrationReport:
    return migrate(database_url)


@pytest.fixture(scope="session")
def flavour(migration: MigrationReport) -> str:
    """'plain' or 'timescale': which storage path this run exercises."""
    return migration.flavour


@pytest.fixture
def db(database_url: str, migration: MigrationReport) -> str:
    """The migrated test database, emptied of data before the test."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if row[0] not in _KEEP_TABLES
        ]
        if tables:
            conn.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )
        if migration.flavour == "timescale":
            # The continuous aggregate keeps what it materialised; recompute it empty.
            refresh_rollup(conn, "CALL refresh_continuous_aggregate('telemetry_1m', NULL, NULL)")
    return database_url


@pytest.fixture(scope="session")
def embedded_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[embedded.EmbeddedBroker | None]:
    """The embedded broker when FIRESAFE_TEST_MQTT_URL is unset or taken by the
    first parallel worker (else None)."""
    if os.environ.get("FIRESAFE_TEST_MQTT_URL") and _first_worker():
        yield None
        return
    # A free port, not 1883: parallel workers each start one, and a developer's
    # own broker may hold 1883.
    broker = embedded.EmbeddedBroker(tmp_path_factory.mktemp("mqtt"), port=embedded.free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def mqtt_url(embedded_broker: embedded.EmbeddedBroker | None) -> Iterator[str]:
    """A broker URL: the configured one, or the embedded broker. Retained messages
    under fs/v1/ are cleared before and after the session: a shared broker must
    not hand one run's retained statuses to the next run's subscribers."""
    if embedded_broker is not None:
        yield f"mqtt://127.0.0.1:{embedded_broker.port}"
        return
    url = os.environ["FIRESAFE_TEST_MQTT_URL"]
    clear_retained(url)
    yield url
    clear_retained(url)


@pytest.fixture(scope="session")
def full_broker(embedded_broker: embedded.EmbeddedBroker | None) -> None:
    """Skip where the broker is the amqtt fallback (a machine without Mosquitto):
    it speaks MQTT 3.1.1 only and keeps no session across a restart, so tests of
    MQTT 5 features and of durability cannot run against it."""
    if embedded_broker is not None and embedded_broker.implementation == "amqtt":
        pytest.skip("needs MQTT 5 and durable sessions (Mosquitto); amqtt has neither")


@pytest.fixture
def site() -> str:
    """A site id of this test only: tests share the broker and the database."""
    return f"T{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ingest_settings(db: str, mqtt_url: str) -> Iterator[Settings]:
    """Settings for an ingest of this test: its own client id (persistent session),
    forgotten by the broker afterwards."""
    client_id = f"test-ingest-{uuid.uuid4().hex[:8]}"
    yield Settings(
        mqtt_url=mqtt_url, database_url=db, mqtt_client_id=client_id, ingest_mode="single"
    )
    forget_session(mqtt_url, client_id)


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[Publisher]:
    """A real MQTT client publishing with QoS 1."""
    p = Publisher(mqtt_url)
    yield p
    p.close()
