#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis are up, starting them when they are installed but stopped.
# Used by `make test` and `make demo`; does nothing when both already answer.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "Starting PostgreSQL..."
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "Error: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; echo "Hint: install and start PostgreSQL, or set TEST_ADMIN_DATABASE_URL" >&2; exit 1; }
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "Starting Redis..."
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  redis_up || { echo "Error: Redis is not reachable on 127.0.0.1:6379" >&2; echo "Hint: install redis-server (apt-get install redis-server)" >&2; exit 1; }
fi
echo "PostgreSQL and Redis are up."
