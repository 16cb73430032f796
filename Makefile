# The README's two promises: `make run` and `make test`, on a fresh Debian machine too.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PORT ?= 8000

.PHONY: run test e2e bench venv lint clean-var prod-check

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	@$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import django, allauth, celery, imapclient, playwright" 
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

run:
	@PYTHON=$(PYTHON) scripts/system-deps.sh run
	@$(MAKE) --no-print-directory venv
	@$(PY) -m devtools.runner --port $(PORT)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	PORTAL_ENV=test $(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

test:
	@PYTHON=$(PYTHON) scripts/system-deps.sh test
	@$(MAKE) --no-print-directory lint
	@eval "$$(scripts/ensure-services.sh)" && \
	  PORTAL_ENV=test PSC_MOCK_ENABLED=true PORTAL_DEMO=true DJANGO_ALLOW_ASYNC_UNSAFE=true \
	  $(PY) -m pytest $(PYTEST_ARGS)

# Two complete operators in one trust space, driven in Chromium (also part of `make test`).
# Screenshots of each step: var/e2e-artifacts/.
e2e:
	@PYTHON=$(PYTHON) scripts/system-deps.sh test
	@$(MAKE) --no-print-directory venv
	@eval "$$(scripts/ensure-services.sh)" && \
	  PORTAL_ENV=test PSC_MOCK_ENABLED=true PORTAL_DEMO=true DJANGO_ALLOW_ASYNC_UNSAFE=true \
	  $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Every benchmark of bench/, one after the other, then docs/performance.md (about an hour;
# BENCH_ARGS=--quick for a smoke run with small sizes).
bench:
	@PYTHON=$(PYTHON) scripts/system-deps.sh bench
	@$(MAKE) --no-print-directory venv
	@eval "$$(scripts/ensure-services.sh)" && $(PY) bench/run_all.py $(BENCH_ARGS)

# The production path for real: the image, docker-compose.yml with a generated test .env,
# healthchecks, then a journey against the containers; everything removed at the end (root;
# podman, runc, debootstrap installed if missing; the Debian base image cached in /var/tmp).
prod-check:
	@$(MAKE) --no-print-directory venv
	@scripts/prod-check.sh

clean-var:
	rm -rf var
