# Two commands: `make demo` and `make test`. Everything else is what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format test-integration bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_setup
	$(BIN)/python demo_project/run.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy webhooks_app

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest -m "not integration"

test-integration: $(STAMP)
	bash .ci/integration.sh

# Both configurations: the embedded default, then PostgreSQL + Redis started by the CI script.
bench: $(STAMP)
	$(BIN)/python bench/run.py
	bash .ci/integration.sh --exec $(BIN)/python bench/run.py --only write_path,throughput,latency,isolation,backlog

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo
