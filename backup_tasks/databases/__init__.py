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
(those matching `include`, minus `exclude`) becomes a database under its own name, with the table's
overrides, in DIR/<db> and PREFIX<db>/. Discovery asks the server when a name is resolved (cached
DISCOVERY_TTL_S), so Beat needs no URL.

Resolved at the edge (CLI, tasks, Beat, the metrics process) and passed down as a `Database`; the engine never
reads it. URLs are read from the environment (or the settings' .env) only when a job needs one, so a process
that only schedules (Beat) or lists needs none of them.
"""

from __future__ import annotations

from ..errors import ConfigError, UsageError
from ..settings import Settings
from .config import deployment, effective, join_prefix, overridable, setting_name
from .discovery import clear_discovery_cache, discovered
from .model import DEFAULT_NAME, DEPLOYMENT_WIDE, NAME_RE, Database, Deployment, Server

__all__ = ["DEFAULT_NAME", "DEPLOYMENT_WIDE", "NAME_RE", "Database", "Deployment", "Server", "all_databases",
           "clear_discovery_cache", "deployment", "discovered", "effective", "join_prefix", "overridable", "select",
           "setting_name"]


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
