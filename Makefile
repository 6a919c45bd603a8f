# The two commands a newcomer needs:  `make run`  and  `make test`.
# Each creates .venv when missing and installs the pinned stack into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= $(or $(BENCH_SUITE_DATA),../shared/datasets)
MATRIX ?= smoke
RESULTS ?= results
STAMP := $(VENV)/.installed

.PHONY: run test install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## run: the smoke benchmark matrix end to end, then the report
run: $(STAMP)
	BENCH_SUITE_DATA=$(DATA) $(BIN)/bench-suite run $(MATRIX) --results $(RESULTS)
	$(BIN)/bench-suite report $(RESULTS)/$(MATRIX) --out reports/$(MATRIX) --matrix $(MATRIX)

## test: the test suite (datasets from $(DATA))
test: $(STAMP)
	BENCH_SUITE_DATA=$(DATA) $(BIN)/python -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
