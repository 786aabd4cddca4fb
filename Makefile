# Two commands: `make run` (set up and try it) and `make test`. Both start from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false

.PHONY: run test install lint clean sysdeps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[farm,dev]'
	touch $(STAMP)

install: $(STAMP)

# System packages the tests need: the PostgreSQL server binaries (the registry tests start a
# throwaway server), rsync (publication to the live host) and promtool from Debian's
# prometheus package (the alert-rule tests). Installed only when missing, so a machine that
# has them pays one `ls`; as root (CI) through apt, otherwise it says how.
PG_CTL_GLOB := /usr/lib/postgresql/*/bin/pg_ctl
SYSPKGS     := postgresql rsync prometheus
sysdeps:
	@if ls $(PG_CTL_GLOB) >/dev/null 2>&1 && command -v rsync >/dev/null 2>&1 \
		&& command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends $(SYSPKGS); \
	elif [ "$$EMP_SKIP_POSTGRES" = 1 ] || [ "$$EMP_SKIP_PROMTOOL" = 1 ]; then \
		echo "make: PostgreSQL server, rsync or promtool missing; EMP_SKIP_POSTGRES=1 / EMP_SKIP_PROMTOOL=1 skip those tests" >&2; \
	else \
		echo "make: PostgreSQL server, rsync or promtool missing: run 'sudo apt-get install -y --no-install-recommends $(SYSPKGS)' (or set EMP_SKIP_POSTGRES=1 / EMP_SKIP_PROMTOOL=1)" >&2; \
		exit 1; \
	fi

run: $(STAMP)
	$(BIN)/emp data bootstrap
	$(BIN)/emp data check --symbol SP500
	$(BIN)/emp evolve -c configs/quickstart.yaml
	$(BIN)/emp gates latest

# pytest exits 5 when it collects nothing; say so and fail. The tests run in one worker per CPU
# (at most 4; pytest-xdist, whole files per worker so module fixtures are built once): most
# of them wait on processes, sockets and fsync, and each worker starts its own Ray and
# PostgreSQL. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
test: sysdeps $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var .pytest_cache
