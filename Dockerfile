# One image for the worker, beat and flower services of docker-compose.yml.
#   docker build -t backup-tasks:local .
# It runs the installed wheel, not a checkout: the first stage builds the wheel from the repository, the
# second installs it with the exact versions of requirements.lock, and no repository file is left beside it.
# What runs is chosen by the compose `command:` (default: the worker entry point).
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# The whole repository (minus .dockerignore): pyproject.toml, README.md, backup_tasks/, beat_schedule.py.
COPY . /src
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root user that runs every process of the image.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

# The lock as a constraint: the image gets the versions CI tested, but only the runtime part of the tree
# (the test extras in the lock are not installed). Installs the console scripts backupctl, backup-tasks-worker,
# backup-tasks-beat and backup-tasks-flower, and the top-level module beat_schedule.
# /backups is the shared BACKUP_DIR volume; a fresh named volume takes this directory's owner.
COPY requirements.lock /tmp/requirements.lock
COPY --from=wheel /wheels /tmp/wheels
RUN pip install --constraint /tmp/requirements.lock /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels /tmp/requirements.lock \
 && mkdir -p /backups \
 && chown app:app /backups

ENV BACKUP_DIR=/backups
USER app
WORKDIR /home/app

CMD ["backup-tasks-worker"]
