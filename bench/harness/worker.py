"""The Celery worker queued commands run on: started by the harness on a Redis database of its own.

A private Redis database number keeps the benchmark's jobs away from everyone else's workers and theirs away
from ours (Celery's broadcasts, such as the client's ping, are scoped to the database too). One worker per
dataset, started with that dataset's DATABASE_URL and a BACKUP_DIR the harness controls, and stopped after
it: a pool process keeps the memory a previous dataset's job made it grow to, so a fresh one per dataset
measures each dataset on its own. Two pool processes, like `./worker`'s default.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import redis
from procfs import children

from .pg import HarnessError

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The same claim as tests/celery_worker.py's, key and all: with keys of their own, a test session took the
# benchmark's database as unclaimed and flushed it under the running benchmark (and the other way round).
CLAIM_KEY = "backup_tasks_test:claimed_by"
CLAIM_TTL_S = 120  # renewed while the run lives: a killed run's claim lapses in two minutes


def broker(wait_s: float, log) -> RedisDb | PrivateRedis:
    """A Redis database of the shared server nobody claims, else (test sessions claim them while they run) a
    Redis server of the benchmark's own."""
    deadline = time.monotonic() + wait_s
    while True:
        db = RedisDb()
        if db.number is not None:
            return db
        if time.monotonic() > deadline:
            log("every Redis database 1-15 of the shared server is taken: starting a private redis-server")
            return PrivateRedis()
        log("every Redis database 1-15 is taken (test sessions); waiting for one")
        time.sleep(15)


class RedisDb:
    """A Redis database (1-15) nobody claims, claimed with a key that is renewed while the run lives and emptied
    of what a killed run left in it, the way tests/celery_worker.py claims one."""

    def __init__(self) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self.number = self._claim()
        self.url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.number}"
        self.where = f"Redis database {self.number}"

    def _client(self, n: int) -> redis.Redis:
        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n, socket_connect_timeout=2)

    def _claim(self) -> int | None:
        try:
            self._client(0).ping()
        except redis.RedisError as exc:
            raise HarnessError(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} (make services): {exc}") from None
        for n in range(15, 0, -1):
            r = self._client(n)
            if r.set(CLAIM_KEY, self.token, nx=True, ex=CLAIM_TTL_S):
                for key in r.scan_iter(count=500):
                    if key != CLAIM_KEY.encode():
                        r.delete(key)
                threading.Thread(target=self._renew, args=(r,), daemon=True).start()
                return n
        return None

    def _renew(self, r: redis.Redis) -> None:
        while not self._stop.wait(CLAIM_TTL_S / 4):
            try:
                if r.get(CLAIM_KEY) == self.token.encode():
                    r.expire(CLAIM_KEY, CLAIM_TTL_S)
            except redis.RedisError:
                pass

    def release(self) -> None:
        self._stop.set()
        r = self._client(self.number)
        if r.get(CLAIM_KEY) == self.token.encode():
            r.flushdb()


class PrivateRedis:
    """`redis-server` on a free loopback port, in memory only, for this run alone; stopped by release()."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise HarnessError("no free Redis database on the shared server, and no redis-server to start")
        with socket.socket() as s:
            s.bind((REDIS_HOST, 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([exe, "--port", str(port), "--bind", REDIS_HOST, "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url, self.where = f"redis://{REDIS_HOST}:{port}/0", f"a private redis-server on port {port}"
        client = redis.Redis(host=REDIS_HOST, port=port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        self.release()
        raise HarnessError(f"the private redis-server on port {port} did not answer")

    def release(self) -> None:
        self.proc.terminate()  # the server started above, by its pid
        self.proc.wait(timeout=10)


class Worker:
    """The worker as ./worker starts it (Engine.worker_argv), in its own process group, importing the engine's
    copy; run from the dataset's directory so no developer's .env is read."""

    def __init__(self, engine, env: dict, cwd: Path, log: Path, concurrency: int = 2):
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.log = log
        self._log_file = open(log, "wb")
        self.proc = subprocess.Popen(engine.worker_argv(concurrency, self.name), cwd=cwd,
                                     env={**env, "WORKER_CONCURRENCY": str(concurrency)}, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.concurrency = concurrency

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if f"{self.name}@" in text and " ready." in text and len(children(self.pid)) >= self.concurrency:
                return self
            if self.proc.poll() is not None:
                raise HarnessError(f"the worker exited with {self.proc.returncode}:\n{text[-2000:]}")
            time.sleep(0.1)
        raise HarnessError(f"the worker was not ready after {timeout} s:\n{self.output()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)  # warm shutdown of the worker and its pool, all ours
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log_file.close()
