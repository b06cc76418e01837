"""Configuration from the environment and `.env`, validated by pydantic.

Built by get_settings(), never at import time, so tests and tasks can change the environment first. The loading
keeps pydantic-settings' rules for these fields in a few lines: names match case-insensitively, the environment
wins over `.env`, keyword arguments over both, unknown names are ignored. Two things differ: a bad value is a
ConfigError (exit code 2, one line, no traceback) where pydantic-settings raised its ValidationError at the user,
and no command pays pydantic-settings' ~90 ms of imports (asyncio among them). `.env` is parsed by python-dotenv,
as pydantic-settings did, and only when the file exists.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError
from .record import Record

ENV_FILE = ".env"


class Settings(Record):
    """The settings, validated; load_settings() reads them from the environment and .env."""

    model_config = ConfigDict(extra="ignore")

    # Database
    DATABASE_URL: SecretStr = SecretStr("postgresql://postgres@localhost:5432/postgres")
    # Several databases from one deployment (databases.py reads the file): unset, DATABASE_URL is the only one.
    BACKUP_DATABASES_FILE: Path | None = None
    BACKUP_DB: str | None = Field(None, description="the database a command acts on (backupctl --db)")
    BACKUP_LOCK_TIMEOUT_S: float = Field(60.0, description="how long backup/restore wait for table locks")

    # Backups on this host
    BACKUP_DIR: Path = Path("./backups")
    BACKUP_COMPRESSION_LEVEL: int = Field(1, ge=0, le=3, description="isal gzip level 0-3 (output is standard gzip)")
    BACKUP_REBUILD_INDEXES_MIN_ROWS: int = Field(
        10_000, ge=0, description="a restore builds a table's indexes after loading it (not row by row during the "
        "load) when the backup holds at least this many of its rows (or 4 MiB of them)"
    )
    BACKUP_MAX_LINE_BYTES: int = Field(
        512 * 1024 * 1024, description="largest single row (as JSON) a restore accepts; bounds memory on hostile files"
    )
    BACKUP_JOBS: int = Field(1, ge=1, le=64, description="parts of a backup written at once (1: one process)")
    BACKUP_PART_LEASE_S: float = Field(
        30, gt=0, description="a parallel backup's part whose writer stopped renewing for this long is written again"
    )
    BACKUP_SPLIT_MIN_BYTES: int = Field(
        128 * 1024 * 1024, ge=1024 * 1024,
        description="a parallel backup splits tables bigger than this into page ranges of about half of it"
    )
    # age encryption (archive/encryption.py): public keys to encrypt every backup to (comma-separated), or a file
    # of them one per line; the identity file (secret keys) readers decrypt with. Only a path is a setting here:
    # the secret key is read from the file when an encrypted backup is read, never held in settings.
    BACKUP_AGE_RECIPIENTS: str | None = None
    BACKUP_AGE_RECIPIENTS_FILE: Path | None = None
    BACKUP_AGE_IDENTITY_FILE: Path | None = None
    BACKUP_BATCH_BYTES: int = Field(
        4 * 1024 * 1024, ge=64 * 1024,
        description="rows are fetched and written in batches of about this many bytes (at least one row)"
    )

    # Schedule and retention
    BACKUP_CRON: str = "0 2 * * *"
    BACKUP_TIMEZONE: str = "UTC"
    BACKUP_RETENTION_DAYS: int = Field(7, ge=0)
    BACKUP_RETENTION_MIN_COUNT: int = Field(1, ge=1)
    BACKUP_KEEP_DAILY: int = Field(0, ge=0)
    BACKUP_KEEP_WEEKLY: int = Field(0, ge=0)
    BACKUP_KEEP_MONTHLY: int = Field(0, ge=0)
    BACKUP_NOTIFY_WEBHOOK_URL: SecretStr | None = None
    # apprise URLs (several: separated by spaces or commas); secrets, since most of them carry a token.
    BACKUP_NOTIFY_URLS: SecretStr | None = None
    BACKUP_NOTIFY_SUCCESS_URLS: SecretStr | None = None

    # Restore drills (README "Restore drills"): a scratch database the drill may overwrite, never production.
    DRILL_DATABASE_URL: SecretStr | None = None
    DRILL_PREPARE_COMMAND: str | None = Field(
        None, description="run before each drill with DATABASE_URL set to the scratch database (e.g. `alembic "
        "upgrade head`), to bring its schema up")
    DRILL_PREPARE_TIMEOUT_S: float = Field(600.0, gt=0, description="how long DRILL_PREPARE_COMMAND may run")
    BACKUP_DRILL_CRON: str | None = Field(None, description="when Beat runs the scheduled drill (unset: never)")

    # Metrics for Prometheus (backup-tasks-metrics)
    BACKUP_METRICS_ADDRESS: str = "127.0.0.1"
    BACKUP_METRICS_PORT: int = Field(9648, ge=1, le=65535)
    BACKUP_METRICS_CACHE_S: float = Field(
        60.0, ge=0, description="how long a storage listing is reused between scrapes"
    )

    # S3 (or any S3-compatible store). Credentials come from boto3's own chain, never from here.
    S3_BUCKET_NAME: str | None = None
    S3_PREFIX: str = "backups/"
    S3_ENDPOINT_URL: str | None = None
    S3_REGION: str | None = None
    S3_ADDRESSING_STYLE: Literal["auto", "path", "virtual"] = "auto"
    S3_SSE: Literal["", "AES256", "aws:kms"] = ""
    S3_SSE_KMS_KEY_ID: str | None = None
    S3_STORAGE_CLASS: str | None = None

    # Celery
    CELERY_BROKER_URL: SecretStr = SecretStr("redis://localhost:6379/0")
    CELERY_RESULT_BACKEND: SecretStr = SecretStr("redis://localhost:6379/0")
    CELERY_TASK_SOFT_TIME_LIMIT: int = 6 * 3600
    CELERY_TASK_TIME_LIMIT: int = 6 * 3600 + 300
    CELERY_RESULT_EXPIRES: int = 7 * 24 * 3600
    # A pool process that holds more than this after a job is replaced by a fresh one before the next (0: never);
    # a fresh process holds ~65 MB, so the next job's peak starts from there, not from what the last one left.
    # Held, not peak (celery_app._recycle_by_memory_held): ~80 MB after a backup of 3 M rows, so backups reuse it.
    CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB: int = Field(90, ge=0)

    # Flower
    FLOWER_BASIC_AUTH: SecretStr | None = None
    FLOWER_ADDRESS: str = "127.0.0.1"
    FLOWER_PORT: int = 5555

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL.get_secret_value()

    @property
    def drill_database_url(self) -> str | None:
        value = self.DRILL_DATABASE_URL.get_secret_value().strip() if self.DRILL_DATABASE_URL else ""
        return value or None

    @property
    def s3_enabled(self) -> bool:
        return bool(self.S3_BUCKET_NAME)


def load_settings(env_file: str | os.PathLike | None = ENV_FILE, **values: Any) -> Settings:
    """`values`, else the environment, else `env_file` (None: no file), else the defaults. A value that does
    not validate is a ConfigError naming the setting, never its value."""
    try:
        return Settings(**{**_configured(env_file), **values})
    except ValidationError as exc:
        raise _config_error(exc) from None


def _configured(env_file: str | os.PathLike | None) -> dict[str, str]:
    """The settings' values from the environment over those of the env file, by case-insensitive name."""
    wanted = {name.lower(): name for name in Settings.model_fields}
    found: dict[str, str] = {}
    for source in (env_file_values(env_file), os.environ):
        for key, value in source.items():
            if value is not None and (name := wanted.get(key.lower())):
                found[name] = value
    return found


def env_file_values(env_file: str | os.PathLike | None) -> dict[str, str | None]:
    """What an env file sets ({} without one), as written: names keep their case."""
    if env_file is None or not Path(env_file).is_file():
        return {}
    from dotenv import dotenv_values  # only when there is a file to read

    return dotenv_values(env_file, encoding="utf-8")


def _config_error(exc: ValidationError) -> ConfigError:
    """One line per setting that failed, by name and reason; the values are left out (some are secrets)."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
    return ConfigError(f"invalid setting: {problems}",
                       hint="Fix it in the environment or in .env; .env.example documents every setting.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
