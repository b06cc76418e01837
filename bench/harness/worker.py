"""The Celery worker queued commands run on: started by the harness on a Redis database of its own.

A private Redis database number keeps the benchmark's jobs away from everyone else's workers and theirs away
from ours (Celery's broadcasts, such as the client's ping, are scoped to the database too). One worker per
dataset, started with that dataset's DATABASE_URL and a BACKUP_DIR the harness controls, and stopped after
it: a pool process keeps the memory a previous dataset's job made it grow to, so a fresh one per dataset
measures each dataset on its own. Two pool processes, like `./worker`'s default.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import redis
from procfs import children

from .pg import HarnessError

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "backup_tasks_bench:claimed_by"


class RedisDb:
    """An empty Redis database (1-15) claimed with a key, the way tests/celery_worker.py claims one."""

    def __init__(self, wait_s: float = 600.0, log=print) -> None:
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.number = self._claim_waiting(wait_s, log)
        self.url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.number}"

    def _claim_waiting(self, wait_s: float, log) -> int:
        """Test sessions claim databases too (for up to an hour each): wait for one to be released."""
        deadline = time.monotonic() + wait_s
        while True:
            number = self._claim()
            if number is not None:
                return number
            if time.monotonic() > deadline:
                raise HarnessError(f"no empty Redis database (1-15) to claim for the benchmark's worker after "
                                   f"{wait_s:.0f} s (test sessions hold them)")
            log("every Redis database 1-15 is taken (test sessions); waiting for one")
            time.sleep(15)

    def _client(self, n: int) -> redis.Redis:
        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=n, socket_connect_timeout=2)

    def _claim(self) -> int | None:
        try:
            self._client(0).ping()
        except redis.RedisError as exc:
            raise HarnessError(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} (make services): {exc}") from None
        for n in range(15, 0, -1):
            r = self._client(n)
            if r.dbsize() == 0 and r.set(CLAIM_KEY, self.token, nx=True, ex=12 * 3600):
                if r.dbsize() == 1:
                    return n
                r.delete(CLAIM_KEY)
        return None

    def release(self) -> None:
        r = self._client(self.number)
        if r.get(CLAIM_KEY) == self.token.encode():
            r.flushdb()


class Worker:
    """The worker as ./worker starts it (Engine.worker_argv), in its own process group, importing the engine's
    copy; run from the dataset's directory so no developer's .env is read."""

    def __init__(self, engine, env: dict, cwd: Path, log: Path, concurrency: int = 2):
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - the worker's output for its whole life; closed in stop()
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
