"""Coordination between jobs in Redis (the broker's Redis): database locks, job liveness, schedule slots.

Database lock, per database (key: host:port/name, never the URL, which may carry a password):
- a restore holds it exclusively; backups and diffs share it. A restore refuses while anything holds it, a
  backup refuses while a restore holds it; a refused job fails at once with BusyError.
- every holder has a random owner token and a TTL (JOB_LOCK_TTL_S). A heartbeat thread renews it while the
  job runs; a killed worker stops renewing, so the lock lapses after the TTL and the next job can run.
- release and renewal compare the token first (Lua), so a job never frees a lock someone else holds now.
Redis' own clock (TIME) decides expiry of shared holders, so workers with skewed clocks agree.

Liveness: the same heartbeat keeps `alive:<task id>` for the TTL; a client waiting on a STARTED job whose
key is gone knows the worker died (a killed process reports nothing).

Schedule slots: scheduled_backup claims `slot:<database>:<slot>` with SET NX, holding its own task id, so a
second Beat or a redelivered message finds the slot taken and makes no second backup.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from .errors import BusyError, QueueError
from .settings import get_settings

logger = logging.getLogger(__name__)

PREFIX = "backup_tasks:"
SLOT_TTL_S = 8 * 24 * 3600
DELIVERY_TTL_S = 2 * 24 * 3600
_LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "[::1]"}

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str | None = None) -> redis.Redis:
    """A Redis client on the broker (one per process: a forked worker child must not share its parent's)."""
    url = url or get_settings().CELERY_BROKER_URL.get_secret_value()
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10,
                                             health_check_interval=30)
    return _clients[key]


def _masked(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1**@", url)


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except redis.RedisError as exc:
        url = _masked(get_settings().CELERY_BROKER_URL.get_secret_value())
        raise QueueError(f"Redis at {url} failed: {type(exc).__name__}: {exc}",
                         hint="Check that Redis is running and CELERY_BROKER_URL points at it.") from None


# --- which database ---------------------------------------------------------------------------------------

def database_identity(url: str) -> tuple[str, str, int]:
    """(name, host, port) of a PostgreSQL URL or key=value DSN; no user, no password."""
    if "://" in url:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        name = unquote(parts.path.lstrip("/")) or (query.get("dbname") or [""])[0]
        host = parts.hostname or (query.get("host") or [""])[0]
        try:
            port = parts.port or int((query.get("port") or ["5432"])[0])
        except ValueError:
            port = 5432
    else:
        try:
            words = dict(w.split("=", 1) for w in shlex.split(url) if "=" in w)
        except ValueError:
            words = {}
        name, host = words.get("dbname", ""), words.get("host", "")
        port = int(words["port"]) if words.get("port", "").isdigit() else 5432
    host = host.lower()
    if host in _LOCAL_HOSTS or host.startswith("/"):  # a Unix socket is this machine's server too
        host = "localhost"
    return name, host, port


def database_key(url: str) -> str:
    name, host, port = database_identity(url)
    return f"{host}:{port}/{name}"


def describe_database(db: str) -> str:
    host_port, _, name = db.partition("/")
    return f"database {name or '(default)'} on {host_port}"


# --- database lock ----------------------------------------------------------------------------------------

# KEYS[1] exclusive holder (string), KEYS[2] shared holders (zset: member -> expiry in ms, Redis clock).
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
_ACQUIRE_EXCLUSIVE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
local shared = redis.call('ZRANGE', KEYS[2], 0, 0)
if #shared > 0 then return {0, shared[1]} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
"""
_ACQUIRE_SHARED = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local holder = redis.call('GET', KEYS[1])
if holder then return {0, holder} end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return {1, ARGV[1]}
"""
_RENEW_EXCLUSIVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RENEW_SHARED = _NOW + """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""
_RELEASE_EXCLUSIVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RELEASE_SHARED = "return redis.call('ZREM', KEYS[2], ARGV[1])"

EXCLUSIVE, SHARED = "exclusive", "shared"


def lock_keys(db: str) -> list[str]:
    return [f"{PREFIX}lock:{db}:x", f"{PREFIX}lock:{db}:s"]


@dataclass
class DatabaseLock:
    """One holder's lock on one database (mode EXCLUSIVE for restore, SHARED for backup and diff)."""

    db: str
    mode: str
    job: str
    task_id: str | None
    ttl_s: float
    r: redis.Redis = field(repr=False)
    value: str = ""

    def __post_init__(self) -> None:
        self.value = json.dumps({"job": self.job, "task_id": self.task_id, "mode": self.mode,
                                 "token": secrets.token_hex(16), "since": round(time.time(), 3)})

    @property
    def _ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 100)

    def acquire(self) -> None:
        script = _ACQUIRE_EXCLUSIVE if self.mode == EXCLUSIVE else _ACQUIRE_SHARED
        ok, holder = _call(self.r.eval, script, 2, *lock_keys(self.db), self.value, self._ttl_ms)
        if not ok:
            raise busy_error(self.db, self.job, holder)

    def renew(self) -> bool:
        script = _RENEW_EXCLUSIVE if self.mode == EXCLUSIVE else _RENEW_SHARED
        return bool(self.r.eval(script, 2, *lock_keys(self.db), self.value, self._ttl_ms))

    def release(self) -> None:
        script = _RELEASE_EXCLUSIVE if self.mode == EXCLUSIVE else _RELEASE_SHARED
        try:
            self.r.eval(script, 2, *lock_keys(self.db), self.value)
        except redis.RedisError as exc:  # it lapses after the TTL anyway
            logger.warning("could not release the lock on %s: %s", describe_database(self.db), exc)


def busy_error(db: str, job: str, holder: bytes | str) -> BusyError:
    try:
        info = json.loads(holder)
    except (TypeError, ValueError):
        info = {}
    other, task = info.get("job") or "another job", info.get("task_id")
    doing = "restored" if info.get("mode") == EXCLUSIVE else ("backed up" if other in ("create", "scheduled_backup")
                                                               else f"read by {other}")
    where = describe_database(db)
    by = f" by job {task} ({other})" if task else f" ({other})"
    hint = (f"Wait for it to finish (`backupctl wait {task}`), then retry." if task
            else "Wait for the running job to finish, then retry.")
    return BusyError(f"{where} is being {doing}{by}; not starting {job}", hint=hint)


def holders(db: str, r: redis.Redis | None = None) -> dict[str, list[dict]]:
    """Who holds the lock on `db` now (for tests and diagnostics)."""
    r = r or client()
    x, s = lock_keys(db)
    exclusive = r.get(x)
    now_ms = time.time() * 1000
    shared = [json.loads(m) for m, exp in r.zrange(s, 0, -1, withscores=True) if exp > now_ms]
    return {"exclusive": [json.loads(exclusive)] if exclusive else [], "shared": shared}


# --- liveness and the heartbeat ---------------------------------------------------------------------------

def alive_key(task_id: str) -> str:
    return f"{PREFIX}alive:{task_id}"


def job_alive(task_id: str, r: redis.Redis | None = None) -> bool:
    return bool(_call((r or client()).exists, alive_key(task_id)))


class Heartbeat:
    """Renews the leases (the job's liveness key and any database lock) every TTL/3 from a daemon thread."""

    def __init__(self, r: redis.Redis, task_id: str | None, ttl_s: float, locks: list[DatabaseLock]):
        self.r, self.task_id, self.ttl_s, self.locks = r, task_id, ttl_s, locks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-tasks-heartbeat", daemon=True)
        self._lost: set[str] = set()

    def _beat(self) -> None:
        if self.task_id:
            self.r.set(alive_key(self.task_id), f"{os.getpid()}", px=max(int(self.ttl_s * 1000), 100))
        for lock in self.locks:
            if not lock.renew() and lock.db not in self._lost:
                self._lost.add(lock.db)
                logger.error("the %s lock on %s lapsed while %s ran (was the worker stalled for more than "
                             "JOB_LOCK_TTL_S=%ss?)", lock.mode, describe_database(lock.db), lock.job, self.ttl_s)

    def _run(self) -> None:
        interval = max(self.ttl_s / 3, 0.1)
        while not self._stop.wait(interval):
            try:
                self._beat()
            except redis.RedisError as exc:
                logger.warning("heartbeat to Redis failed: %s", exc)

    def start(self) -> None:
        _call(self._beat)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.task_id:
            try:
                self.r.delete(alive_key(self.task_id))
            except redis.RedisError:
                pass


@contextmanager
def job_lease(task_id: str | None, job: str, *, database_url: str | None = None, mode: str | None = None,
              alive: bool = True, ttl_s: float | None = None,
              r: redis.Redis | None = None) -> Iterator[DatabaseLock | None]:
    """For the duration of a job: its liveness key (with `alive`) and, with `mode`, the lock on the database
    it targets (DATABASE_URL unless `database_url`), both renewed by a heartbeat thread.

    Raises BusyError at once when the lock is held in a conflicting mode.
    """
    if mode is None and not alive:
        yield None
        return
    r = r or client()
    ttl = float(ttl_s if ttl_s is not None else get_settings().JOB_LOCK_TTL_S)
    lock = None
    if mode is not None:
        db = database_key(database_url or get_settings().database_url)
        lock = DatabaseLock(db, mode, job, task_id, ttl, r)
        lock.acquire()
    heartbeat = Heartbeat(r, task_id if alive else None, ttl, [lock] if lock else [])
    try:
        heartbeat.start()
        yield lock
    finally:
        heartbeat.stop()
        if lock is not None:
            lock.release()


# --- schedule slots and delivery counts -------------------------------------------------------------------

_CLAIM_SLOT = """
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return {'claimed', ARGV[1]} end
if v == ARGV[1] then return {'resume', v} end
if string.sub(v, 1, string.len(ARGV[1]) + 6) == 'done:' .. ARGV[1] .. ':' then return {'created', v} end
return {'taken', v}
"""


def slot_key(db: str, slot: str) -> str:
    return f"{PREFIX}slot:{db}:{slot}"


def claim_slot(db: str, slot: str, task_id: str, r: redis.Redis | None = None) -> tuple[str, str | None]:
    """Claim a schedule slot for `task_id`. Returns (status, detail):

    - ("claimed", None): first claim, make the backup;
    - ("resume", None): this very task claimed it before and died (redelivery) or is retrying: make the backup;
    - ("created", name): this task already made backup `name` before it died: continue after the backup;
    - ("taken", other_task_id): another delivery owns the slot: do nothing.
    """
    status, value = _call((r or client()).eval, _CLAIM_SLOT, 1, slot_key(db, slot), task_id, SLOT_TTL_S)
    status = status.decode() if isinstance(status, bytes) else status
    value = value.decode() if isinstance(value, bytes) else value
    if status == "created":
        return status, value.split(":", 2)[2]
    if status == "taken":
        return status, value.split(":", 2)[1] if value.startswith("done:") else value
    return status, None


def slot_created(db: str, slot: str, task_id: str, backup_name: str, r: redis.Redis | None = None) -> None:
    """Record that the slot's backup exists, so a redelivery continues with upload/cleanup instead of a second one."""
    _call((r or client()).set, slot_key(db, slot), f"done:{task_id}:{backup_name}", ex=SLOT_TTL_S)


def count_delivery(task_id: str, retries: int, r: redis.Redis | None = None) -> int:
    """How many times this attempt (task id, retry number) has been delivered, this one included."""
    key = f"{PREFIX}deliveries:{task_id}:{retries}"
    r = r or client()
    count = _call(r.incr, key)
    _call(r.expire, key, DELIVERY_TTL_S)
    return int(count)
