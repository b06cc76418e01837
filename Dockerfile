# One image for the worker, beat and flower services of docker-compose.yml.
#   docker build -t backup-tasks:local .
# What runs is chosen by the compose `command:` (default: the worker).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Non-root user that runs every process of the image.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app

WORKDIR /app
# The whole repository (minus .dockerignore): pyproject.toml, README.md, backup_tasks/, ./worker.
COPY . /app

# Installs the package `backup_tasks` with its dependencies and the console script `backupctl`.
# /backups is the shared BACKUP_DIR volume; a fresh named volume takes this directory's owner.
RUN pip install . \
 && chmod 0755 /app/worker \
 && mkdir -p /backups \
 && chown app:app /backups

ENV BACKUP_DIR=/backups
USER app

CMD ["./worker"]
