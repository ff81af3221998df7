"""The `firesafe` command line: up, ingest, api, sim, conformance, db migrate.

The only place that reads the environment (through `Settings`) and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pydantic import ValidationError

from firesafe import __version__, i18n, logs
from firesafe.i18n import N_
from firesafe.settings import NotConfigured, Settings, parse_listen

# The language of this run's messages: --lang, else LC_ALL / LC_MESSAGES / LANG.
_lang = i18n.DEFAULT_LANG


def _(msgid: str, **params: object) -> str:
    """`msgid` in the language of this run."""
    return i18n.translate(msgid, _lang, **params)


# The texts argparse itself prints (usage, errors), as its gettext msgids.
ARGPARSE_MSGIDS = (
    N_("usage: "),
    N_("options"),
    N_("positional arguments"),
    N_("show this help message and exit"),
    N_("show program's version number and exit"),
    N_("%(prog)s: error: %(message)s\n"),
    N_("the following arguments are required: %s"),
    N_("unrecognized arguments: %s"),
    N_("argument %(argument_name)s: %(message)s"),
    N_("invalid choice: %(value)r (choose from %(choices)s)"),
    N_("invalid %(type)s value: %(value)r"),
    N_("expected one argument"),
    N_("ambiguous option: %(option)s could match %(matches)s"),
)


@contextlib.contextmanager
def _argparse_in(lang: str) -> Iterator[None]:
    """argparse looks its own texts up through its module-level gettext alias:
    point it at the catalogue while our parser runs, and back afterwards."""
    original = argparse._  # type: ignore[attr-defined]
    if lang != i18n.DEFAULT_LANG:
        argparse._ = lambda text: i18n.translate(text, lang)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._ = original  # type: ignore[attr-defined]


def language(argv: Sequence[str] | None, env: dict[str, str] | None = None) -> str:
    """The run's language from `--lang` in argv or the locale variables."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--lang")
    known, _rest = pre.parse_known_args(argv)
    try:
        return i18n.from_environment(dict(os.environ) if env is None else env, known.lang)
    except ValueError as exc:
        raise SystemExit(f"firesafe: {exc}") from None


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
            api_workers=getattr(args, "workers", None),
        )
    except ValidationError as exc:
        from api.errors import what_is_wrong  # pydantic's messages, in the run's language

        lines = [f"  {_variable(e['loc'])}: {what_is_wrong(e, _lang)}" for e in exc.errors()]
        raise SystemExit(
            "firesafe: " + _("invalid configuration:") + "\n" + "\n".join(lines)
        ) from None


def _listen_address(value: str) -> str:
    """argparse type of `--listen HOST:PORT`: checked, kept as written."""
    try:
        parse_listen(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("{value} is not HOST:PORT (a port in 0-65535)", value=repr(value))
        ) from None
    return value


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable (and flag) a settings error is about, as users set it."""
    name = str(loc[0]) if loc else "?"
    if name in _FLAGS:
        flag = "--" + name.replace("_", "-")
        return _("{variable} (or {flag})", variable="FIRESAFE_" + name.upper(), flag=flag)
    return f"FIRESAFE_{name.upper()}"


# Settings that also have a command-line flag (see `_common`).
_FLAGS = frozenset(
    {"mqtt_url", "database_url", "data_dir", "api_host", "api_port", "api_url", "log_level"}
)


def _logging(settings: Settings) -> None:
    logs.configure(settings.log_level)


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
    applied = ", ".join(map(str, report.applied)) if report.applied else _("nothing")
    print(
        "firesafe: "
        + _(
            "schema at version {version} ({flavour}); applied {applied}",
            version=report.current,
            flavour=report.flavour,
            applied=applied,
        )
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
    workers = settings.api_workers or os.cpu_count() or 1
    if workers > 1:
        from firesafe.runtime import run_api_workers, wait_for_database

        # As run_api does: one line while the database is away, then start.
        url = settings.require_database_url()
        if run_until_signal(lambda stop: wait_for_database(url, stop)) != 1:
            return 0
        return run_api_workers(settings, workers)
    return run_until_signal(lambda stop: run_api(settings, stop))


def cmd_notify(args: argparse.Namespace) -> int:
    from firesafe.runtime import run_notify

    settings = _settings(args)
    _logging(settings)
    settings.require_database_url()
    return run_until_signal(lambda stop: run_notify(settings, stop))


def cmd_up(args: argparse.Namespace) -> int:
    from firesafe.runtime import run_up

    settings = _settings(args)
    _logging(settings)
    return run_until_signal(
        lambda stop: run_up(settings, stop, sim=args.sim, sim_args=list(args.sim_arg or []))
    )


def cmd_gateway(args: argparse.Namespace) -> int:
    from firesafe.runtime import run_gateway_gb26875

    settings = _settings(args)
    _logging(settings)
    _ = settings.mqtt
    return run_until_signal(lambda stop: run_gateway_gb26875(settings, stop, args.listen))


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


def _common(
    parser: argparse.ArgumentParser, *, mqtt: bool, db: bool, api: bool, embedded: bool = False
) -> None:
    if mqtt:
        parser.add_argument("--mqtt-url", help=_("broker URL (env FIRESAFE_MQTT_URL)"))
    if db:
        parser.add_argument("--database-url", help=_("PostgreSQL DSN (env FIRESAFE_DATABASE_URL)"))
    if embedded:  # only `up` and `db migrate` start an embedded database
        parser.add_argument("--data-dir", help=_("embedded database files (env FIRESAFE_DATA_DIR)"))
    if api:
        parser.add_argument("--api-host", help=_("interface to bind (env FIRESAFE_API_HOST)"))
        parser.add_argument("--api-port", type=int, help=_("HTTP port (env FIRESAFE_API_PORT)"))
    parser.add_argument("--log-level", help=_("DEBUG, INFO, WARNING or ERROR"))
    # Also accepted after the subcommand (SUPPRESS: an absent flag keeps the top level's).
    parser.add_argument(
        "--lang", choices=i18n.LANGUAGES, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firesafe", description=_("Smart fire-safety IoT monitoring platform.")
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"firesafe {__version__}",
        help=_("show program's version number and exit"),
    )
    parser.add_argument(
        "--lang",
        choices=i18n.LANGUAGES,
        help=_("language of the messages (default: from LC_ALL, LC_MESSAGES or LANG; else en)"),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser(
        "up", help=_("everything in one process group (embedded broker/database when unset)")
    )
    _common(up, mqtt=True, db=True, api=True, embedded=True)
    up.add_argument("--sim", action="store_true", help=_("also run the device simulator"))
    up.add_argument(
        "--sim-arg",
        action="append",
        metavar="ARG",
        help=_(
            "an argument added to the demo simulator's (repeatable; a later option wins, "
            "a --scenario replaces the demo's), e.g. --sim-arg=--sites=3"
        ),
    )
    up.set_defaults(func=cmd_up)

    ingest = sub.add_parser("ingest", help=_("MQTT -> detection -> database"))
    _common(ingest, mqtt=True, db=True, api=False)
    ingest.set_defaults(func=cmd_ingest)

    api = sub.add_parser("api", help=_("the REST API"))
    _common(api, mqtt=False, db=True, api=True)
    api.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=_("worker processes (default: the number of cores)"),
    )
    api.set_defaults(func=cmd_api)

    notify = sub.add_parser("notify", help=_("deliver alarm notifications (webhooks, e-mail)"))
    _common(notify, mqtt=False, db=True, api=False)
    notify.set_defaults(func=cmd_notify)

    db = sub.add_parser("db", help=_("database administration"))
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser("migrate", help=_("create or upgrade the schema (idempotent)"))
    _common(migrate, mqtt=False, db=True, api=False, embedded=True)
    migrate.set_defaults(func=cmd_migrate)

    gateway = sub.add_parser("gateway", help=_("protocol gateways: a device protocol -> MQTT"))
    gateway_sub = gateway.add_subparsers(dest="protocol", required=True)
    gb = gateway_sub.add_parser(
        "gb26875", help=_("GB/T 26875.3 transmission devices (fire panels) over TCP")
    )
    _common(gb, mqtt=True, db=False, api=False)
    gb.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_listen_address,
        help=_("where to listen (env FIRESAFE_GB26875_LISTEN; default 0.0.0.0:9026)"),
    )
    gb.add_argument("--api-url", help=_("the registry API (env FIRESAFE_API_URL)"))
    gb.set_defaults(func=cmd_gateway)

    from device_sim.cli import add_conformance_arguments, add_sim_arguments

    sim = sub.add_parser("sim", help=_("publish a simulated estate over the MQTT contract"))
    _common(sim, mqtt=True, db=False, api=False)
    sim.add_argument("--api-url", help=_("where to register devices (env FIRESAFE_API_URL)"))
    add_sim_arguments(sim, _)
    sim.set_defaults(func=cmd_sim)

    conformance = sub.add_parser(
        "conformance", help=_("check a device's traffic against the contract")
    )
    _common(conformance, mqtt=True, db=False, api=False)
    add_conformance_arguments(conformance, _)
    conformance.set_defaults(func=cmd_conformance)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global _lang
    _lang = language(argv)
    with _argparse_in(_lang):
        args = build_parser().parse_args(argv)
    args.language = _lang
    try:
        return _run(args)
    except BrokenPipeError:
        # `firesafe sim --scenario list | head`: the reader left; no traceback,
        # and nothing more written to the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    from firesafe.embedded import EmbeddedServiceError
    from storage.errors import StorageError

    try:
        return int(args.func(args))
    except* NotConfigured as group:
        raise SystemExit("firesafe: " + "; ".join(_(str(e)) for e in group.exceptions)) from None
    except* (StorageError, EmbeddedServiceError) as group:
        from api.errors import localize  # (the sentences the catalogue knows, translated)

        # Expected failures of the environment get one clear line, not a traceback.
        lines = [localize(str(e), _lang) or str(e) for e in group.exceptions]
        raise SystemExit("firesafe: " + "; ".join(lines)) from None


if __name__ == "__main__":
    sys.exit(main())
