# Taskdeck developer commands. `make demo` and `make test` are the README's two set-up commands.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: install demo emulator test lint typecheck unit bench clean

install: $(VENV)/.installed

# Re-install when the dependency pins change; constraints.txt pins every package.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

demo: install  ## install, then run the emulator (the demo UI arrives with `taskdeck serve --demo`)
	$(BIN)/taskdeck emulator --time-scale 0.1

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

test: lint typecheck unit  ## install, then lint, type-check and run the whole test suite

bench: install  ## benchmarks: print a table, write bench/results/*.json
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
