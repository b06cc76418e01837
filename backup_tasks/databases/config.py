"""Reading BACKUP_DATABASES_FILE: each table checked, each database's effective settings, URLs from the
environment."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from ..errors import ConfigError
from ..settings import ENV_FILE, Settings, env_file_values, get_settings
from .model import (
    ALIASES,
    DEFAULT_NAME,
    DEPLOYMENT_WIDE,
    ENV_NAME_RE,
    FILE_HINT,
    NAME_RE,
    TABLE_KEYS,
    Database,
    Deployment,
    Server,
)


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
            patterns = {key: table.get(key, default) for key, default in (("include", ["*"]), ("exclude", []))}
            for key, value in patterns.items():
                if not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
                    raise ConfigError(f"{where}: {key} must be a list of database names or patterns (orders_*)",
                                      hint=FILE_HINT)
            out.servers[name] = Server(name, table["url_env"], table, tuple(patterns["include"]),
                                       tuple(patterns["exclude"]))
            effective(s, name, table, where, url=None)  # every override checked now, not at the first job
        else:
            url, error = env_url(table["url_env"])
            out.databases[name] = database_of(s, name, table, where, url, error, f"url_env {table['url_env']}")
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
                          hint='Put the URL in an environment variable and name it: url_env = "ORDERS_DATABASE_URL".')
    env = table.get("url_env")
    if not isinstance(env, str) or not ENV_NAME_RE.fullmatch(env):
        raise ConfigError(f"{where} needs url_env, the name of the environment variable holding its URL",
                          hint=FILE_HINT)
    if "discover" in table and not isinstance(table["discover"], bool):
        raise ConfigError(f"{where}: discover is true or false", hint=FILE_HINT)
    for key in ("include", "exclude"):
        if key in table and not table.get("discover"):
            raise ConfigError(f"{where}: {key} applies to discover = true only", hint=FILE_HINT)


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
    drill_env = table.get("drill_url_env")
    if drill_env is not None:  # each database its own scratch database (schemas differ); else DRILL_DATABASE_URL
        if not isinstance(drill_env, str) or not ENV_NAME_RE.fullmatch(drill_env):
            raise ConfigError(f"{where}: drill_url_env is the name of the environment variable holding the "
                              "database's scratch database URL", hint=FILE_HINT)
        updates["DRILL_DATABASE_URL"] = SecretStr(env_url(drill_env)[0] or "")
    try:
        return Settings.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        problem = exc.errors()[0]
        key = next((k for k in table if setting_name(k) == str(problem["loc"][0])), problem["loc"][0])
        raise ConfigError(f"{where}: {key} = {table.get(key)!r}: {problem['msg']}", hint=FILE_HINT) from None


def join_prefix(prefix: str, name: str) -> str:
    prefix = str(prefix)
    return f"{prefix}{'' if not prefix or prefix.endswith('/') else '/'}{name}/"


def database_of(base: Settings, name: str, table: dict[str, Any], where: str, url: str | None, error: str | None,
              origin: str) -> Database:
    config = effective(base, name, table, where, url)
    overrides = tuple(sorted(_updates(table, where)))
    return Database(name, origin, config, overrides, error)


def env_url(variable: str) -> tuple[str | None, str | None]:
    """The URL in `variable` (the process environment, else .env), or why there is none."""
    value = os.environ.get(variable)
    if value is None:
        value = env_file_values(ENV_FILE).get(variable)
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
