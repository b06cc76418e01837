# backup_tasks: make targets of the seed, plus the processes and the checks.
# Targets with colons are escaped for GNU make: `make db:backup:oneshot` works as written.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
BACKUPCTL := $(VENV)/bin/backupctl
CELERY := $(VENV)/bin/celery
STAMP := $(VENV)/.installed-stamp
# LOCAL=1 runs the job in this process instead of on a Celery worker; YES=1 skips restore confirmation.
CTL_FLAGS := $(if $(filter 1 yes true,$(LOCAL)),--local,)
YES_FLAG := $(if $(filter 1 yes true,$(YES)),--yes,)

define need_file
@if [ -z "$(FILE)" ]; then echo "usage: make $@ FILE=backup_YYYYMMDD_HHMMSS.backup.gz (a name in BACKUP_DIR or a path)" >&2; exit 2; fi
endef

.PHONY: help install services test test-adversarial bench lint demo worker beat flower up down clean

help:
	@echo "make demo | test | bench | lint | worker | beat | flower | up | down"
	@echo "make db:backup:oneshot | db:backup:list | db:backup:diff FILE=… | db:backup:restore FILE=… | db:backup:restore:dry-run FILE=…"
	@echo "make db:backup:upload FILE=… | db:backup:download FILE=… | db:backup:list:remote | db:backup:restore:s3 FILE=… | db:backup:restore:s3:dry-run FILE=…"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

services:
	@scripts/ensure-services.sh

test: install services
	$(VENV)/bin/pytest

test-adversarial: install services
	$(VENV)/bin/pytest -m adversarial

bench: install services
	$(PY) bench/run.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/python -m compileall -q backup_tasks beat_schedule.py tests
	@if [ -x $(VENV)/bin/ruff ]; then $(VENV)/bin/ruff check backup_tasks tests; else echo "ruff not installed: pip install ruff"; fi

demo: install services
	@scripts/demo.sh

worker: install
	./worker

beat: install
	$(CELERY) -A backup_tasks.celery_app beat --loglevel=INFO

flower: install
	$(CELERY) -A backup_tasks.celery_app flower

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

clean:
	rm -rf $(VENV) .pytest_cache
