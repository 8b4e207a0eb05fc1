# rivalis-fleet: make run | make test
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv install etcd chromium wrk protos lint test run run-ha bench bench-quick fuzz chaos clean

venv: $(PY)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

protos: install
	$(PY) tools/gen_protos.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The client's SIGKILL/restart chaos and the load generator's leader-kill smoke run in
# `make chaos` only; `make test` has their short forms (tests/client: 504, 502, settling,
# a failover on etcd, both transports; tests/examples/test_run_ha.py).
# The suite runs on one pytest-xdist worker per core (TEST_WORKERS=0: in this process).
TEST_WORKERS ?= auto
test: install lint etcd chromium
	$(PY) -m pytest -q -n $(TEST_WORKERS) --ignore=tests/chaos/test_client_failover.py \
		--deselect tests/test_tools_smoke.py::test_loadgen_agents_follow_the_new_leader_after_the_leader_is_killed \
		$(PYTEST_ARGS)

# The election tests start their own etcd (CONTRACT §10). Debian's package starts a
# system etcd on port 2379 when it installs (as the user etcd); that one is stopped, as the
# tests bring their own.
etcd:
	@if ! command -v etcd >/dev/null 2>&1; then \
		echo "etcd not found: installing the Debian package etcd-server (apt-get, as root)"; \
		[ "$$(id -u)" = 0 ] || { echo "installing etcd-server needs root" >&2; exit 1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null \
			|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq etcd-server >/dev/null; } || exit 1; \
		systemctl disable --now etcd >/dev/null 2>&1 || service etcd stop >/dev/null 2>&1 || true; \
		pkill -x -u etcd etcd || true; \
		command -v etcd >/dev/null || { echo "etcd-server installed no etcd binary" >&2; exit 1; }; \
	fi

# The dashboard tests drive the system browser (CONTRACT §12): Debian's chromium and
# chromium-driver, installed when missing; nothing is downloaded at run time.
chromium:
	@if [ ! -x /usr/bin/chromium ] || ! command -v chromedriver >/dev/null 2>&1; then \
		echo "chromium not found: installing the Debian packages chromium and chromium-driver (apt-get, as root)"; \
		[ "$$(id -u)" = 0 ] || { echo "installing chromium needs root" >&2; exit 1; }; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
			|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq chromium chromium-driver >/dev/null; } || exit 1; \
		command -v chromedriver >/dev/null || { echo "chromium-driver installed no chromedriver" >&2; exit 1; }; \
	fi

# The bench drives GET /v1/stats and its floor with wrk too (docs/performance.md):
# Debian's wrk, installed when missing; without it the bench says so and that row fails.
wrk:
	@if ! command -v wrk >/dev/null 2>&1; then \
		echo "wrk not found: installing the Debian package wrk (apt-get, as root)"; \
		if [ "$$(id -u)" = 0 ]; then \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
				|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
					apt-get install -y -qq wrk >/dev/null; } \
				|| echo "wrk could not be installed: the bench's wrk row will fail" >&2; \
		else echo "installing wrk needs root: the bench's wrk row will fail" >&2; fi; \
	fi

run: install
	$(PY) -m examples.run_fleet $(RUN_ARGS)

# etcd, two orchestrators (7350 and 7360) and the two example game servers.
run-ha: install etcd
	$(PY) -m examples.run_ha $(RUN_ARGS)

bench: install wrk
	$(PY) tools/bench.py $(BENCH_ARGS)

bench-quick: install wrk
	$(PY) tools/bench.py --quick $(BENCH_ARGS)

# Long runs of what `make test` runs briefly (docs/reliability.md): a 60 s churn, the
# leader SIGKILLed 5 times under 200 agents, etcd stopped and frozen, fleet_client through
# 20 of each of 504, 502, leader SIGKILL and restart; and schemathesis +
# hypothesis with many examples and a random seed, and a 30 s malformed-HTTP flood.
chaos: install etcd
	CHURN_SECONDS=$${CHURN_SECONDS:-60} CLIENT_TRIES=$${CLIENT_TRIES:-20} HA_AGENTS=$${HA_AGENTS:-200} HA_KILLS=$${HA_KILLS:-5} \
		ETCD_OUTAGES=$${ETCD_OUTAGES:-stop,pause} ETCD_OUTAGE_S=$${ETCD_OUTAGE_S:-10} \
		$(PY) -m pytest -q -s tests/chaos tests/client/test_retries.py \
		tests/test_tools_smoke.py::test_loadgen_agents_follow_the_new_leader_after_the_leader_is_killed \
		$(PYTEST_ARGS)

fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} HYPOTHESIS_PROFILE=fuzz \
		HTTP_FLOOD_SECONDS=$${HTTP_FLOOD_SECONDS:-30} \
		$(PY) -m pytest -q -s tests/fuzz $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
