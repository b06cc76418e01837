"""`discover = true`: the databases on a server, asked when a name is resolved and cached DISCOVERY_TTL_S."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from .. import dsn
from ..errors import ConfigError
from .config import check_separate, database_of, env_url, join_prefix
from .model import NAME_RE, Database, Deployment, Server

logger = logging.getLogger(__name__)
DISCOVERY_TTL_S = 30.0

_discovery_cache: dict[tuple[str, str], tuple[float, list[str]]] = {}
_discovery_lock = threading.Lock()


def discovered(dep: Deployment, server: Server) -> list[Database]:
    """The databases on `server` (asked at most every DISCOVERY_TTL_S), under their own names; a name that is
    declared in the file or is not a valid name is skipped with a warning."""
    where = f"{dep.file}: [databases.{server.name}]"
    url, error = env_url(server.url_env)
    if error:
        raise ConfigError(f"server {server.name}: {error}", hint="Set it in this process's environment (or .env).")
    declared = {dsn.parse(db.config.database_url).key for db in dep.databases.values() if not db.url_error}
    out = []
    for datname in _server_databases(url):
        if not server.takes(datname):
            continue
        db_url = dsn.with_database(url, datname)
        if not NAME_RE.fullmatch(datname) or datname in dep.databases or dsn.parse(db_url).key in declared:
            logger.warning("discovery on %s: skipping database %r (declared in the file, or not a valid name)",
                           server.name, datname)
            continue
        # Under its own name: DIR/<db> and PREFIX<db>/, DIR and PREFIX being the server table's or the settings'.
        table = {**server.table, "dir": str(Path(server.table.get("dir", dep.settings.BACKUP_DIR)) / datname),
                 "s3_prefix": join_prefix(server.table.get("s3_prefix", dep.settings.S3_PREFIX), datname)}
        out.append(database_of(dep.settings, datname, table, where, db_url, None,
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
    from ..pg.server import list_databases  # the driver only when a server is asked

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
