# firesafe: the two commands of the README, and a few more.
#   make up    - venv, install, run everything with the simulator (embedded broker + database)
#   make test  - venv, install, lint, type-check and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install up test lint typecheck pytest fuzz bench bench-scale messages dashboards mutation
install: $(BIN)/.installed

up: install
	$(BIN)/firesafe up --sim

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Two workers (pytest-xdist), each with its own database and broker: most of the
# suite waits on real services, so it takes about half the time (`.ci/run` too).
TEST_WORKERS ?= 2
pytest: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

test: lint typecheck pytest

# The API against its own OpenAPI schema, deeper than CI's 15 examples per operation,
# and the property tests with five times CI's examples.
fuzz: install
	FIRESAFE_FUZZ_EXAMPLES=500 $(BIN)/pytest tests/test_api_schema.py
	FIRESAFE_PROPERTY_SCALE=3 $(BIN)/pytest tests/test_detection_calm.py \
		tests/test_detection_load.py tests/test_detection_engine.py

# bench: needs mosquitto on PATH; the database is FIRESAFE_BENCH_SERVER_URL when set,
# else an embedded PostgreSQL in a temporary directory. Takes several minutes.
bench: install
	@echo "make bench: ingest (mosquitto + PostgreSQL: FIRESAFE_BENCH_SERVER_URL or embedded), detection, quality; several minutes"
	$(BIN)/python -m bench.ingest
	$(BIN)/python bench/detection.py
	$(BIN)/python bench/detection_lag.py
	$(BIN)/python bench/quality.py

# Sharded ingest: 1, 2 and 4 processes, kill -9 failover, and one process
# against 1,000,000 registered devices (docs/scaling.md; several minutes).
bench-scale: install
	$(BIN)/python bench/ingest_scale.py
	$(BIN)/python bench/capacity.py

# Mutation testing of the alarm rules (not in CI: it takes long). First the
# mutations named in issue 18 (constants included), then mutmut over
# detection/machine.py and detection/kernel.py; `mutmut results` lists survivors.
mutation: install
	$(BIN)/python -m pip install --quiet -e '.[mutation]'
	$(BIN)/python -m tests.named_mutants
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# Catalogue upkeep: extract every msgid into firesafe/locale/messages.pot, merge
# it into each language's .po and list what is left to translate.
messages: install
	$(BIN)/python -m firesafe.i18n

# Regenerate grafana/dashboards/<lang>/*.json after editing the generator or a .po.
dashboards: install
	$(BIN)/python grafana/build_dashboards.py
