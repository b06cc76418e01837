"""The per-database job lock, held by PostgreSQL itself: a session-level advisory lock on a connection of its own.

A restore holds it exclusively (`pg_try_advisory_lock`); backups, diffs and dry runs share it
(`pg_try_advisory_lock_shared`). A job that cannot have it fails at once with BusyError naming the holder.

Why in the database and not in Redis (where it was until issue 13):
- the server releases a session's advisory locks the moment the session ends. A SIGKILLed worker's socket is
  closed by the kernel, so the lock is free at once: no TTL to wait out (it was 600 s), and no renewal that a
  busy process (a restore at full speed, the GIL taken by another thread) could fail to make in time. While
  the holder's session lives, the lock is held, whatever the holder's process is doing;
- the CLI's `--local` path and a worker take the very same lock, with or without Redis;
- it is per database as the server knows it (an advisory lock's tag holds the database's OID), whatever host
  alias, port forward or connection-string form each client used.

Key: the two-int4 form (KEY_CLASS, KEY_JOB); pg_locks shows it with objsubid = 2. Applications' one-bigint
advisory locks (objsubid = 1) never conflict with it; their two-int locks only if they picked the same KEY_CLASS.

Holder: the lock session's application_name is `backup_tasks:<job>:<owner>` (owner: the Celery task id, or
`local:<pid>@<host>` for --local), so a refused job reads who holds it from pg_locks and pg_stat_activity.

A vanished host: the session asks the server for TCP keepalives (tcp_keepalives_*: a client host that lost power
or network is dropped within ~25 s instead of the kernel's ~2 h), and libpq's keepalives let this side notice a
vanished server. A watcher thread waits on the session's socket (select: no polling, no GIL while it waits); if
the session ends under a running job (pg_terminate_backend, a proxy cutting the link) it takes the lock again on
a new session at once, or logs an error naming who holds it now.

Needs a real session: a transaction-pooling proxy (PgBouncer in transaction mode) cannot hold a session lock.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2

from .. import dsn
from ..errors import BusyError, DatabaseError
from .connection import connect, connection, pg_error_message

logger = logging.getLogger(__name__)

KEY_CLASS = 0x62746A6C  # "btjl" (backup_tasks job lock): a first int no application is likely to pick
KEY_JOB = 1
EXCLUSIVE, SHARED = "exclusive", "shared"
APPLICATION_PREFIX = "backup_tasks:"
# Keepalives both ways come with every connection (pg/connection.py), so a vanished client host frees the lock in
# ~25 s. The lock's session also needs no idle_session_timeout (PostgreSQL 14+), which a database or role may set
# and which would end the idle session.
RETAKE_EVERY_S = 2.0

_HOLDERS = """
SELECT a.application_name, l.mode
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY l.mode = 'ExclusiveLock' DESC, a.backend_start
"""


@dataclass(frozen=True)
class Holder:
    """Who holds the lock, as its session's application_name tells (`job` None: not one of ours, or unreadable)."""

    job: str | None
    owner: str | None
    mode: str

    @property
    def task_id(self) -> str | None:
        return None if self.owner is None or self.owner.startswith("local:") else self.owner

    @classmethod
    def parse(cls, application_name: str | None, lock_mode: str) -> Holder:
        mode = EXCLUSIVE if lock_mode == "ExclusiveLock" else SHARED
        prefix, _, rest = (application_name or "").partition(APPLICATION_PREFIX)
        if prefix or not rest:
            return cls(None, None, mode)
        job, _, owner = rest.partition(":")
        return cls(job or None, owner or None, mode)


def application_name(job: str, owner: str) -> str:
    # PostgreSQL keeps 63 bytes: job names are short (create, diff, restore, restore_s3), a task id is 36.
    return f"{APPLICATION_PREFIX}{job}:{owner}"[:63]


def local_owner() -> str:
    return f"local:{os.getpid()}@{socket.gethostname()}"


class JobLock:
    """One job's hold on one database's lock; `acquire()` then `release()` (or use `job_lock`)."""

    def __init__(self, url: str, mode: str, job: str, owner: str):
        if mode not in (EXCLUSIVE, SHARED):
            raise ValueError(f"unknown lock mode {mode!r}")
        self.url, self.mode, self.job, self.owner = url, mode, job, owner
        self.target = dsn.describe(url)
        self._conn = None
        self._stop_r, self._stop_w = -1, -1
        self._watcher: threading.Thread | None = None
        self.lost = False  # the session ended and the lock could not be taken again: another job may run beside

    def check(self) -> None:
        """Raise BusyError once the lock is lost: called by a restore just before it commits, so two restores can
        never both commit, even when the lock's session was cut under one of them."""
        if self.lost:
            raise BusyError(f"the job lock on {self.target} was lost while {self.job} ran (its session ended and "
                            "another job may hold it now); nothing was committed",
                            hint="Check who holds it (`backupctl status`), then run the job again.")

    @property
    def backend_pid(self) -> int | None:
        """The lock session's server process (tests end it to check the watcher)."""
        return self._conn.get_backend_pid() if self._conn is not None and not self._conn.closed else None

    def acquire(self) -> None:
        """Take the lock on a new session, or raise BusyError (someone holds it in a conflicting mode)."""
        conn, holders = self._try_take()
        if conn is None:
            raise busy_error(self.target, self.job, holders)
        self._conn = conn
        self._stop_r, self._stop_w = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name="backup-tasks-joblock", daemon=True)
        self._watcher.start()

    def release(self) -> None:
        """Closing the session releases the lock (the server does it; nothing can be left behind)."""
        if self._watcher is not None:
            os.write(self._stop_w, b"x")
            self._watcher.join(timeout=30)  # longer than a retake's connect_timeout
            if not self._watcher.is_alive():  # (else the pipe stays open for it: a leak, not a crash)
                os.close(self._stop_r)
                os.close(self._stop_w)
            self._watcher = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _try_take(self) -> tuple[object | None, list[Holder]]:
        """(session holding the lock, []) or (None, who holds it instead)."""
        conn = connect(self.url, application=application_name(self.job, self.owner))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                if conn.server_version >= 140000:
                    cur.execute("SET idle_session_timeout = 0")
                fn = "pg_try_advisory_lock" if self.mode == EXCLUSIVE else "pg_try_advisory_lock_shared"
                cur.execute(f"SELECT {fn}(%s, %s)", (KEY_CLASS, KEY_JOB))
                if cur.fetchone()[0]:
                    return conn, []
                holders = read_holders(cur)
        except psycopg2.Error as exc:
            conn.close()
            raise DatabaseError(f"could not take the job lock on {self.target}: {pg_error_message(exc)}") from None
        except BaseException:
            conn.close()
            raise
        conn.close()
        return None, holders

    def _watch(self) -> None:
        while True:
            conn = self._conn
            try:
                ready, _, _ = select.select([conn.fileno(), self._stop_r], [], [])
                if self._stop_r in ready:
                    return
                conn.poll()  # a notice, or the server ending the session (raises then)
                if not conn.closed:
                    continue
            except (psycopg2.Error, OSError, ValueError):
                pass
            if not self._retake():
                return

    def _retake(self) -> bool:
        """The session ended under a running job: take the lock again at once. False when that is impossible."""
        logger.warning("the %s job lock session on %s ended while %s ran; taking the lock again",
                       self.mode, self.target, self.job)
        while True:
            try:
                conn, holders = self._try_take()
            except DatabaseError as exc:
                logger.error("cannot take the job lock on %s again (%s); retrying", self.target, exc.message)
                if _stopped(self._stop_r, RETAKE_EVERY_S):
                    return False
                self.lost = True  # not held for now: a commit must wait until it is again
                continue
            if conn is None:
                self.lost = True
                logger.error("%s lost the job lock on %s and cannot take it again: %s. Another job may run "
                             "beside this one.", self.job, self.target, busy_error(self.target, self.job,
                                                                                   holders).message)
                return False
            old, self._conn = self._conn, conn
            self.lost = False
            old.close()
            logger.warning("the job lock on %s is held again by %s", self.target, self.job)
            return True


def _stopped(fd: int, timeout: float) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def busy_error(target: str, job: str, holders: list[Holder]) -> BusyError:
    """'database X on H:P is being restored by job ID (restore); not starting create', with a hint to wait."""
    if not holders:  # released between the refusal and the look-up, or not readable by this role
        return BusyError(f"{target} is locked by another job; not starting {job}",
                         hint="Retry in a moment; `backupctl status ID` shows a running job.")
    holder = holders[0]
    other = holder.job or "another program"
    if holder.mode == EXCLUSIVE:
        doing = "restored"
    else:
        doing = "backed up" if other == "create" else f"read by {other}"
    if holder.task_id:
        by = f" by job {holder.task_id} ({other})"
        hint = f"Wait for it to finish (`backupctl wait {holder.task_id}`), then retry."
    elif holder.owner:
        pid, _, host = holder.owner.removeprefix("local:").partition("@")
        by = f" by a --local {other} (pid {pid} on {host or 'an unknown host'})"
        hint = "Wait for it to finish, then retry."
    else:
        by = f" ({other})"
        hint = "Wait for the running job to finish, then retry."
    return BusyError(f"{target} is being {doing}{by}; not starting {job}", hint=hint)


@contextmanager
def job_lock(url: str, mode: str, job: str, owner: str) -> Iterator[JobLock]:
    """Hold the database's job lock (EXCLUSIVE or SHARED) for the block; BusyError at once when it is taken."""
    lock = JobLock(url, mode, job, owner)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def read_holders(cur) -> list[Holder]:
    """Who holds the lock on the cursor's database now, exclusive holder first."""
    cur.execute(_HOLDERS, (KEY_CLASS, KEY_JOB))
    return [Holder.parse(name, mode) for name, mode in cur.fetchall()]


def holders(url: str) -> list[Holder]:
    """Who holds the lock on the database now (for tests and diagnostics)."""
    with connection(url) as conn, conn.cursor() as cur:
        return read_holders(cur)
