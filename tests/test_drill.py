"""Issue 16: restore drills. A drill restores a backup into a scratch database and proves the result: checksum,
schema, commit, an empty row-level diff for every table, sequences, migration version; the report goes next to the
backup. Every failure the issue names is caught with a clear report; the production database is never touched.

Real PostgreSQL throughout; the restored scratch database is compared with the source by the independent oracle
(tests/oracle.py), not by the drill's own diff. The CLI runs as a subprocess (`backupctl … --local`) so exit codes
and stderr are the user's.
"""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from backup_tasks.checksum import sha256_file, write_sidecar
from backup_tasks.jobs import run_job
from backup_tasks.manifest import manifest_path
from backup_tasks.names import sidecar_path
from tests.celery_worker import BACKUPCTL, ROOT
from tests.conftest import query, run_sql
from tests.oracle import assert_same, snapshot
from tests.test_torture_roundtrip import torture_sections

SMALL_SCHEMA = """
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
CREATE TABLE prices (id serial PRIMARY KEY, item text NOT NULL, price numeric(8,2), note text);
CREATE TABLE log (at timestamptz, line text);  -- no primary key: compared as a multiset of rows
"""
SMALL_DATA = """
INSERT INTO alembic_version VALUES ('0aa2828fc065');
INSERT INTO prices (item, price, note) SELECT 'item ' || i, i * 1.25, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' END
  FROM generate_series(1, 200) i;
INSERT INTO log SELECT '2025-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', 'line ' || (i % 7)
  FROM generate_series(1, 50) i;
INSERT INTO log VALUES ('2025-01-01 00:00:00+00', 'twice'), ('2025-01-01 00:00:00+00', 'twice');
"""


@pytest.fixture
def pair(make_db, settings_env, backup_dir):
    """(production url, scratch url): production with rows, the scratch database with the schema only."""
    def make(schema: str, data: str, **extra: str):
        _, prod = make_db()
        _, scratch = make_db()
        run_sql(prod, schema + data)
        run_sql(scratch, schema)
        settings_env(prod, DRILL_DATABASE_URL=scratch, **extra)
        return prod, scratch

    return make


def backupctl(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([BACKUPCTL, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def report_of(backup: Path) -> dict:
    return json.loads(sidecar_path(backup, "drill").read_text())


def test_a_good_backup_of_the_torture_schema_drills_ok_and_the_report_says_so_field_by_field(pair, backup_dir):
    schema, data = torture_sections()
    prod, scratch = pair(schema, data)
    created = run_job("create", {})
    backup = Path(created["path"])
    before = snapshot(prod)

    done = backupctl("drill", "--local")
    assert done.returncode == 0, done.stderr
    assert "FAILED" not in done.stdout and ": OK" in done.stdout, done.stdout

    assert_same(before, snapshot(scratch))  # the oracle agrees with the drill: the scratch holds the backup
    assert snapshot(prod) == before  # production untouched
    r = report_of(backup)
    assert r["format"] == "backup_tasks-drill" and r["report_version"] == 1
    assert r["backup"] == backup.name and r["location"] == "local"
    assert r["ok"] is True and r["outcome"] == "ok" and r["error"] is None
    assert [c["name"] for c in r["checks"]] == ["checksum", "schema", "restore", "rows", "sequences",
                                                "migration_version"]
    assert all(c["ok"] is True and c["seconds"] >= 0 and c["failures"] == [] for c in r["checks"])
    checks = {c["name"]: c for c in r["checks"]}
    assert created["sha256"] in checks["checksum"]["detail"] and "manifest" in checks["checksum"]["detail"]
    assert checks["restore"]["detail"] == f"committed: {r['tables']} tables, " \
                                          f"{created['total_rows']} rows"
    assert r["rows"] == created["total_rows"] and r["tables"] == len(created["tables"])
    assert "35 tables" in checks["rows"]["detail"]
    sequences = query(prod, "SELECT count(*) FROM pg_sequences WHERE schemaname NOT IN ('pg_catalog')")[0][0]
    assert checks["sequences"]["detail"] == f"{sequences} sequences as recorded" and sequences > 1
    assert r["migration_version"] == query(prod, "SELECT version_num FROM alembic_version")[0][0]
    assert r["scratch"] == f"database {scratch.rsplit('/', 1)[1]} on localhost:5432"
    assert r["backup_source"] == f"database {prod.rsplit('/', 1)[1]} on localhost"
    assert r["server_version"] == r["backup_server_version"] == query(prod, "SHOW server_version")[0][0]
    assert r["tool_version"] and r["backup_bytes"] == backup.stat().st_size
    assert r["restore_s"] > 0 and r["rows_per_s"] == pytest.approx(r["rows"] / r["restore_s"], rel=0.01)
    assert r["bytes_per_s"] == pytest.approx(r["backup_bytes"] / r["restore_s"], rel=0.01)
    assert r["peak_rss_bytes"] > 10 << 20 and r["tree_peak_rss_bytes"] >= r["peak_rss_bytes"] // 2
    assert r["started_at"] < r["finished_at"] and r["duration_s"] >= sum(c["seconds"] for c in r["checks"]) - 0.01
    assert r["failing_tables"] == [] and r["schema_mismatches"] == [] and r["prepare_output"] is None

    listing = backupctl("list", "--local")
    line = next(x for x in listing.stdout.splitlines() if backup.name in x)
    assert "LAST DRILL" in listing.stdout and f" ok {r['finished_at'][:10]}" in line


def tamper(backup: Path, old: bytes, new: bytes) -> None:
    """Rewrite one value in the file and make the file look untouched: its sidecar recomputed, its manifest
    removed (it records the old SHA-256, which the drill's checksum step would notice first)."""
    text = gzip.decompress(backup.read_bytes())
    assert text.count(old) == 1, "the value to tamper with must occur once"
    backup.write_bytes(gzip.compress(text.replace(old, new)))
    write_sidecar(backup, sha256_file(backup))
    manifest_path(backup).unlink()


def test_a_backup_tampered_after_writing_fails_the_drill_naming_the_table(pair, backup_dir):
    _prod, _scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    # A price with a third decimal: numeric(8,2) rounds it when the row is restored, so the database does not hold
    # what the file says. The checksum (recomputed) and the restore (which commits) both pass.
    tamper(backup, b'"item 7","8.75"', b'"item 7","8.745"')

    done = backupctl("drill", backup.name, "--local")
    assert done.returncode == 14, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    error, hint = done.stderr.strip().splitlines()
    assert error.startswith(f"Error: drill of {backup.name} (local) FAILED at rows: 1 table differs from the file "
                            "after the restore")
    assert "prices: 1 missing, 1 extra" not in error and "prices: 1 changed" in error
    assert hint.startswith("Hint: The drill report")
    r = report_of(backup)
    assert r["ok"] is False and r["outcome"] == "failed" and r["failing_tables"] == ["prices"]
    checks = {c["name"]: c for c in r["checks"]}
    assert checks["checksum"]["ok"] and checks["schema"]["ok"] and checks["restore"]["ok"]
    assert checks["rows"]["ok"] is False and checks["rows"]["failures"] == ["prices: 1 changed"]
    assert [c["name"] for c in r["checks"]] == ["checksum", "schema", "restore", "rows"]  # stopped there
    assert r["error"].startswith("rows: 1 table differs")


def test_a_changed_row_in_a_table_without_a_primary_key_is_found_too(pair, backup_dir):
    _prod, _scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    # A timestamptz written with another offset: the same instant, stored and printed as +00. The file's row is
    # not what the database holds as text, so the proof fails (the file is not the backup's own output).
    tamper(backup, b'"2025-01-01 00:07:00+00","line 0"', b'"2025-01-01 02:07:00+02","line 0"')
    done = backupctl("drill", backup.name, "--local")
    assert done.returncode == 14, done.stderr
    r = report_of(backup)
    assert r["failing_tables"] == ["log"]
    assert {c["name"]: c for c in r["checks"]}["rows"]["failures"] == ["log: 1 missing, 1 extra"]


def test_a_tampered_file_whose_manifest_was_left_is_caught_by_the_checksum_step(pair, backup_dir):
    _prod, scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    text = gzip.decompress(backup.read_bytes())
    backup.write_bytes(gzip.compress(text.replace(b'"item 7","8.75"', b'"item 7","9.75"')))
    write_sidecar(backup, sha256_file(backup))
    scratch_before = snapshot(scratch)
    done = backupctl("drill", backup.name, "--local")
    assert done.returncode == 14, done.stderr
    assert "FAILED at checksum: the manifest records another SHA-256" in done.stderr
    assert [c["name"] for c in report_of(backup)["checks"]] == ["checksum"]
    assert snapshot(scratch) == scratch_before  # nothing restored
    # Changed without even recomputing the sidecar: the checksum step refuses it the same way.
    backup.write_bytes(gzip.compress(text))
    done = backupctl("drill", backup.name, "--local")
    assert done.returncode == 14 and "FAILED at checksum:" in done.stderr and "SHA-256" in done.stderr, done.stderr
    assert report_of(backup)["checks"][0]["ok"] is False and snapshot(scratch) == scratch_before


def test_a_scratch_database_with_a_dropped_column_fails_naming_it_and_is_not_changed(pair, backup_dir):
    _prod, scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    run_sql(scratch, "ALTER TABLE prices DROP COLUMN note; INSERT INTO prices (item) VALUES ('kept');")
    before = snapshot(scratch)
    done = backupctl("drill", "--local")
    assert done.returncode == 14, done.stderr
    assert "FAILED at schema: schema drift: 1 mismatch (column prices.note is in the backup but not in the " \
           "database)" in done.stderr
    r = report_of(backup)
    assert r["schema_mismatches"] == ["column prices.note is in the backup but not in the database"]
    assert {c["name"]: c for c in r["checks"]}["schema"]["failures"] == r["schema_mismatches"]
    assert r["failing_tables"] == [] and r["outcome"] == "failed"
    assert snapshot(scratch) == before


@pytest.mark.parametrize("form", ["url", "keywords", "localhost-alias"])
def test_the_production_database_as_scratch_is_refused_and_nothing_changes(pair, backup_dir, form):
    prod, _scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    name = prod.rsplit("/", 1)[1]
    as_scratch = {"url": prod, "keywords": f"host=localhost port=5432 dbname={name} user=postgres password=s3cret",
                  "localhost-alias": f"postgresql://root:pw@127.0.0.1:5432/{name}?sslmode=disable"}[form]
    run_sql(prod, "INSERT INTO prices (item) VALUES ('after the backup')")
    before = snapshot(prod)
    done = backupctl("drill", "--local", env_extra={"DRILL_DATABASE_URL": as_scratch})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: refusing to drill into database {name} on ")
    assert "it is the production database (DATABASE_URL); nothing was changed" in done.stderr
    assert "s3cret" not in done.stderr
    assert snapshot(prod) == before
    assert not sidecar_path(backup, "drill").exists()
    # --scratch-url is checked the same way.
    done = backupctl("drill", "--local", "--scratch-url", as_scratch)
    assert done.returncode == 2 and "refusing" in done.stderr
    if form == "keywords":  # a URL with a password never goes to the broker (refused before any job is sent)
        done = backupctl("drill", "--scratch-url", as_scratch)
        assert done.returncode == 2 and "a --scratch-url with a password is not sent to a worker" in done.stderr


def test_the_database_the_backup_came_from_is_refused_as_scratch(pair, make_db, backup_dir, monkeypatch):
    prod, _scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    _, other = make_db()  # production has moved; the old database still exists
    before = snapshot(prod)
    done = backupctl("drill", "--local", env_extra={"DATABASE_URL": other, "DRILL_DATABASE_URL": prod})
    assert done.returncode == 2, done.stderr
    assert "the backup was taken from database" in done.stderr and "nothing was changed" in done.stderr
    assert snapshot(prod) == before and not sidecar_path(backup, "drill").exists()


def test_without_a_scratch_database_the_drill_says_what_to_set(make_db, settings_env, backup_dir, monkeypatch):
    _, prod = make_db()
    settings_env(prod)
    monkeypatch.delenv("DRILL_DATABASE_URL", raising=False)
    done = backupctl("drill", "--local")
    assert done.returncode == 2
    assert done.stderr.startswith("Error: DRILL_DATABASE_URL is not set") and "Hint: Point DRILL_DATABASE_URL" in \
        done.stderr


def test_the_prepare_command_brings_the_scratch_schema_up_and_its_output_is_kept(pair, make_db, backup_dir,
                                                                                  tmp_path, monkeypatch):
    prod, scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    run_sql(scratch, "DROP TABLE log")  # the scratch database is behind: the prepare command migrates it
    backup = Path(run_job("create", {})["path"])
    script = tmp_path / "migrate.py"
    script.write_text("import os, psycopg2\n"
                      "c = psycopg2.connect(os.environ['DATABASE_URL']); c.autocommit = True\n"
                      "c.cursor().execute('CREATE TABLE IF NOT EXISTS log (at timestamptz, line text)')\n"
                      "print('migrated', c.get_dsn_parameters()['dbname'])\n")
    import sys

    done = backupctl("drill", "--local", env_extra={"DRILL_PREPARE_COMMAND": f"{sys.executable} {script}"})
    assert done.returncode == 0, done.stderr
    r = report_of(backup)
    assert r["checks"][1]["name"] == "prepare" and r["checks"][1]["ok"]
    assert r["prepare_output"].strip() == f"migrated {scratch.rsplit('/', 1)[1]}"  # ran on the scratch database
    assert query(prod, "SELECT 1 FROM pg_tables WHERE tablename = 'log' AND schemaname = 'public'") != []

    # A prepare command that fails (or hangs past its timeout) fails the drill, its output in the report.
    done = backupctl("drill", "--local", env_extra={"DRILL_PREPARE_COMMAND": f"{sys.executable} -c "
                                                    "\"import sys; print('no such revision'); sys.exit(3)\""})
    assert done.returncode == 14 and "FAILED at prepare:" in done.stderr and "exited with 3" in done.stderr
    assert report_of(backup)["prepare_output"].strip() == "no such revision"
    done = backupctl("drill", "--local", env_extra={"DRILL_PREPARE_COMMAND": "sleep 30",
                                                    "DRILL_PREPARE_TIMEOUT_S": "1"})
    assert done.returncode == 14 and "did not finish within DRILL_PREPARE_TIMEOUT_S=1s" in done.stderr


def test_check_max_drill_age_exits_13_without_a_recent_successful_drill(pair, backup_dir):
    _prod, _scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    backup = Path(run_job("create", {})["path"])
    done = backupctl("check", "--max-drill-age", "8d", "--local")
    assert done.returncode == 13 and "no successful restore drill found" in done.stderr
    assert backupctl("drill", "--local").returncode == 0
    done = backupctl("check", "--max-drill-age", "8d", "--local")
    assert done.returncode == 0 and done.stdout.startswith(f"OK: newest successful drill ({backup.name}, local)")
    # A report that says the drill is old: exit 13 again.
    r = report_of(backup)
    r["finished_at"] = "2020-01-01T00:00:00Z"
    sidecar_path(backup, "drill").write_text(json.dumps(r))
    done = backupctl("check", "--max-drill-age", "8d", "--max-age", "1h", "--local")
    assert done.returncode == 13 and "older than --max-drill-age 8d" in done.stderr
    # A failed drill is not a successful one.
    r["ok"], r["outcome"], r["finished_at"] = False, "failed", r["started_at"]
    sidecar_path(backup, "drill").write_text(json.dumps(r))
    assert backupctl("check", "--max-drill-age", "8d", "--local").returncode == 13
    listing = backupctl("list", "--local").stdout
    assert f" failed {r['started_at'][:10]}" in next(x for x in listing.splitlines() if backup.name in x)


def test_each_database_of_a_file_drills_into_its_own_scratch_and_never_into_another_production(
        make_db, settings_env, backup_dir, tmp_path, monkeypatch):
    (_, orders), (_, billing), (_, scratch) = make_db(), make_db(), make_db()
    for url in (orders, billing, scratch):
        run_sql(url, SMALL_SCHEMA)
    run_sql(orders, SMALL_DATA)
    file = tmp_path / "databases.toml"
    file.write_text('[databases.orders]\nurl_env = "ORDERS_URL"\ndrill_url_env = "ORDERS_DRILL_URL"\n'
                    '[databases.billing]\nurl_env = "BILLING_URL"\n')
    settings_env(orders, BACKUP_DATABASES_FILE=str(file), ORDERS_URL=orders, BILLING_URL=billing,
                 ORDERS_DRILL_URL=scratch)
    monkeypatch.delenv("DRILL_DATABASE_URL", raising=False)
    assert backupctl("--db", "orders", "create", "--local").returncode == 0
    done = backupctl("--db", "orders", "drill", "--local")
    assert done.returncode == 0, done.stderr
    assert_same(snapshot(orders), snapshot(scratch))
    before = snapshot(billing)
    done = backupctl("--db", "orders", "drill", "--local", env_extra={"ORDERS_DRILL_URL": billing})
    assert done.returncode == 2 and "it is the production database billing (BILLING_URL)" in done.stderr
    assert snapshot(billing) == before


def test_make_db_backup_drill_drills_the_newest_backup_or_the_file_given(pair, backup_dir):
    import os

    prod, scratch = pair(SMALL_SCHEMA, SMALL_DATA)
    first = Path(run_job("create", {})["path"])
    env = {**os.environ, "LOCAL": "1"}

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "db:backup:drill", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    done = make()
    assert done.returncode == 0, done.stderr
    assert f"Drill of {first.name} (local)" in done.stdout and report_of(first)["ok"] is True
    assert_same(snapshot(prod), snapshot(scratch))
    run_sql(scratch, "ALTER TABLE prices DROP COLUMN note")
    done = make(f"FILE={first.name}")
    assert done.returncode != 0 and "schema drift" in done.stderr and report_of(first)["ok"] is False
