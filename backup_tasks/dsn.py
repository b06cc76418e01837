"""Connection strings: the one place that parses them and hides their secrets.

PostgreSQL takes two forms (libpq's "connection URI" and "key=value connection string"); both may carry a
password. Everything that shows, logs, stores or compares a database (error messages, job results kept in
Redis, the restore prompt, metadata, lock keys) goes through `parse()` and `DatabaseTarget`, never through the
string itself, so a password cannot ride along. `mask()` hides the secret of any URL (database, Redis broker,
S3 endpoint) for the few places that print a URL; `endpoint()` keeps only scheme, host and port.

Pure Python (no psycopg2: this module is used by layers that must not import the driver). The parser follows
libpq's rules (fe-connect.c: conninfo_parse, conninfo_uri_parse); tests compare it with psycopg2's
`parse_dsn`, which is libpq's own.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import ConfigError

_URI_PREFIXES = ("postgresql://", "postgres://")
_LOCAL_HOSTS = frozenset({"", "localhost", "127.0.0.1", "::1"})
MASK = "***"
SECRET_KEYS = frozenset({"password", "passfile", "sslpassword"})
_DSN_HINT = ("DATABASE_URL is either postgresql://user:password@host:5432/dbname or "
             "'host=… port=5432 dbname=… user=… password=…'.")


@dataclass(frozen=True)
class DatabaseTarget:
    """Which database a connection string names: no user secret, safe to print, log and store."""

    name: str
    host: str  # as written (the first one of a list), lower-case; "localhost" for a Unix socket or none
    port: int
    user: str | None = None

    @property
    def key(self) -> str:
        """`host:port/name`: the same database however its string is spelled (form, user, password, options,
        127.0.0.1 or localhost or a socket)."""
        host = "localhost" if self.host in _LOCAL_HOSTS else self.host
        return f"{host}:{self.port}/{self.name}"

    def describe(self) -> str:
        return f"database {self.name or '(default)'} on {self.host}:{self.port}"

    def same_database(self, other: DatabaseTarget) -> bool:
        return self.key == other.key


def is_uri(text: str) -> bool:
    return text.startswith(_URI_PREFIXES)


def parse_params(text: str) -> dict[str, str]:
    """The connection parameters of either form, as libpq reads them. ConfigError when libpq would refuse it."""
    text = text.strip()
    return _parse_uri(text) if is_uri(text) else _parse_keywords(text)


def parse(text: str) -> DatabaseTarget:
    """The database a connection string names, with libpq's defaults (PG* environment, then built-in ones)."""
    params = parse_params(text)

    def value(key: str, env: str) -> str:
        return params.get(key) or os.environ.get(env, "")

    user = value("user", "PGUSER") or _os_user()
    name = value("dbname", "PGDATABASE") or (user or "")
    host = value("host", "PGHOST").split(",")[0].strip().lower()
    if not host or host.startswith("/") or host.startswith("@"):
        host = "localhost"  # a Unix socket (or an abstract one) is this machine's server too
    port_text = value("port", "PGPORT").split(",")[0].strip() or "5432"
    if not port_text.isdigit():
        raise ConfigError(f"invalid port {port_text!r} in the database URL", hint=_DSN_HINT)
    return DatabaseTarget(name=name, host=host, port=int(port_text), user=user)


def _os_user() -> str | None:
    """libpq's default user: the operating system's user name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def describe(text: str) -> str:
    """`database NAME on HOST:PORT` for any connection string; never fails, never shows a secret."""
    try:
        return parse(text).describe()
    except ConfigError:
        return "the database (its URL could not be read)"


def has_password(text: str) -> bool:
    try:
        return any(k in SECRET_KEYS and v for k, v in parse_params(text).items())
    except ConfigError:
        return "password" in text or "@" in text  # unreadable: assume the worst


def mask(text: str) -> str:
    """`text` with every password hidden: a URL's user:password@, a password= parameter (URL query or
    key=value form), quoted or not. Safe on anything, including strings no parser accepts."""
    if not text:
        return text
    masked = re.sub(r"(://[^/?#@\s]*?:)[^/?#@\s]*@", rf"\g<1>{MASK}@", text)  # scheme://user:secret@
    keys = "|".join(sorted(SECRET_KEYS))
    # key = 'quoted value' (backslash escapes) or key = value up to whitespace or & (URL query).
    masked = re.sub(rf"(?i)\b({keys})(\s*=\s*)'(?:[^'\\]|\\.)*'?", rf"\1\2{MASK}", masked)
    masked = re.sub(rf"(?i)\b({keys})(\s*=\s*)(?!\*\*\*)(?:[^\s&'\\]|\\.)+", rf"\1\2{MASK}", masked)
    return masked


def endpoint(url: str | None) -> str:
    """scheme://host[:port] of a URL, nothing else (no user, password, path or query: they may hold tokens)."""
    if not url:
        return ""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(?:[^@/?#]*@)?([^/?#]*)", url)
    if not match:
        return "(an address that is not a URL)"
    return f"{match.group(1)}://{match.group(2)}"


def with_params(text: str, params: dict[str, str]) -> str:
    """`text` with connection parameters added, in its own form; a parameter the string already sets is kept as
    written (the user's choice wins). For settings the string's owner did not think of, e.g. TCP keepalives."""
    present = parse_params(text)
    extra = {k: v for k, v in params.items() if k not in present}
    if not extra:
        return text
    text = text.strip()
    if is_uri(text):
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in extra.items())
        return f"{text}{'&' if '?' in text else '?'}{query}"
    words = " ".join(f"{k}='{_escape_keyword(v)}'" for k, v in extra.items())
    return f"{text} {words}" if text else words


def with_database(text: str, name: str) -> str:
    """`text` naming database `name` instead, in its own form, every other parameter as written (a discovered
    database is reached with its server's URL)."""
    text = text.strip()
    if not is_uri(text):
        return f"{text} dbname='{_escape_keyword(name)}'"  # libpq keeps the last value of a repeated keyword
    scheme, rest = text.split("://", 1)
    rest, _, query = rest.partition("?")
    netloc = rest.split("/", 1)[0]
    pairs = [p for p in query.split("&") if p and unquote(p.partition("=")[0]) != "dbname"]
    tail = f"?{'&'.join(pairs)}" if pairs else ""
    return f"{scheme}://{netloc}/{quote(name, safe='')}{tail}"


def _escape_keyword(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


# --- libpq's two forms ---------------------------------------------------------------------------------

def _parse_keywords(text: str) -> dict[str, str]:
    """key=value pairs separated by whitespace; values plain (backslash escapes) or single-quoted."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return params
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=":
            raise ConfigError(f'missing "=" after "{key[:40]}" in the database connection string', hint=_DSN_HINT)
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value, i = _keyword_value(text, i)
        params[key] = value


def _keyword_value(text: str, i: int) -> tuple[str, int]:
    n, out = len(text), []
    if i < n and text[i] == "'":
        i += 1
        while i < n and text[i] != "'":
            if text[i] == "\\" and i + 1 < n:
                i += 1
            out.append(text[i])
            i += 1
        if i >= n:
            raise ConfigError("unterminated quoted value in the database connection string", hint=_DSN_HINT)
        return "".join(out), i + 1
    while i < n and not text[i].isspace():
        if text[i] == "\\" and i + 1 < n:
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i


def _parse_uri(text: str) -> dict[str, str]:
    rest = text.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    params: dict[str, str] = {}
    userinfo, at, hostlist = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            params["user"] = unquote(user)
        if colon:
            params["password"] = unquote(password)
    hosts, ports = [], []
    for spec in filter(None, hostlist.split(",")):
        if spec.startswith("["):
            host, _, after = spec[1:].partition("]")
            port = after[1:] if after.startswith(":") else ""
        else:
            host, _, port = spec.partition(":")
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if slash and path:
        params["dbname"] = unquote(path)
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if not eq:
            raise ConfigError(f'missing "=" after "{unquote(key)[:40]}" in the database URL\'s query', hint=_DSN_HINT)
        params[unquote(key)] = unquote(value)
    return params
