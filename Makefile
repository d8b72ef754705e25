# pgwarden: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PLUGINS := $(wildcard plugins/*/setup.cfg) examples/pgwarden-tiny/setup.cfg examples/pgwarden-hello/setup.cfg

.PHONY: venv demo test soak lint typecheck bench clean deb

# pytest 8.4: pytest-xdist 3.8 groups tests (--dist loadgroup) by renaming node ids, which
# pytest 9 ignores (tests/core/test_xdist_groups.py)
$(VENV)/.installed: setup.cfg pyproject.toml $(PLUGINS) Makefile
	@echo "== virtualenv $(VENV): the core, the plugins (editable) and the test tools; once per clone"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e . $(foreach p,$(PLUGINS),-e $(dir $(p))) pytest==8.4.2 pytest-xdist==3.8.0 ruff==0.17.6 mypy==2.4.1 schemathesis==4.32.5 trustme==1.2.1
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/pgwarden demo

# make test: the fast layer first (tests marked unit, no PostgreSQL: seconds; a
# failure stops here), then the PostgreSQL suites over TEST_WORKERS pytest-xdist
# workers (each its own throwaway cluster; the tests mostly wait on PostgreSQL
# and HTTP, so more workers than cores pay) while bench/smoke.py runs the
# example plugin's tests and every benchmark's --smoke run (they assert no
# timing) in the background; their output follows the suites'.
# TEST_WORKERS=0 runs the suites in one process.
TEST_WORKERS ?= 4
test: venv
	@$(PY) -c "import sys; from agent_core.cluster import find_bindir, INSTALL_HINT; find_bindir() or sys.exit(INSTALL_HINT)"
	$(PY) -m pytest -q -m unit
	@log=$$(mktemp); \
	echo "== in the background: bench/smoke.py (the example plugin's tests, every --smoke run) > $$log"; \
	$(PY) bench/smoke.py "cd examples/pgwarden-tiny && $(abspath $(PY)) -m pytest -q tests" "cd examples/pgwarden-hello && $(abspath $(PY)) -m pytest -q tests" > $$log 2>&1 & smokes=$$!; \
	echo "$(PY) -m pytest -m 'not unit' -n $(TEST_WORKERS) --dist loadgroup --durations=10"; \
	$(PY) -m pytest -m "not unit" -n $(TEST_WORKERS) --dist loadgroup --durations=10; suites=$$?; \
	wait $$smokes; smoked=$$?; cat $$log; rm -f $$log; \
	test $$suites -eq 0 && test $$smoked -eq 0

# make soak: the long runs (docs/reliability.md): the load test for SOAK_SECONDS
# (default 600) instead of 20, then the fault suites SOAK_ROUNDS times (default 5)
# with their long variants (PGWARDEN_SOAK=1).
SOAK_SECONDS ?= 600
SOAK_ROUNDS ?= 5
soak: venv
	@$(PY) -c "import sys; from agent_core.cluster import find_bindir, INSTALL_HINT; find_bindir() or sys.exit(INSTALL_HINT)"
	PGWARDEN_LOAD_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q -s tests/faults/test_load.py
	for i in $$(seq $(SOAK_ROUNDS)); do PGWARDEN_SOAK=1 $(PY) -m pytest -q tests/faults -k "not test_load" || exit 1; done

# make deb: pgwarden_<version>_<arch>.deb here, a virtualenv under /opt/pgwarden made
# with Debian's python3 (packaging/build_deb.py; about a minute, skipped while
# the sources are unchanged). Install: apt install ./pgwarden_*.deb
DEB_PYTHON ?= /usr/bin/python3
deb:
	$(DEB_PYTHON) packaging/build_deb.py --python $(DEB_PYTHON)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

bench: venv
	$(PY) bench/run.py --results
	mkdir -p bench/out && $(PY) bench/hostile.py --json bench/out/hostile.json
	$(PY) bench/metrics.py --json bench/out/metrics.json

clean:
	rm -rf $(VENV) .demo build *.egg-info plugins/*/*.egg-info pgwarden_*.deb
