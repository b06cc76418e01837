"""The parts of one parallel backup, in Redis: which are still to be written, who writes which (a lease renewed
while it works), what each produced, and what failed.

The coordinator publishes the parts and takes them itself whenever none of the helper tasks does (so one worker
process completes a backup of any --jobs, part after part); helpers on other worker processes take them too.
A lease that lapses (its worker died) puts the part back, for anyone to take again while the snapshot lives.
Only the holder of a part's current lease can record its result, so a part written twice counts once.
Expiry is decided on Redis' own clock (TIME), so workers with skewed clocks agree.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from typing import Any

import redis

from .errors import QueueError
from .queue_state import PREFIX, call

LEASE_S = 30  # a part's lease, renewed every few seconds by its writer; a dead writer's lapses after this
BOARD_TTL_S = 2 * 24 * 3600  # a board outlives any backup, then goes

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
# KEYS: pending (list), leases (zset index -> expiry), owners (hash), state. ARGV: owner, lease ms
_CLAIM = _NOW + """
if redis.call('GET', KEYS[4]) ~= 'running' then return false end
local index = redis.call('LPOP', KEYS[1])
if not index then return false end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), index)
redis.call('HSET', KEYS[3], index, ARGV[1])
return index
"""
# KEYS: leases, owners. ARGV: index, owner, lease ms
_RENEW = _NOW + """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
# KEYS: leases, owners, results (hash). ARGV: index, owner, result JSON
_FINISH = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""
# KEYS: pending, leases, owners. Lapsed leases: their parts back at the head of the list.
_REQUEUE = _NOW + """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, index in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], index)
  redis.call('HDEL', KEYS[3], index)
  redis.call('LPUSH', KEYS[1], index)
end
return lapsed
"""


def owner_name() -> str:
    """Who writes a part: host, process, and a random token (a pid can be reused after a crash)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class PartBoard:
    def __init__(self, r: redis.Redis, job: str):
        self.r, self.job = r, job
        base = f"{PREFIX}parts:{job}:"
        self.keys = {name: base + name for name in
                     ("pending", "leases", "owners", "state", "specs", "task", "results", "failures", "progress")}

    def _k(self, *names: str) -> list[str]:
        return [self.keys[n] for n in names]

    # --- the coordinator ----------------------------------------------------------------------------------
    def publish(self, specs: dict[int, dict], order: list[int], task: dict[str, Any]) -> None:
        """The parts (index -> spec), the order to take them in, and what every part shares."""
        pipe = self.r.pipeline()
        pipe.delete(*self.keys.values())
        if specs:
            pipe.hset(self.keys["specs"], mapping={str(i): json.dumps(s) for i, s in specs.items()})
            pipe.rpush(self.keys["pending"], *[str(i) for i in order])
        pipe.set(self.keys["task"], json.dumps(task))
        pipe.set(self.keys["state"], "running")
        for key in self.keys.values():
            pipe.expire(key, BOARD_TTL_S)
        call(pipe.execute)

    def requeue_lapsed(self) -> list[int]:
        lapsed = call(self.r.eval, _REQUEUE, 3, *self._k("pending", "leases", "owners"))
        return [int(i) for i in lapsed]

    def results(self) -> dict[int, dict]:
        return {int(i): json.loads(v) for i, v in call(self.r.hgetall, self.keys["results"]).items()}

    def failures(self) -> dict[int, dict]:
        return {int(i): json.loads(v) for i, v in call(self.r.hgetall, self.keys["failures"]).items()}

    def progress(self) -> tuple[int, int]:
        values = call(self.r.hmget, self.keys["progress"], "rows", "bytes")
        return int(values[0] or 0), int(values[1] or 0)

    def close(self, state: str) -> None:
        """'done' or 'abandoned': helpers stop taking parts; the board's keys go shortly after."""
        try:
            pipe = self.r.pipeline()
            pipe.set(self.keys["state"], state, ex=3600)
            pipe.delete(self.keys["pending"], self.keys["specs"], self.keys["task"])
            pipe.execute()
        except redis.RedisError:
            pass  # the keys expire anyway

    # --- whoever writes parts -----------------------------------------------------------------------------
    def state(self) -> str | None:
        value = call(self.r.get, self.keys["state"])
        return value.decode() if value else None

    def task(self) -> dict[str, Any] | None:
        value = call(self.r.get, self.keys["task"])
        return json.loads(value) if value else None

    def claim(self, owner: str) -> tuple[int, dict] | None:
        """The next part to write (its index and spec), leased to `owner`; None when none is waiting."""
        index = call(self.r.eval, _CLAIM, 4, *self._k("pending", "leases", "owners", "state"), owner,
                     LEASE_S * 1000)
        if index is None:
            return None
        spec = call(self.r.hget, self.keys["specs"], index)
        if spec is None:
            raise QueueError(f"part {int(index) + 1} of backup job {self.job} has no description in Redis")
        return int(index), json.loads(spec)

    def renew(self, index: int, owner: str) -> bool:
        return bool(self.r.eval(_RENEW, 2, *self._k("leases", "owners"), str(index), owner, LEASE_S * 1000))

    def finish(self, index: int, owner: str, result: dict) -> bool:
        """Record the part's result; False when the lease had lapsed and the part went to someone else (the
        caller then removes its output)."""
        return bool(call(self.r.eval, _FINISH, 3, *self._k("leases", "owners", "results"), str(index), owner,
                         json.dumps(result)))

    def fail(self, index: int, error: dict) -> None:
        call(self.r.hset, self.keys["failures"], str(index), json.dumps(error))

    def add_progress(self, rows: int, size: int) -> None:
        pipe = self.r.pipeline()
        pipe.hincrby(self.keys["progress"], "rows", rows)
        pipe.hincrby(self.keys["progress"], "bytes", size)
        call(pipe.execute)
