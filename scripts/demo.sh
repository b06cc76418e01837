#!/usr/bin/env bash
# `make demo`: a tour on this machine, no Docker needed. Creates a demo database with realistic data, starts a
# Celery worker, and runs create → change rows → diff → restore through the queue, printing what a user sees.
# Safe to run again: the demo database is recreated each time; backups accumulate in ./backups/demo.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEMO_DB="${DEMO_DB:-backup_tasks_demo}"
ADMIN_URL="${DEMO_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
export DATABASE_URL="${ADMIN_URL%/*}/${DEMO_DB}"
export BACKUP_DIR="${DEMO_BACKUP_DIR:-./backups/demo}"
export CELERY_BROKER_URL="${DEMO_BROKER_URL:-redis://127.0.0.1:6379/0}"
export CELERY_RESULT_BACKEND="$CELERY_BROKER_URL"
BACKUPCTL=.venv/bin/backupctl
mkdir -p .demo "$BACKUP_DIR"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "1. Demo database ${DEMO_DB}: users, orders, order items (foreign keys), an audit trigger, an analytics schema"
psql -q "$ADMIN_URL" -c "DROP DATABASE IF EXISTS ${DEMO_DB} WITH (FORCE)" -c "CREATE DATABASE ${DEMO_DB}"
psql -q "$DATABASE_URL" <<'SQL'
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('0aa2828fc065');
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users, total numeric(12,2),
                     status text, placed_at timestamptz);
CREATE TABLE order_items (order_id bigint REFERENCES orders ON DELETE CASCADE, sku text, qty int, price numeric(10,2),
                          PRIMARY KEY (order_id, sku));
CREATE TABLE audit_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), what text);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit_log (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NEW; END$$;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION audit();
CREATE SCHEMA analytics;
CREATE TABLE analytics.events (id bigserial PRIMARY KEY, user_id bigint, kind text, payload jsonb, at timestamptz);
INSERT INTO users (name, email, created_at)
  SELECT 'User ' || i, 'user' || i || '@example.com', timestamptz '2025-01-01' + i * interval '37 minutes'
  FROM generate_series(1, 10000) i;
INSERT INTO orders (user_id, total, status, placed_at)
  SELECT 1 + (i * 7919) % 10000, round((random() * 500)::numeric, 2), (ARRAY['paid','shipped','refunded'])[1 + i % 3],
         timestamptz '2025-02-01' + i * interval '11 minutes'
  FROM generate_series(1, 30000) i;
INSERT INTO order_items SELECT o.id, 'SKU-' || s, 1 + (o.id + s) % 4, round((random() * 100)::numeric, 2)
  FROM orders o, generate_series(1, 2) s;
INSERT INTO analytics.events (user_id, kind, payload, at)
  SELECT 1 + i % 10000, 'page_view', jsonb_build_object('path', '/p/' || i % 97, 'ms', i % 1000), now()
  FROM generate_series(1, 20000) i;
SQL
psql -qAt "$DATABASE_URL" -c "SELECT 'users ' || count(*) FROM users UNION ALL SELECT 'orders ' || count(*) FROM orders
  UNION ALL SELECT 'order_items ' || count(*) FROM order_items UNION ALL SELECT 'audit_log ' || count(*) FROM audit_log
  UNION ALL SELECT 'analytics.events ' || count(*) FROM analytics.events" | sed 's/^/   /'
before=$(psql -qAt "$DATABASE_URL" -c "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (SELECT * FROM orders) t")

step "2. Starting a Celery worker (log: .demo/worker.log)"
./worker > .demo/worker.log 2>&1 &
WORKER_PID=$!
cleanup() { kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null; true; }
trap cleanup EXIT
for _ in $(seq 1 60); do
  .venv/bin/celery -A backup_tasks.celery_app inspect ping --timeout 1 >/dev/null 2>&1 && break
  sleep 1
done

step "3. backupctl create   (enqueued on the worker; the client waits with a progress bar)"
$BACKUPCTL create | tee .demo/create.out
NAME=$(sed -n 's#^Saved to: .*/##p' .demo/create.out)

step "4. The application changes data: orders of 500 users deleted, prices changed, new users"
psql -q "$DATABASE_URL" <<'SQL'
DELETE FROM orders WHERE user_id <= 500;
UPDATE order_items SET price = price * 1.1 WHERE order_id % 10 = 0;
INSERT INTO users (name, email, created_at) SELECT 'Late ' || i, 'late' || i || '@example.com', now() FROM generate_series(1, 250) i;
UPDATE alembic_version SET version_num = '1bb3939gd176';
SQL

step "5. backupctl diff $NAME   (what a restore would change)"
$BACKUPCTL diff "$NAME"

step "6. backupctl restore $NAME --yes   (one transaction; triggers off during the load)"
$BACKUPCTL restore "$NAME" --yes

step "7. Checking the restored data"
after=$(psql -qAt "$DATABASE_URL" -c "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (SELECT * FROM orders) t")
if [ "$before" = "$after" ]; then echo "   orders are identical to before the changes (md5 $after)"; else echo "   orders differ!" >&2; exit 1; fi
psql -qAt "$DATABASE_URL" -c "SELECT '   alembic version: ' || version_num FROM alembic_version"
$BACKUPCTL list | head -5

printf '\nWatch jobs in Flower: FLOWER_BASIC_AUTH=admin:change-me make flower   (then open http://127.0.0.1:5555)\n'
printf 'Run it yourself: make worker (one terminal), make db:backup:oneshot, make db:backup:list, make db:backup:diff FILE=%s\n' "$NAME"
