"""Issue 18 through a real worker: encrypted backups made, listed, verified, diffed and restored by queued jobs,
refusals answered with exit 12, and the identity file's secret (AGE-SECRET-KEY-1…) never in any output, log, job
result or error kept in Redis."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.celery_worker import *  # noqa: F403
from tests.celery_worker import Worker, backupctl, redis_values
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot
from tests.test_encryption import AGE, AGE_KEYGEN, keygen

pytestmark = [pytest.mark.celery, pytest.mark.adversarial,
              pytest.mark.skipif(not (AGE and AGE_KEYGEN), reason="needs the age CLI")]


def test_encrypted_jobs_on_a_worker_and_the_secret_key_never_leaks(celery_env, tmp_path):
    secret, public = keygen(tmp_path / "key.txt")
    other_secret, other_public = keygen(tmp_path / "other.txt")
    celery_env.env.update({"BACKUP_AGE_RECIPIENTS": public, "BACKUP_AGE_IDENTITY_FILE": str(tmp_path / "key.txt")})
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                               "INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 5000) i;")
    before = snapshot(celery_env.db_url)
    # The client has no key at all: the worker encrypts and decrypts.
    client_env = {k: v for k, v in celery_env.env.items() if not k.startswith("BACKUP_AGE_")}
    worker = Worker(celery_env.env, tmp_path / "worker.log").wait_ready()
    outputs: list[str] = []
    try:
        made = backupctl(celery_env, "create", env=client_env)
        assert made.returncode == 0, made.stderr
        name = re.search(r"(backup_\d{8}_\d{6}(?:_\d+)?\.backup\.gz\.age)", made.stdout).group(1)
        run_sql(celery_env.db_url, "DELETE FROM t WHERE id % 2 = 0")
        for args in (["list"], ["verify", name], ["diff", name], ["restore", name, "--yes"]):
            result = backupctl(celery_env, *args, env=client_env)
            assert result.returncode == 0, (args, result.stderr)
            outputs += [result.stdout, result.stderr]
        assert_same(before, snapshot(celery_env.db_url))
        # A backup the worker's identity cannot open (encrypted to another key by the age CLI): refused, exit 12.
        path = celery_env.backup_dir / name
        plain = subprocess.run([AGE, "-d", "-i", str(tmp_path / "key.txt"), str(path)], capture_output=True,
                               check=True).stdout
        foreign = celery_env.backup_dir / "backup_20000101_000000.backup.gz.age"
        foreign.write_bytes(subprocess.run([AGE, "-r", other_public], input=plain, capture_output=True,
                                           check=True).stdout)
        run_sql(celery_env.db_url, "DELETE FROM t WHERE id < 10")
        changed = snapshot(celery_env.db_url)
        refused = backupctl(celery_env, "restore", foreign.name, "--yes", env=client_env)
        assert refused.returncode == 12, refused.stderr
        assert "no identity of BACKUP_AGE_IDENTITY_FILE can decrypt it" in refused.stderr
        assert "Traceback" not in refused.stderr
        outputs += [refused.stdout, refused.stderr]
        # Tampered: authentication fails mid-stream, inside the transaction.
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        path.with_name(name + ".sha256").unlink()
        tampered = backupctl(celery_env, "restore", name, "--yes", env=client_env)
        assert tampered.returncode == 12 and "fails age authentication" in tampered.stderr, tampered.stderr
        outputs += [tampered.stdout, tampered.stderr]
        assert_same(changed, snapshot(celery_env.db_url))
    finally:
        worker.stop()
    outputs.append(worker.output())
    outputs += redis_values(celery_env.redis())
    outputs += [p.read_text(errors="replace") for p in celery_env.backup_dir.iterdir() if p.suffix == ".json"]
    everything = "\n".join(outputs)
    assert "backup_tasks.restore" in everything and public in everything  # the search covered real material
    for value in (secret, secret.removeprefix("AGE-SECRET-KEY-1"), other_secret):
        assert value not in everything, "an age secret key leaked"
    assert secret.lower() not in everything.lower()


def test_a_queued_parallel_encrypted_backup_restores(celery_env, tmp_path):
    """--jobs 2 on workers: the parts (written by other worker processes) are sealed to the backup's own key pair,
    the coordinator assembles one age stream; the age CLI reads it and a restore brings the rows back."""
    secret, public = keygen(tmp_path / "key.txt")
    celery_env.env.update({"BACKUP_AGE_RECIPIENTS": public, "BACKUP_AGE_IDENTITY_FILE": str(tmp_path / "key.txt"),
                           "BACKUP_SPLIT_MIN_BYTES": str(1 << 20)})
    run_sql(celery_env.db_url, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                               "INSERT INTO t SELECT i, repeat(md5(i::text), 3) FROM generate_series(1, 60000) i;"
                               "ANALYZE;")
    before = snapshot(celery_env.db_url)
    worker = Worker(celery_env.env, tmp_path / "worker.log", concurrency=2).wait_ready()
    try:
        made = backupctl(celery_env, "create", "--jobs", "2", timeout=180)
        assert made.returncode == 0, made.stderr
        assert "Written in" in made.stdout, made.stdout
        name = re.search(r"(backup_\d{8}_\d{6}(?:_\d+)?\.backup\.gz\.age)", made.stdout).group(1)
        plain = subprocess.run(f"{AGE} -d -i {tmp_path / 'key.txt'} {celery_env.backup_dir / name} | gunzip",
                               shell=True, capture_output=True, check=True).stdout
        assert plain.startswith(b'{"metadata":') and plain.count(b"\n") > 60000
        run_sql(celery_env.db_url, "DELETE FROM t WHERE id % 7 = 0")
        restored = backupctl(celery_env, "restore", name, "--yes", timeout=180)
        assert restored.returncode == 0, restored.stderr
    finally:
        worker.stop()
    assert_same(before, snapshot(celery_env.db_url))
    assert secret not in worker.output()
