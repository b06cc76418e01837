"""The databases of this deployment, and each one's effective settings: the one owner of that question.

Without BACKUP_DATABASES_FILE there is one database, named `default`, whose settings are the settings as they
are (DATABASE_URL, BACKUP_DIR, S3_PREFIX): a single-database deployment behaves exactly as it always did.

With the file (TOML), each table `[databases.NAME]` is a database:

    [databases.orders]
    url_env = "ORDERS_DATABASE_URL"   # the environment variable holding its URL (never the URL itself)
    cron = "0 2 * * *"                # any per-database setting, by its name without BACKUP_ (lower case)
    retention_days = 14
    s3_prefix = "orders/"

Its backups go to BACKUP_DIR/NAME and S3_PREFIX + NAME/ unless `dir` / `s3_prefix` say otherwise; no two
databases may share either, so their backups never mix and one's retention never sees the other's files.
A table with `discover = true` names a server instead: every non-template database its role may connect to
becomes a database under its own name (minus `exclude`), with the table's overrides, in DIR/<db> and
PREFIX<db>/. Discovery asks the server when a name is resolved (cached DISCOVERY_TTL_S), so Beat needs no URL.

Resolved at the edge (CLI, tasks, Beat, the metrics process) and passed down as a `Database`; the engine never
reads it. URLs are read from the environment (or the settings' .env) only when a job needs one, so a process
that only schedules (Beat) or lists needs none of them.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from . import dsn
from .errors import ConfigError, UsageError
from .settings import Settings, get_settings

logger = logging.getLogger(__name__)

DEFAULT_NAME = "default"
# A name becomes a directory, an S3 prefix, a Redis key and a metric label: nothing that could be a path.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TABLE_KEYS = frozenset({"url_env", "discover", "exclude"})  # what a table says besides settings
ALIASES = {"compression": "BACKUP_COMPRESSION_LEVEL", "dir": "BACKUP_DIR"}
# Settings of the whole deployment (one broker, one metrics endpoint, the file itself): never per database.
DEPLOYMENT_WIDE = frozenset({"BACKUP_DATABASES_FILE", "BACKUP_DB", "BACKUP_METRICS_ADDRESS", "BACKUP_METRICS_PORT",
                             "BACKUP_METRICS_CACHE_S"})
DISCOVERY_TTL_S = 30.0
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
    exclude: frozenset[str] = frozenset()


@dataclass
class Deployment:
    settings: Settings
    file: Path | None
    databases: dict[str, Database] = field(default_factory=dict)  # declared ones (or the default one)
    servers: dict[str, Server] = field(default_factory=dict)

    def names(self) -> list[str]:
        return list(self.databases)


# --- reading the file -------------------------------------------------------------------------------------

def deployment(settings: Settings | None = None) -> Deployment:
    """The declared databases and servers (no server is asked, no URL is read yet)."""
    s = settings or get_settings()
    if s.BACKUP_DATABASES_FILE is None or not str(s.BACKUP_DATABASES_FILE).strip():
        return Deployment(s, None, {DEFAULT_NAME: Database(DEFAULT_NAME, "DATABASE_URL", s)})
    path = Path(s.BACKUP_DATABASES_FILE)
    tables = _read_file(path)
    out = Deployment(s, path)
    for name, table in tables.items():
        where = f"{path}: [databases.{name}]"
        _check_table(name, table, where)
        if table.get("discover"):
            exclude = table.get("exclude", [])
            if not (isinstance(exclude, list) and all(isinstance(x, str) for x in exclude)):
                raise ConfigError(f"{where}: exclude must be a list of database names", hint=FILE_HINT)
            out.servers[name] = Server(name, table["url_env"], table, frozenset(exclude))
            effective(s, name, table, where, url=None)  # every override checked now, not at the first job
        else:
            url, error = _env_url(s, table["url_env"])
            out.databases[name] = _database(s, name, table, where, url, error, f"url_env {table['url_env']}")
    check_separate(list(out.databases.values()), path)
    return out


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"BACKUP_DATABASES_FILE={path} does not exist",
                          hint="Create it (see README 'Several databases') or unset BACKUP_DATABASES_FILE.") from None
    except OSError as exc:
        raise ConfigError(f"cannot read BACKUP_DATABASES_FILE={path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint=FILE_HINT) from None
    extra = sorted(set(data) - {"databases"})
    tables = data.get("databases")
    if extra or not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path} must hold [databases.NAME] tables only"
                          + (f" (found {', '.join(extra)})" if extra else ""), hint=FILE_HINT)
    return tables


def _check_table(name: str, table: Any, where: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ConfigError(f"{where}: a database name is letters, digits, '_', '.' or '-' (at most 63)",
                          hint="The name becomes a directory, an S3 prefix and a metric label.")
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table", hint=FILE_HINT)
    if "url" in table:
        raise ConfigError(f"{where} has a url: the file must never hold a URL (it may carry a password)",
                          hint="Put the URL in an environment variable and name it: url_env = \"ORDERS_DATABASE_URL\".")
    env = table.get("url_env")
    if not isinstance(env, str) or not _ENV_NAME_RE.fullmatch(env):
        raise ConfigError(f"{where} needs url_env, the name of the environment variable holding its URL",
                          hint=FILE_HINT)
    if "discover" in table and not isinstance(table["discover"], bool):
        raise ConfigError(f"{where}: discover is true or false", hint=FILE_HINT)
    if "exclude" in table and not table.get("discover"):
        raise ConfigError(f"{where}: exclude applies to discover = true only", hint=FILE_HINT)


def setting_name(key: str) -> str:
    """The setting a table key overrides: `cron` -> BACKUP_CRON, `s3_prefix` -> S3_PREFIX, `compression` ->
    BACKUP_COMPRESSION_LEVEL. Generic, so a setting added later (BACKUP_DRILL_CRON: `drill_cron`) is at once
    overridable; only deployment-wide ones and secrets are refused."""
    upper = key.upper()
    return ALIASES.get(key) or (upper if upper.startswith("S3_") else f"BACKUP_{upper}")


def overridable() -> list[str]:
    """The table keys a database may set, for messages."""
    keys = []
    for fname, info in Settings.model_fields.items():
        if fname in DEPLOYMENT_WIDE or _is_secret(info.annotation) or not fname.startswith(("BACKUP_", "S3_")):
            continue
        keys.append(fname.lower() if fname.startswith("S3_") else fname.removeprefix("BACKUP_").lower())
    return sorted(keys + list(ALIASES))


def _is_secret(annotation: Any) -> bool:
    return "SecretStr" in str(annotation) or annotation is SecretStr


def _updates(table: dict[str, Any], where: str) -> dict[str, Any]:
    updates = {}
    for key, value in table.items():
        if key in TABLE_KEYS:
            continue
        fname = setting_name(key)
        info = Settings.model_fields.get(fname)
        if info is None or fname in DEPLOYMENT_WIDE:
            raise ConfigError(f"{where}: {key!r} is not a per-database setting",
                              hint=f"Per-database keys: {', '.join(overridable())}.")
        if _is_secret(info.annotation):
            raise ConfigError(f"{where}: {key!r} is a secret and stays in the environment, not in the file",
                              hint="Set it in the environment (or .env) of the processes.")
        updates[fname] = value
    return updates


def effective(base: Settings, name: str, table: dict[str, Any], where: str, url: str | None) -> Settings:
    """`base` with the table's overrides, the database's own directory and prefix, and its URL."""
    updates = _updates(table, where)
    updates.setdefault("BACKUP_DIR", Path(base.BACKUP_DIR) / name)
    updates.setdefault("S3_PREFIX", join_prefix(base.S3_PREFIX, name))
    updates["DATABASE_URL"] = SecretStr(url or "")
    try:
        return Settings.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        problem = exc.errors()[0]
        key = next((k for k in table if setting_name(k) == str(problem["loc"][0])), problem["loc"][0])
        raise ConfigError(f"{where}: {key} = {table.get(key)!r}: {problem['msg']}", hint=FILE_HINT) from None


def join_prefix(prefix: str, name: str) -> str:
    prefix = str(prefix)
    return f"{prefix}{'' if not prefix or prefix.endswith('/') else '/'}{name}/"


def _database(base: Settings, name: str, table: dict[str, Any], where: str, url: str | None, error: str | None,
              origin: str) -> Database:
    config = effective(base, name, table, where, url)
    overrides = tuple(sorted(_updates(table, where)))
    return Database(name, origin, config, overrides, error)


def _env_url(settings: Settings, variable: str) -> tuple[str | None, str | None]:
    """The URL in `variable` (the process environment, else the settings' .env file), or why there is none."""
    value = os.environ.get(variable)
    if value is None:
        env_file = settings.model_config.get("env_file")
        if env_file and Path(str(env_file)).is_file():
            from dotenv import dotenv_values  # pydantic-settings' own reader of .env

            value = dotenv_values(str(env_file)).get(variable)
    if not value or not value.strip():
        return None, f"{variable} is not set"
    return value.strip(), None


def check_separate(databases: list[Database], path: Path | None) -> None:
    """No two databases share a directory or an S3 prefix: their backups would mix, and one's retention would
    delete the other's."""
    dirs: dict[Path, str] = {}
    prefixes: dict[tuple, str] = {}
    for db in databases:
        c = db.config
        d = Path(c.BACKUP_DIR).expanduser().resolve()
        p = (c.S3_BUCKET_NAME, c.S3_ENDPOINT_URL, c.S3_PREFIX.lstrip("/").rstrip("/") + "/")
        for seen, key, what in ((dirs, d, f"directory {d}"), (prefixes, p, f"S3 prefix {c.S3_PREFIX!r}")):
            if key in seen:
                raise ConfigError(f"{path}: databases {seen[key]} and {db.name} share the {what}",
                                  hint="Give each its own `dir` / `s3_prefix` (or leave them unset: NAME is added).")
            seen[key] = db.name


# --- choosing one -----------------------------------------------------------------------------------------

def select(name: str | None = None, settings: Settings | None = None) -> Database:
    """The database a command or job acts on: `name`, else BACKUP_DB, else the only one there is."""
    dep = deployment(settings)
    name = name or (dep.settings.BACKUP_DB or "").strip() or None
    if name is None:
        if len(dep.databases) == 1 and not dep.servers:
            return next(iter(dep.databases.values()))
        raise UsageError(f"this deployment has several databases ({', '.join(_all_names(dep))}); say which",
                         hint="Pass --db NAME (or set BACKUP_DB); `backupctl databases` lists them.")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise UsageError(f"not a database name: {name!r}", hint="See `backupctl databases`.")
    if name in dep.databases:
        return dep.databases[name]
    for server in dep.servers.values():
        found = {db.name: db for db in discovered(dep, server)}
        if name in found:
            return found[name]
    where = f"in {dep.file}" if dep.file else "without BACKUP_DATABASES_FILE (its one database is `default`)"
    raise UsageError(f"no database named {name!r} {where}",
                     hint=f"Known: {', '.join(_all_names(dep))}; see `backupctl databases`.")


def _all_names(dep: Deployment) -> list[str]:
    names = list(dep.databases)
    for server in dep.servers.values():
        try:
            names += [db.name for db in discovered(dep, server)]
        except ConfigError:
            names.append(f"{server.name} (a server: discovery failed)")
    return names


def all_databases(settings: Settings | None = None) -> tuple[list[Database], dict[str, str]]:
    """Every database (servers discovered) and, per server whose discovery failed, why: one unreachable server
    must not hide the others."""
    dep = deployment(settings)
    found = list(dep.databases.values())
    problems: dict[str, str] = {}
    for server in dep.servers.values():
        try:
            found += discovered(dep, server)
        except ConfigError as exc:
            problems[server.name] = exc.message
    return found, problems


# --- discovery --------------------------------------------------------------------------------------------

_discovery_cache: dict[tuple[str, str], tuple[float, list[str]]] = {}
_discovery_lock = threading.Lock()


def discovered(dep: Deployment, server: Server) -> list[Database]:
    """The databases on `server` (asked at most every DISCOVERY_TTL_S), under their own names; a name that is
    declared in the file or is not a valid name is skipped with a warning."""
    where = f"{dep.file}: [databases.{server.name}]"
    url, error = _env_url(dep.settings, server.url_env)
    if error:
        raise ConfigError(f"server {server.name}: {error}", hint="Set it in this process's environment (or .env).")
    declared = {dsn.parse(db.config.database_url).key for db in dep.databases.values() if not db.url_error}
    out = []
    for datname in _server_databases(url):
        if datname in server.exclude:
            continue
        db_url = dsn.with_database(url, datname)
        if not NAME_RE.fullmatch(datname) or datname in dep.databases or dsn.parse(db_url).key in declared:
            logger.warning("discovery on %s: skipping database %r (declared in the file, or not a valid name)",
                           server.name, datname)
            continue
        # Under its own name: DIR/<db> and PREFIX<db>/, DIR and PREFIX being the server table's or the settings'.
        table = {**server.table, "dir": str(Path(server.table.get("dir", dep.settings.BACKUP_DIR)) / datname),
                 "s3_prefix": join_prefix(server.table.get("s3_prefix", dep.settings.S3_PREFIX), datname)}
        out.append(_database(dep.settings, datname, table, where, db_url, None,
                             f"discovered through url_env {server.url_env}"))
    check_separate(list(dep.databases.values()) + out, dep.file)
    return out


def _server_databases(url: str) -> list[str]:
    key = (url, "")
    now = time.monotonic()
    with _discovery_lock:
        hit = _discovery_cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
    from .pg.server import list_databases  # the driver only when a server is asked

    try:
        names = list_databases(url)
    except Exception as exc:  # noqa: BLE001 - a DatabaseError names the server, never the URL
        message = getattr(exc, "message", None) or dsn.mask(str(exc))
        raise ConfigError(f"discovery failed: {message}", hint="Check the server's URL and that it is up.") from None
    with _discovery_lock:
        _discovery_cache[key] = (now + DISCOVERY_TTL_S, names)
    return names


def clear_discovery_cache() -> None:
    with _discovery_lock:
        _discovery_cache.clear()
