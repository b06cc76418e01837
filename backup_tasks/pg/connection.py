"""Connections pinned to a lossless, locale-independent text output, like pg_dump's session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from .. import dsn
from ..errors import ConfigError, DatabaseError, Transient

# Every value leaves PostgreSQL as its own text output, which round-trips exactly only with these settings
# (extra_float_digits=3: shortest exact floats; ISO dates: BC and year 294276 survive; hex bytea; money in the
# C locale; reg* types always schema-qualified because nothing but pg_catalog is on the search_path).
# array_nulls=on and xmloption=content pin how values are *parsed* on restore: a database or role with
# array_nulls=off read the NULL elements of restored arrays as the text "NULL" (or failed on non-text arrays),
# and xmloption=document refused XML content fragments that the column legitimately holds.
# tcp_keepalives_*: the server drops the session of a client host that vanished (power, network) within ~25 s, so
# its locks go with it, instead of the kernel's ~2 h; libpq's keepalives (CLIENT_KEEPALIVES) do the same for us.
# synchronize_seqscans=off (as pg_dump sets it): every scan starts at the table's first page, so rows come in the
# same order in one process and in a parallel backup's page ranges, and a diff finds them in the file's order.
# statement_timeout and idle_in_transaction_session_timeout are reset as pg_dump does: applications often set
# them on their database or role, and a restore's COPY of a large table (or a diff's count) is one long
# statement that they would cancel. Lock waits stay bounded by BACKUP_LOCK_TIMEOUT_S (set per transaction).
SESSION_OPTIONS = (
    "-c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=3 -c TimeZone=UTC "
    "-c bytea_output=hex -c client_encoding=UTF8 -c row_security=off -c standard_conforming_strings=on "
    "-c lc_monetary=C -c search_path=pg_catalog -c array_nulls=on -c xmloption=content "
    "-c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c synchronize_seqscans=off "
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
    "-c application_name=backup_tasks"
)


# libpq's words for a server that cannot take a connection now but may soon (a restart, a failover, a full
# connection table); anything else (a wrong password, a database that does not exist) will not pass by itself.
_PASSING = (
    "could not connect", "connection refused", "timeout expired", "server closed the connection",
    "the database system is starting up", "the database system is shutting down", "too many connections",
    "connection reset", "could not receive data", "could not send data", "no route to host",
    "the database system is in recovery mode", "remaining connection slots are reserved",
)


# libpq's side: probe an idle connection after 10 s, every 5 s, give up after 3 (a vanished server is noticed).
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}
# PostgreSQL 14+: a statement notices a client that went away (a killed worker) within 10 s even while it waits
# on a lock or sends COPY data, and ends, releasing what it holds. Unknown to older servers: set after connecting.
CLIENT_CHECK = "SET client_connection_check_interval = '10s'"


def connect(url: str, *, application: str = "backup_tasks") -> psycopg2.extensions.connection:
    """A connection with the pinned session; a DatabaseError naming the database (never the URL) otherwise."""
    try:
        target = dsn.describe(url)
        dsn.parse_params(url)  # refuses what libpq would, with a message that cannot echo the password
    except ConfigError as exc:
        raise DatabaseError(f"invalid database URL: {exc.message}", hint=exc.hint) from None
    try:
        conn = psycopg2.connect(dsn.with_params(url, CLIENT_KEEPALIVES),  # the URL's own settings win
                                options=SESSION_OPTIONS.replace("backup_tasks", application), connect_timeout=10)
    except psycopg2.OperationalError as exc:
        first = dsn.mask((str(exc).strip().splitlines() or ["connection failed"])[0])
        passing = any(marker in first.lower() for marker in _PASSING)
        raise DatabaseError(f"cannot connect to {target}: {first}",
                            transient=Transient.DATABASE if passing else None) from None
    except psycopg2.ProgrammingError as exc:
        raise DatabaseError(f"invalid database URL for {target}: {dsn.mask(str(exc).strip())}",
                            hint="DATABASE_URL looks like postgresql://user:password@host:5432/dbname") from None
    if conn.server_version >= 140000:
        with conn.cursor() as cur:
            cur.execute(CLIENT_CHECK)
        conn.commit()  # a plain SET outside any transaction the caller starts (set_session needs none open)
    return conn


@contextmanager
def connection(url: str, **kwargs) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        try:
            conn.rollback()
        except psycopg2.Error:
            pass
        conn.close()


def keep_alive(conn) -> None:
    """Check that a session holding a transaction open (a parallel backup's exported snapshot) still has it:
    a DatabaseError once the connection is gone, so the job fails instead of waiting on parts that cannot
    join a snapshot that died with it."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.Error as exc:
        first = (str(exc).strip().splitlines() or ["connection lost"])[0]
        raise DatabaseError(f"the backup's snapshot was lost: its session ended ({first})",
                            hint="Nothing was kept; run the backup again (was the session terminated?).") from None


def pg_error_message(exc: psycopg2.Error) -> str:
    """One readable line from a psycopg2 error: primary message plus detail, without the query echo."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None and diag.message_primary else str(exc).strip().splitlines()[0]
    detail = diag.message_detail if diag is not None else None
    context = diag.context if diag is not None else None
    text = primary
    if detail:
        text += f" ({detail})"
    if context and "COPY" in context:
        text += f" [{context.splitlines()[0]}]"
    return text


def privilege_hint(exc: psycopg2.Error) -> str | None:
    """A hint for errors that come from the role's rights rather than from the database being unreachable.

    Without it such errors got the generic "check DATABASE_URL" hint, which sends the user the wrong way."""
    code = getattr(exc, "pgcode", None)
    primary = getattr(getattr(exc, "diag", None), "message_primary", None) or ""
    if code == "42501" or "row-level security" in primary:
        return ("The role must read and write every row of every table: use a superuser, the tables' owner, or a "
                "role with BYPASSRLS. A table with FORCE ROW LEVEL SECURITY applies its policies even to its owner: "
                "only a superuser or a BYPASSRLS role can back it up or restore it.")
    return None

