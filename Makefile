# Two commands: `make run` (set up and try it) and `make test`. Both start from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false

.PHONY: run test install lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[farm,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/emp data bootstrap
	$(BIN)/emp data check --symbol SP500
	$(BIN)/emp evolve -c configs/quickstart.yaml
	$(BIN)/emp gates latest

# pytest exits 5 when it collects nothing; say so and fail.
test: $(STAMP)
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
