# Taskdeck developer commands. `make demo` and `make test` are the README's two set-up commands.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: install browser postgres demo emulator test lint typecheck unit test-under-load bench clean

install: $(VENV)/.installed

# Re-install when the dependency pins change; constraints.txt pins every package.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

demo: install  ## install, then serve the app on http://127.0.0.1:8000 against the built-in emulator
	$(BIN)/taskdeck serve --demo

emulator: install  ## the Parallel Task API emulator alone, on http://127.0.0.1:8900
	$(BIN)/taskdeck emulator --time-scale 0.1

# Browser tests drive Debian's chromium (never a downloaded browser); install it when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The store tests run on PostgreSQL too (tests/pg.py): a server on 127.0.0.1:5432, or a throwaway
# cluster the tests start with initdb/pg_ctl. Install the server binaries when neither is there.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || command -v initdb >/dev/null 2>&1 || \
		ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "installing PostgreSQL for the store tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

# mypy --strict on the package, the benchmarks, and each test folder (their conftest modules share a name).
typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --strict bench
	@for dir in tests/*/; do \
		ls $$dir*.py >/dev/null 2>&1 || continue; \
		echo "mypy --strict $$dir"; MYPYPATH=tests:$$dir $(BIN)/mypy --strict $$dir || exit 1; \
	done

unit: install browser postgres
	$(BIN)/pytest

test: lint typecheck unit  ## install, then lint, type-check and run the whole test suite

test-under-load: install browser  ## the suite three times in a row while two busy processes load both cores
	tests/under_load.sh 3

bench: install  ## benchmarks: print a table, write bench/results/*.json
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
