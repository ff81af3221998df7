"""`firesafe sim` and `firesafe conformance` (wired in by firesafe/cli.py)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from device_sim.conformance import MAX_SKEW_S, Checker, listen, render
from device_sim.estate import generate_estate
from device_sim.labels import write_labels
from device_sim.publisher import Counters, PublishError
from device_sim.registration import (
    RegistrationError,
    configure_sites,
    register,
    write_registry,
)
from device_sim.runner import Job, run_job
from device_sim.scenarios import LIBRARY
from device_sim.timeline import DEMO_PLAN, expand_scenarios, simulate
from firesafe import i18n
from firesafe.contract import ID_RE
from firesafe.settings import Settings, parse_listen

log = logging.getLogger(__name__)

DEFAULT_DURATION_S = 600.0

Translate = Callable[[str], str]


def _same(text: str) -> str:
    return text


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive(_: Translate, what: str) -> Callable[[str], float]:
    """argparse type: a finite number > 0 (`what` names it in the error)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(
                _("{what} must be a number > 0, not {value}").format(what=what, value=repr(text))
            )
        return value

    return parse


def _speed(_: Translate) -> Callable[[str], str]:
    """argparse type of --speed: `max` or a number > 0 (kept as written)."""
    number = _positive(_, _("--speed (or `max`)"))

    def parse(text: str) -> str:
        if text != "max":
            number(text)
        return text

    return parse


def _host_port(_: Translate) -> Callable[[str], str]:
    """argparse type of `--gateway HOST:PORT` (kept as written)."""

    def parse(text: str) -> str:
        try:
            parse_listen(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                _("{value} is not HOST:PORT (a port in 0-65535)").format(value=repr(text))
            ) from None
        return text

    return parse


def _port(_: Translate) -> Callable[[str], str]:
    """argparse type of `--listen [HOST:]PORT` (kept as written)."""

    def parse(text: str) -> str:
        port = text.rpartition(":")[2]
        if not port.isdigit() or not 0 <= int(port) <= 65535:
            raise argparse.ArgumentTypeError(
                _("{value} is not [HOST:]PORT (a port in 0-65535)").format(value=repr(text))
            )
        return text

    return parse


def _identifier(_: Translate) -> Callable[[str], str]:
    """argparse type of a site or device id (contract: [A-Za-z0-9_-]{1,64})."""

    def parse(text: str) -> str:
        if not ID_RE.match(text):
            raise argparse.ArgumentTypeError(
                _("{value} is not an id ([A-Za-z0-9_-], 1 to 64 characters)").format(
                    value=repr(text)
                )
            )
        return text

    return parse


def _time_zone(_: Translate) -> Callable[[str], str]:
    """argparse type of an IANA time zone, checked before anything is registered."""

    def parse(text: str) -> str:
        try:
            zoneinfo.ZoneInfo(text)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise argparse.ArgumentTypeError(
                _("{value} is not an IANA time zone (e.g. Asia/Shanghai)").format(value=repr(text))
            ) from None
        return text

    return parse


def add_sim_arguments(parser: argparse.ArgumentParser, _: Translate = _same) -> None:
    """The options of `firesafe sim`; `_` puts their help in the run's language."""
    p = parser
    p.add_argument("--sites", type=int, default=1, help=_("sites in the estate (default 1)"))
    p.add_argument("--devices-per-site", type=int, default=50, help=_("devices per site (50)"))
    p.add_argument("--seed", type=int, default=1, help=_("everything is deterministic for a seed"))
    p.add_argument("--site-prefix", default="S", help=_("site ids are PREFIX001, PREFIX002..."))
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="NAME",
        help=_("inject a scenario (repeatable; `all` = one of each; `list` prints the library)"),
    )
    p.add_argument(
        "--scenario-file",
        type=Path,
        help=_('JSON scenario mix: {"flaming_fire": 2, "steam": 5} or ["cooking", ...]'),
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help=_(
            "open with a fixed demo (an offline device at 15 s, a suppressed spike, a "
            "flaming fire from 30 s, an earth fault from 40 s, steam), then the scenarios "
            "at random"
        ),
    )
    p.add_argument(
        "--duration",
        type=_positive(_, "--duration"),
        default=DEFAULT_DURATION_S,
        help=_("event-time seconds (600)"),
    )
    p.add_argument(
        "--rate",
        type=_positive(_, "--rate"),
        help=_("target readings/s: event time runs as fast as needed"),
    )
    p.add_argument(
        "--speed",
        type=_speed(_),
        help=_(
            "event-time seconds per wall second (e.g. 60), or `max` (as fast as possible); "
            "default: real time, or what --rate needs"
        ),
    )
    p.add_argument(
        "--start-ms",
        type=int,
        help=_(
            "event time of the start (default: now, or now - duration when accelerated, "
            "so all readings are in the past)"
        ),
    )
    p.add_argument("--qos", type=int, choices=(0, 1), default=1, help=_("telemetry QoS (1)"))
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help=_("devices holding their own MQTT connection with a retained `offline` last will"),
    )
    p.add_argument(
        "--gateway-fraction",
        type=float,
        default=0.0,
        help=_("share of devices whose readings go through their building's gateway (0..1)"),
    )
    p.add_argument("--processes", type=int, default=1, help=_("publisher processes (1)"))
    p.add_argument(
        "--progress",
        choices=("auto", "lines", "none"),
        default="auto",
        help=_("progress on stderr: redrawn on a terminal (auto), a line every 30 s, or none"),
    )
    p.add_argument("--labels", type=Path, help=_("write the ground truth here (JSON Lines)"))
    p.add_argument("--registry-out", type=Path, help=_("write the registry (JSON list) here"))
    p.add_argument("--no-register", action="store_true", help=_("do not POST the registry"))
    p.add_argument(
        "--site-timezone",
        metavar="TZ",
        type=_time_zone(_),
        help=_("set each site's time zone when registering, e.g. Asia/Shanghai (default: UTC)"),
    )
    p.add_argument(
        "--site-standard",
        choices=("EN", "GB"),
        help=_("set each site's standard when registering (default: EN)"),
    )
    p.add_argument("--no-publish", action="store_true", help=_("only register / write files"))
    g = p.add_argument_group(_("GB/T 26875.3 (--protocol gb26875)"))
    g.add_argument(
        "--protocol",
        choices=("mqtt", "gb26875"),
        default="mqtt",
        help=_(
            "mqtt: devices of the contract; gb26875: fire panels' transmission devices over "
            "TCP to the gateway (one per site, --devices-per-site points each)"
        ),
    )
    g.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        type=_host_port(_),
        help=_("the gateway (default 127.0.0.1:9026)"),
    )
    g.add_argument("--heartbeat", type=float, default=20.0, help=_("heartbeat period s (20)"))
    g.add_argument("--resend", type=float, default=5.0, help=_("resend after s unconfirmed (5)"))
    g.add_argument("--split", type=float, default=0.3, help=_("share of frames split (0.3)"))


def _scenario_names(args: argparse.Namespace) -> list[str]:
    names = list(args.scenario)
    if args.scenario_file:
        mix = orjson.loads(args.scenario_file.read_bytes())
        if isinstance(mix, dict):
            for name, count in mix.items():
                names.extend([str(name)] * int(count))
        elif isinstance(mix, list):
            names.extend(str(n) for n in mix)
        else:
            raise ValueError("scenario file must hold an object {name: count} or a list")
    return expand_scenarios(names)


def print_library(lang: str = i18n.DEFAULT_LANG) -> None:
    width = max(len(n) for n in LIBRARY)
    for s in LIBRARY.values():
        expect = s.expected or "none"
        about = i18n.translate(s.description, lang)
        print(f"{s.name:<{width}}  {s.kind:<10} expect={expect:<11} {about}")


# `--progress lines` (and non-terminals): one line this often, not one per second.
PROGRESS_LINE_EVERY_S = 30.0


class _EndProgressLine(logging.Filter):
    """A log record ends the progress line being redrawn in place (`\r`), so the
    two never end up glued together on one line."""

    pending = False

    def filter(self, record: logging.LogRecord) -> bool:
        if _EndProgressLine.pending:
            sys.stderr.write("\n")
            _EndProgressLine.pending = False
        return True


def _progress(mode: str = "auto") -> Callable[[Counters, float], None] | None:
    """A progress line on stderr: achieved rate since the last one, totals, errors.
    `auto`: redrawn in place on a terminal, a line every 30 s otherwise; `lines`:
    a line every 30 s; `none`: nothing."""
    if mode == "none":
        return None
    tty = mode == "auto" and sys.stderr.isatty()
    every = 0.1 if tty else PROGRESS_LINE_EVERY_S
    if tty:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_EndProgressLine())
    last = [0.0, 0, 0]  # elapsed, readings, messages

    def show(cn: Counters, elapsed: float) -> None:
        dt = elapsed - last[0]
        if dt < every:
            return  # the closing report repeats the last one
        rate = (cn.readings - last[1]) / dt
        mrate = (cn.messages - last[2]) / dt
        last[:] = [elapsed, cn.readings, cn.messages]
        line = (
            f"sim: {elapsed:7.1f}s  {rate:>10,.0f} readings/s  {mrate:>9,.0f} msg/s  "
            f"total {cn.messages:,} msgs {cn.readings:,} readings  errors {cn.errors}"
        )
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        sys.stderr.flush()
        _EndProgressLine.pending = tty

    return show


def _line_end() -> str:
    """A newline when a progress line is open on the terminal, else nothing."""
    pending, _EndProgressLine.pending = _EndProgressLine.pending, False
    return "\n" if pending else ""


def run_sim(args: argparse.Namespace, settings: Settings) -> int:
    if args.protocol == "gb26875":
        return run_sim_gb26875(args, settings)
    lang = getattr(args, "language", i18n.DEFAULT_LANG)
    if "list" in args.scenario:
        print_library(lang)
        return EXIT_OK
    unknown = [n for n in args.scenario if n != "all" and n not in LIBRARY]
    if unknown:
        message = i18n.translate(
            "unknown scenario {name} (try --scenario list)", lang, name=repr(unknown[0])
        )
        print(f"firesafe sim: {message}", file=sys.stderr)
        return EXIT_USAGE
    try:
        names = _scenario_names(args)
    except (ValueError, OSError) as exc:
        print(f"firesafe sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.sites < 1 or args.devices_per_site < 1 or not 0 <= args.gateway_fraction <= 1:
        message = i18n.translate(
            "--sites and --devices-per-site must be >= 1, --gateway-fraction in 0..1", lang
        )
        print(f"firesafe sim: {message}", file=sys.stderr)
        return EXIT_USAGE

    estate = generate_estate(args.sites, args.devices_per_site, args.seed,
                             site_prefix=args.site_prefix)  # fmt: skip
    probe = simulate(estate, [], duration_s=1.0, seed=args.seed, start_ms=0)
    natural = probe.messages_per_s()  # readings/s at real time
    speed: float | None
    if args.speed:
        speed = None if args.speed == "max" else float(args.speed)
    elif args.rate:
        speed = args.rate / natural
    else:
        speed = 1.0
    now_ms = int(time.time() * 1000)
    start_ms = args.start_ms
    if start_ms is None:
        start_ms = now_ms if speed == 1.0 else now_ms - round(args.duration * 1000)
    pinned = DEMO_PLAN if args.demo else ()
    sim = simulate(
        estate,
        names,
        duration_s=args.duration,
        seed=args.seed,
        start_ms=start_ms,
        gateway_fraction=args.gateway_fraction,
        telemetry_qos=args.qos,
        pinned=pinned,
    )
    log.info(
        "estate: %d sites, %d devices, %.0f readings/s at real time; speed %s; %d scenarios",
        len(estate.sites), len(estate.devices), natural,
        "max" if speed is None else f"{speed:g}x", len(sim.labels),
    )  # fmt: skip
    if args.labels:
        write_labels(args.labels, sim.labels)
    if args.registry_out:
        write_registry(args.registry_out, estate.registry())
    if not args.no_register:
        if settings.admin_token is None:
            # A device maker pointing the simulator at a bare broker has no API:
            # publish anyway, and say what a platform would make of it.
            log.warning(
                "no FIRESAFE_ADMIN_TOKEN: devices are not registered (a firesafe platform "
                "rejects their messages as unknown_device); publishing anyway"
            )
        else:
            try:
                n = register(settings.api_url, settings.admin_token.get_secret_value(),
                             estate.registry())  # fmt: skip
            except RegistrationError as exc:
                print(f"firesafe sim: registration failed: {exc}", file=sys.stderr)
                return EXIT_FAILED
            log.info("registered %d devices at %s", n, settings.api_url)
            try:
                configure_sites(
                    settings.api_url,
                    settings.admin_token.get_secret_value(),
                    list(estate.sites),
                    timezone=args.site_timezone,
                    standard=args.site_standard,
                )
            except RegistrationError as exc:
                print(f"firesafe sim: site settings failed: {exc}", file=sys.stderr)
                return EXIT_FAILED
    if args.no_publish:
        return EXIT_OK
    try:
        endpoint = settings.mqtt
    except RuntimeError as exc:
        print(f"firesafe sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    job = Job(
        sites=args.sites,
        devices_per_site=args.devices_per_site,
        seed=args.seed,
        scenarios=tuple(names),
        duration_s=args.duration,
        start_ms=start_ms,
        endpoint=endpoint,
        speed=speed,
        site_prefix=args.site_prefix,
        gateway_fraction=args.gateway_fraction,
        telemetry_qos=args.qos,
        connections=args.connections,
        pinned=pinned,
    )
    show = _progress(args.progress)
    wall0 = time.monotonic()
    try:
        totals = run_job(job, args.processes, show)
    except PublishError as exc:
        print(f"{_line_end()}firesafe sim: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{_line_end()}firesafe sim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    wall = time.monotonic() - wall0
    # The rate is over the publishing window (first publish to last PUBACK of
    # every process); the setup before it (estate, simulation) is shown apart.
    busy = totals.publish_s or wall
    print(
        f"{_line_end()}sim: done in {wall:.1f}s ({busy:.1f}s publishing): "
        f"{totals.messages:,} messages, {totals.readings:,} readings "
        f"({totals.readings / busy:,.0f} readings/s, {totals.messages / busy:,.0f} msg/s), "
        f"errors {totals.errors}",
        file=sys.stderr,
    )
    return EXIT_OK if totals.errors == 0 else EXIT_FAILED


DEFAULT_CONFORMANCE_S = 60.0


def run_sim_gb26875(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from device_sim import gb26875_sim as gs
    from firesafe.settings import parse_listen

    uitds = gs.make_estate(args.sites, args.devices_per_site, args.seed, args.site_prefix)
    registry = gs.registry(uitds, args.heartbeat)
    if args.registry_out:
        write_registry(args.registry_out, registry)
    if not args.no_register:
        if settings.admin_token is None:
            print("firesafe sim: set FIRESAFE_ADMIN_TOKEN to register (or --no-register)",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        try:
            register(settings.api_url, settings.admin_token.get_secret_value(), registry)
        except RegistrationError as exc:
            print(f"firesafe sim: {exc}", file=sys.stderr)
            return EXIT_FAILED
    if args.no_publish:
        return EXIT_OK
    host, port = parse_listen(args.gateway or settings.gb26875_listen or "127.0.0.1:9026")
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    print(f"sim gb26875: {len(uitds)} transmission devices, {args.devices_per_site} points "
          f"each -> tcp://{host}:{port}", file=sys.stderr)  # fmt: skip
    try:
        stats = asyncio.run(
            gs.run(
                uitds,
                host,
                port,
                args.duration,
                args.seed,
                heartbeat_s=args.heartbeat,
                resend_s=args.resend,
                split_p=args.split,
            )
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(stats.line(), file=sys.stderr)
    return EXIT_FAILED if stats.stopped else EXIT_OK


class _NoSiteNeeded(argparse.Action):
    """`--gb26875`: judge a transmission device over TCP, so `--site` is not required."""

    def __init__(self, option_strings: list[str], dest: str, site: argparse.Action, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, **kw)
        self.site = site

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, True)
        self.site.required = False  # checked once every argument is read


def add_conformance_arguments(parser: argparse.ArgumentParser, _: Translate = _same) -> None:
    """The options of `firesafe conformance`; `_` puts their help in the run's language."""
    p = parser
    site = p.add_argument(
        "--site", required=True, type=_identifier(_), help=_("the site whose traffic to judge")
    )
    p.add_argument(
        "--device",
        type=_identifier(_),
        help=_("judge only this device (default: every device seen)"),
    )
    g = p.add_argument_group(_("GB/T 26875.3 transmission devices"))
    g.add_argument(
        "--gb26875",
        action=_NoSiteNeeded,
        site=site,
        default=False,
        help=_("stand in for a monitoring centre on --listen and judge a transmission device"),
    )
    g.add_argument(
        "--listen", metavar="[HOST:]PORT", type=_port(_), help=_("where to listen (--gb26875)")
    )
    g.add_argument(
        "--utc-offset", type=int, default=480, help=_("the device clock's UTC offset, min (480)")
    )
    g.add_argument(
        "--heartbeat-max", type=float, default=120.0, help=_("longest heartbeat gap allowed s")
    )
    p.add_argument(
        "--duration",
        type=_positive(_, "--duration"),
        default=DEFAULT_CONFORMANCE_S,
        help=_("seconds to listen (60; at least 3 reporting intervals to judge the interval)"),
    )
    p.add_argument(
        "--interval",
        type=float,
        help=_("the device's registered interval_s (default: the kind's default)"),
    )
    p.add_argument(
        "--max-skew",
        type=float,
        default=MAX_SKEW_S,
        help=_("largest allowed |ts - arrival| in seconds ({seconds})").format(
            seconds=f"{MAX_SKEW_S:g}"
        ),
    )
    p.add_argument("--json", action="store_true", help=_("print the report as JSON"))


def run_conformance(args: argparse.Namespace, settings: Settings) -> int:
    if args.gb26875:
        return run_conformance_gb26875(args)
    if not args.site:
        print("firesafe conformance: --site is required (or --gb26875)", file=sys.stderr)
        return EXIT_USAGE
    try:
        endpoint = settings.mqtt
    except RuntimeError as exc:
        print(f"firesafe conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lang = getattr(args, "language", i18n.DEFAULT_LANG)
    checker = Checker(args.site, args.device, interval_s=args.interval, max_skew_s=args.max_skew)
    topics, seconds = f"fs/v1/{args.site}/#", f"{args.duration:g}"
    print(
        "conformance: "
        + i18n.translate(
            "listening to {topics} on {broker} for {seconds} s...",
            lang,
            topics=topics,
            broker=endpoint.url(),
            seconds=seconds,
        ),
        file=sys.stderr,
    )
    try:
        listen(endpoint, checker, args.duration)
    except (OSError, RuntimeError) as exc:
        print(f"firesafe conformance: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            "conformance: " + i18n.translate("interrupted; judging what was observed", lang),
            file=sys.stderr,
        )
    results = checker.report(lang)
    if args.json:
        report = {
            "site": args.site,
            "device": args.device,
            "messages": checker.observed,
            "lang": lang,
            "rules": [r.__dict__ for r in results],
        }
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(results, checker.observed, lang))
    failed = checker.observed == 0 or any(r.status == "fail" for r in results)
    return EXIT_FAILED if failed else EXIT_OK


def run_conformance_gb26875(args: argparse.Namespace) -> int:
    import asyncio

    from device_sim import gb26875_conformance as gc

    listen_at = args.listen or "9026"
    host, _, port = listen_at.rpartition(":")
    if not port.isdigit():
        print("firesafe conformance: --listen [HOST:]PORT", file=sys.stderr)
        return EXIT_USAGE
    centre = gc.Centre(
        utc_offset_min=args.utc_offset,
        max_skew_s=args.max_skew,
        heartbeat_max_s=args.heartbeat_max,
    )
    print(
        f"conformance: monitoring centre on tcp://{host or '0.0.0.0'}:{port} for "
        f"{args.duration:g} s (the first data frame is not confirmed once: it must be resent)",
        file=sys.stderr,
    )
    try:
        asyncio.run(gc.serve(centre, host or "0.0.0.0", int(port), args.duration))
    except KeyboardInterrupt:
        print("conformance: interrupted; judging what was observed", file=sys.stderr)
    except OSError as exc:
        print(f"firesafe conformance: {exc}", file=sys.stderr)
        return EXIT_FAILED
    results = centre.report()
    if args.json:
        report = {"frames": centre.observed, "rules": [r.__dict__ for r in results]}
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(gc.render(results, centre.observed))
    failed = centre.observed == 0 or any(r.status == "fail" for r in results)
    return EXIT_FAILED if failed else EXIT_OK
