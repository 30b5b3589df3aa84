# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps crs-rules test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Tests start a real Redis server and drive the dashboard in headless Chromium (Debian packages);
# the benchmark needs nginx and wrk.
# rsyslog receives audit events in the syslog sink tests (a private daemon on a loopback port).
# modsecurity-crs: the OWASP CRS that `input.inspection.crs` loads by default (/usr/share/modsecurity-crs/rules).
SYSTEM_PACKAGES := redis-server chromium rsyslog rsyslog-openssl modsecurity-crs
system-deps:
	@missing=""; for pkg in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

lint: install
	$(VENV)/bin/ruff check bastion tests $(wildcard bench)

test: install system-deps lint
	$(PY) -m pytest

demo: install crs-rules
	$(VENV)/bin/bastion demo

# Only the CRS for the demo (system-deps would also pull Chromium and Redis).
crs-rules:
	@dpkg-query -W -f='$${Status}' modsecurity-crs 2>/dev/null | grep -q "ok installed" || { $(SUDO) apt-get \
		update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq modsecurity-crs; }

bench: install system-deps
	@command -v nginx >/dev/null && command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light wrk; }
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
