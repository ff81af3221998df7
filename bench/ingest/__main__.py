"""`python -m bench.ingest`: the end-to-end ingest benchmark (see bench/ingest/__init__.py)."""

import sys

from bench.ingest.cli import main

sys.exit(main())
