"""A deployment's databases as values: what databases/config.py reads and databases/discovery.py finds."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import dsn
from ..errors import ConfigError
from ..settings import Settings

DEFAULT_NAME = "default"
# A name becomes a directory, an S3 prefix, a Redis key and a metric label: nothing that could be a path.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What a table says besides settings; drill_url_env names the variable holding its own scratch database for drills.
TABLE_KEYS = frozenset({"url_env", "drill_url_env", "discover", "include", "exclude"})
ALIASES = {"compression": "BACKUP_COMPRESSION_LEVEL", "dir": "BACKUP_DIR"}
# Settings of the whole deployment (one broker, one metrics endpoint, the file itself): never per database.
DEPLOYMENT_WIDE = frozenset({"BACKUP_DATABASES_FILE", "BACKUP_DB", "BACKUP_METRICS_ADDRESS", "BACKUP_METRICS_PORT",
                             "BACKUP_METRICS_CACHE_S"})
FILE_HINT = ("Each [databases.NAME] table has url_env (the variable holding the URL) and optional overrides such "
             "as cron, timezone, retention_days, s3_prefix, compression, jobs; see README 'Several databases'.")


@dataclass(frozen=True)
class Database:
    """One database of the deployment. `settings` are its effective settings (DATABASE_URL is its URL)."""

    name: str
    origin: str  # "DATABASE_URL", "url_env FOO", "discovered through url_env FOO"
    config: Settings  # effective settings; DATABASE_URL is only valid through `settings`
    overrides: tuple[str, ...] = ()  # the setting names the file set for it
    url_error: str | None = None  # why its URL cannot be had (variable not set): `settings` raises it

    @property
    def settings(self) -> Settings:
        if self.url_error:
            raise ConfigError(f"database {self.name}: {self.url_error}",
                              hint="Set the variable in this process's environment (or .env).")
        return self.config

    @property
    def url(self) -> str:
        return self.settings.database_url

    @property
    def url_variable(self) -> str:
        """The environment variable its URL comes from (the last word of `origin`)."""
        return self.origin.rsplit(" ", 1)[-1]

    def describe(self) -> str:
        """`orders (database orders_db on db1:5432)`; never the URL."""
        if self.url_error:
            return f"{self.name} ({self.url_error})"
        return f"{self.name} ({dsn.describe(self.url)})"


@dataclass(frozen=True)
class Server:
    """A `discover = true` table: the databases on one server."""

    name: str
    url_env: str
    table: dict[str, Any]
    include: tuple[str, ...] = ("*",)  # shell-style patterns (fnmatch) of the names to take
    exclude: tuple[str, ...] = ()

    def takes(self, datname: str) -> bool:
        return (any(fnmatch.fnmatchcase(datname, p) for p in self.include)
                and not any(fnmatch.fnmatchcase(datname, p) for p in self.exclude))


@dataclass
class Deployment:
    settings: Settings
    file: Path | None
    databases: dict[str, Database] = field(default_factory=dict)  # declared ones (or the default one)
    servers: dict[str, Server] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.databases)
