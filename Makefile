# The two commands: `make run` (the whole DAQ on a simulated board) and `make test`.
# Both create .venv and install what they need, once per pyproject change: `make run` only
# the package, `make test` also the test tools, the reference library and a browser.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed

.PHONY: run test browser lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

# The test install is a superset of the run install, so it satisfies both stamps.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,reference]'
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/larpix-daq up --data-dir data --sim-rate physics

# The web UI tests drive Debian's chromium; where it cannot be installed they are skipped
# with the reason in the summary (never an error).
browser:
	@sh .ci/browser

test: $(TEST_STAMP) browser
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench

bench: $(RUN_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
