"""`python -m device_sim sim|conformance ...`: the simulator without the rest of firesafe."""

from __future__ import annotations

import argparse
import logging
import sys

from device_sim.cli import (
    add_conformance_arguments,
    add_sim_arguments,
    run_conformance,
    run_sim,
)
from firesafe.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m device_sim")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sim_arguments(sub.add_parser("sim", help="publish a simulated estate"))
    add_conformance_arguments(sub.add_parser("conformance", help="check a device's traffic"))
    args = parser.parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    run = run_sim if args.command == "sim" else run_conformance
    code: int = run(args, settings)
    return code


if __name__ == "__main__":
    sys.exit(main())
