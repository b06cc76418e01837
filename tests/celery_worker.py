"""Fixtures for the Celery tests: a real worker (./worker, in a subprocess) on the real Redis, never eager mode.

Isolation: the session claims an empty Redis database number (1-15) with a key, so parallel test runs of
other engineers and a developer's own worker on DB 0 are not disturbed; it is flushed between tests.
Each test gets a throwaway PostgreSQL database (make_db), its own BACKUP_DIR, and a worker started with
DATABASE_URL/BACKUP_DIR pointing there.
Clients run as `backupctl` subprocesses (real exit codes, real signals) or in-process through
`client_app` (a fresh Celery app configured from the same environment).

Usage in a test module: `from tests.celery_worker import *  # noqa: F401,F403` (fixtures and helpers).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from backup_tasks.settings import reset_settings_cache
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
BACKUPCTL = str(VENV_BIN / "backupctl")
CELERY = str(VENV_BIN / "celery")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "backup_tasks_test:claimed_by"
# Settings that would leak from the developer's environment into the worker and change what it does.
SCRUBBED = ("S3_BUCKET_NAME", "S3_ENDPOINT_URL", "BACKUP_NOTIFY_WEBHOOK_URL", "BACKUP_NOTIFY_URLS",
            "BACKUP_NOTIFY_SUCCESS_URLS", "BACKUP_DATABASES_FILE", "BACKUP_DB", "BACKUP_CRON", "BACKUP_TIMEZONE",
            "FLOWER_BASIC_AUTH", "FLOWER_ADDRESS", "FLOWER_PORT", "CELERY_TASK_SOFT_TIME_LIMIT",
            "CELERY_TASK_TIME_LIMIT", "CELERY_WORKER_MAX_MEMORY_PER_CHILD_MB", "WORKER_CONCURRENCY")

__all__ = [
    "BACKUPCTL",
    "CELERY",
    "ROOT",
    "CeleryEnv",
    "Worker",
    "backupctl",
    "celery_env",
    "client_app",
    "free_port",
    "redis_db",
    "wait_for",
    "worker",
]


def _redis(db: int) -> redis.Redis:
    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=2)


def flush_except_claim(r: redis.Redis) -> None:
    for key in r.scan_iter(count=500):
        if key != CLAIM_KEY.encode():
            r.delete(key)


# The number claimed by this process. Every module that star-imports this one gets its own instance of the
# session fixture below; without this each of them claimed a database of its own, and a few sessions side by
# side (other engineers' runs on the same Redis) used up all fifteen.
_claimed: dict[str, object] = {}


@pytest.fixture(scope="session")
def redis_db() -> int:
    """An empty Redis database number claimed for this test session (one for all its modules)."""
    if "n" in _claimed:
        yield _claimed["n"]
        return
    try:
        _redis(0).ping()
    except redis.RedisError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (make services)")
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    for n in range(15, 0, -1):
        r = _redis(n)
        # A database nobody claims now is free, whatever a killed session left in it (results live 7 days):
        # the claim lives CLAIM_TTL_S and is renewed while this session runs, so a killed one's lapses soon.
        if r.set(CLAIM_KEY, token, nx=True, ex=CLAIM_TTL_S):
            flush_except_claim(r)
            break
    else:
        pytest.fail("no unclaimed Redis database (1-15) for the Celery tests")
    _claimed["n"] = n
    renewal = threading.Event()
    threading.Thread(target=_renew_claim, args=(r, token, renewal), daemon=True).start()
    yield n
    renewal.set()
    if r.get(CLAIM_KEY) == token.encode():
        r.flushdb()


CLAIM_TTL_S = 120


def _renew_claim(r: redis.Redis, token: str, stop: threading.Event) -> None:
    while not stop.wait(CLAIM_TTL_S / 4):
        try:
            if r.get(CLAIM_KEY) == token.encode():
                r.expire(CLAIM_KEY, CLAIM_TTL_S)
        except redis.RedisError:
            pass


@dataclass
class CeleryEnv:
    db_name: str
    db_url: str
    backup_dir: Path
    broker_url: str
    redis_db: int
    env: dict[str, str] = field(default_factory=dict)

    def redis(self) -> redis.Redis:
        return _redis(self.redis_db)


@pytest.fixture
def celery_env(redis_db, make_db, tmp_path, monkeypatch) -> CeleryEnv:
    """Environment for a worker and its clients; also applied to this process (get_settings())."""
    name, url = make_db()
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
    flush_except_claim(_redis(redis_db))
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    values = {
        "CELERY_BROKER_URL": broker, "CELERY_RESULT_BACKEND": broker, "DATABASE_URL": url,
        "BACKUP_DIR": str(backup_dir), "PYTHONUNBUFFERED": "1",
    }
    env.update(values)
    for k in SCRUBBED:
        monkeypatch.delenv(k, raising=False)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    reset_settings_cache()
    yield CeleryEnv(name, url, backup_dir, broker, redis_db, env)
    reset_settings_cache()


def _die_with_parent() -> None:
    """In the worker's child before exec: SIGKILL it when the test session dies, however it dies. A worker
    orphaned by a killed session would otherwise keep consuming from a Redis database that a later session
    claims (found: one left from a session killed two hours earlier)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Worker:
    """`./worker` in its own process group (so SIGKILL reaches the pool processes too)."""

    def __init__(self, env: dict[str, str], log: Path, *, queues: str | None = None, concurrency: int = 2):
        self.name = f"test-{uuid.uuid4().hex[:8]}"
        self.log = log
        args = [str(ROOT / "worker"), "-n", f"{self.name}@%h", "--without-mingle", "--without-gossip"]
        if queues:
            args += ["-Q", queues]
        env = {**env, "WORKER_CONCURRENCY": str(concurrency)}
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_die_with_parent)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{self.name}@" in self.output() and " ready." in self.output():
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL to the whole worker (main process and pool children), no warm shutdown."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # warm shutdown
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        # Pool children that outlived their parent (after a SIGKILL of the main process only).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log_file.close()


@pytest.fixture
def worker(celery_env, tmp_path) -> Worker:
    w = Worker(celery_env.env, tmp_path / "worker.log").wait_ready()
    yield w
    w.stop()


@pytest.fixture
def client_app(celery_env):
    """A Celery app configured from this test's environment, for in-process clients (follow, enqueue)."""
    from backup_tasks.celery_app import make_app

    app = make_app()
    yield app
    app.close()


def backupctl(celery_env: CeleryEnv, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
              **kwargs) -> subprocess.CompletedProcess:
    """Run the real `backupctl` (no --local unless given) against the test's worker (`env`: another client
    environment than the worker's)."""
    return subprocess.run([BACKUPCTL, *args], cwd=ROOT, env=env or celery_env.env, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# wait_for comes from tests/conftest.py (the Celery tests import it from here).


def redis_values(client: redis.Redis) -> list[str]:
    """Every value kept in a Redis database (strings, lists, hashes: task results, states, board entries), as
    text, for the secrets scans."""
    out: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key).decode(errors="replace"))
        elif kind == b"list":
            out += [v.decode(errors="replace") for v in client.lrange(key, 0, -1)]
        elif kind == b"hash":
            out += [v.decode(errors="replace") for v in client.hgetall(key).values()]
    return out
