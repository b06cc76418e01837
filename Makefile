# backup_tasks: make targets of the seed, plus the processes and the checks.
# Targets with colons are escaped for GNU make: `make db:backup:oneshot` works as written.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
BACKUPCTL := $(VENV)/bin/backupctl
STAMP := $(VENV)/.installed-stamp
# Exact versions of the whole dependency tree (runtime and test extras), generated from pyproject.toml's ranges
# by `make lock` (uv pip compile; UPGRADE=1 moves every pin to the newest release the ranges allow).
LOCK := requirements.lock
UV_VERSION := 0.13.8
# LOCAL=1 runs the job in this process instead of on a Celery worker; YES=1 skips restore confirmation;
# DB=NAME picks a database of BACKUP_DATABASES_FILE (backupctl --db NAME).
CTL_FLAGS := $(if $(filter 1 yes true,$(LOCAL)),--local,) $(if $(DB),--db $(DB),)
YES_FLAG := $(if $(filter 1 yes true,$(YES)),--yes,)

define need_file
@if [ -z "$(FILE)" ]; then echo "usage: make $@ FILE=backup_YYYYMMDD_HHMMSS.backup.gz (a name in BACKUP_DIR or a path)" >&2; exit 2; fi
endef

.PHONY: help install lock services tools test test-fast test-adversarial bench lint demo worker beat flower metrics databases up down clean

help:
	@echo "make demo | test | test-fast | bench | lint | install | tools | lock [UPGRADE=1] | worker | beat | flower | metrics | databases | up | down"
	@echo "make db:backup:oneshot | db:backup:list | db:backup:diff FILE=… | db:backup:restore FILE=… | db:backup:restore:dry-run FILE=…"
	@echo "make db:backup:upload FILE=… | db:backup:download FILE=… | db:backup:list:remote | db:backup:restore:s3 FILE=… | db:backup:restore:s3:dry-run FILE=…"
	@echo "make db:backup:drill [FILE=…]  (restore into DRILL_DATABASE_URL and prove it; see README 'Restore drills')"

# Reinstalled when pyproject.toml or the lock changes; the lock is a constraint, so pip installs exactly its pins.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --constraint $(LOCK) -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# uv is a tool of this target only (installed into .venv on first use), not a dependency of the package.
# --universal: one lock for every platform and Python >= 3.11 (markers where they differ), not only this machine.
lock:
	@test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(VENV)/bin/pip install -q "uv==$(UV_VERSION)"; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --universal --python-version 3.11 --quiet \
		--custom-compile-command "make lock" \
		$(if $(filter 1 yes true,$(UPGRADE)),--upgrade,) --output-file $(LOCK)

services:
	@scripts/ensure-services.sh

# Tools the tests run besides Python packages (the age binary); installed with apt-get when missing.
tools:
	@scripts/ensure-tools.sh

# The whole suite, what CI runs: the lint first (a broken layer contract or a ruff finding fails the run).
# In TEST_WORKERS processes (pytest-xdist), each test file whole in one of them: most of the suite waits on
# workers, servers and a cron minute rather than computing, and every test has its own databases, Redis
# database and ports. Measured on this 2-core machine: 17 min 47 s in one process, 10 min 10 s in two.
TEST_WORKERS ?= 2
test: install services tools lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# The edit loop: pure logic and the quick database tests (no Celery worker, no S3 server, no fault injection).
test-fast: install services
	$(VENV)/bin/pytest -q -m "not slow and not celery and not s3 and not adversarial"

test-adversarial: install services
	$(VENV)/bin/pytest -m adversarial

bench: install services
	$(PY) bench/run.py $(BENCH_ARGS)

# ruff's rules are in pyproject.toml ([tool.ruff]); the layers are import-linter's contracts ([tool.importlinter]).
lint: install
	$(VENV)/bin/ruff check backup_tasks tests bench beat_schedule.py
	$(VENV)/bin/lint-imports

demo: install services
	@scripts/demo.sh

# The entry points of backup_tasks/processes.py, as installed from the wheel; extra Celery options: ARGS="…".
worker: install
	./worker $(ARGS)

beat: install
	$(VENV)/bin/backup-tasks-beat $(ARGS)

flower: install
	$(VENV)/bin/backup-tasks-flower $(ARGS)

# The Prometheus endpoint (not a Celery process): http://127.0.0.1:9648/metrics unless BACKUP_METRICS_* say otherwise.
metrics: install
	$(VENV)/bin/backup-tasks-metrics $(ARGS)

databases: install
	$(BACKUPCTL) databases $(if $(filter 1 yes true,$(LOCAL)),--local,)

up:
	docker compose up -d --build

down:
	docker compose down

db\:backup\:oneshot: install
	$(BACKUPCTL) create $(CTL_FLAGS)

db\:backup\:list: install
	$(BACKUPCTL) list $(CTL_FLAGS)

db\:backup\:diff: install
	$(need_file)
	$(BACKUPCTL) diff "$(FILE)" $(CTL_FLAGS)

db\:backup\:restore: install
	$(need_file)
	$(BACKUPCTL) restore "$(FILE)" $(CTL_FLAGS) $(YES_FLAG)

db\:backup\:restore\:dry-run: install
	$(need_file)
	$(BACKUPCTL) restore "$(FILE)" --dry-run $(CTL_FLAGS)

db\:backup\:upload: install
	$(need_file)
	$(BACKUPCTL) upload "$(FILE)" $(CTL_FLAGS)

db\:backup\:download: install
	$(need_file)
	$(BACKUPCTL) download "$(FILE)" $(CTL_FLAGS)

db\:backup\:list\:remote: install
	$(BACKUPCTL) list-s3 $(CTL_FLAGS)

db\:backup\:restore\:s3: install
	$(need_file)
	$(BACKUPCTL) restore-s3 "$(FILE)" $(CTL_FLAGS) $(YES_FLAG)

db\:backup\:restore\:s3\:dry-run: install
	$(need_file)
	$(BACKUPCTL) restore-s3 "$(FILE)" --dry-run $(CTL_FLAGS)

# FILE is optional here: without it the newest backup is drilled (from S3 when it is configured).
db\:backup\:drill: install
	$(BACKUPCTL) drill $(if $(FILE),"$(FILE)",) $(CTL_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache
