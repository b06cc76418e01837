"""S3 faults, through `backupctl upload/download --local` against the moto server behind a fault-injecting proxy
(tests/adversarial/faulty_proxy.py): a few 503/500 answers are retried and the transfer succeeds; an endpoint
that keeps failing, or is down (a closed port), ends in a clear `Error:` after a bounded number of attempts,
the local backup stays as it was and no partial download is left in BACKUP_DIR.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from backup_tasks.checksum import sidecar_path, write_sidecar

from .faulty_proxy import FaultyProxy
from .support import assert_clean_error, assert_ok, cli, cli_env, cli_start

pytest_plugins = ["tests.s3_server"]
pytestmark = [pytest.mark.adversarial, pytest.mark.s3]

NAME = "backup_20250102_030405.backup.gz"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
       "AWS_CONFIG_FILE": "/nonexistent/aws-config", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}


def make_backup(directory: Path) -> tuple[Path, str]:
    """A backup-named gzip document (~200 KB of incompressible rows) with its sidecar; returns (path, sha256)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(5)
    rows = [[i, rng.randbytes(60).hex()] for i in range(1500)]
    doc = {"metadata": {"timestamp": "2025-01-02T03:04:05.000Z", "migration_version": "abc123",
                        "database_name": "app", "database_host": "db"},
           "tables": {"t": {"columns": ["id", "v"], "data": rows, "row_count": len(rows)}}}
    path = directory / NAME
    path.write_bytes(gzip.compress(json.dumps(doc).encode(), mtime=0))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    write_sidecar(path, digest)
    return path, digest


def env_for(backup_dir: Path, bucket: str, endpoint: str) -> dict[str, str]:
    return cli_env(BACKUP_DIR=str(backup_dir), S3_BUCKET_NAME=bucket, S3_ENDPOINT_URL=endpoint, **AWS)


def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"adv-{random.randrange(1 << 40):x}"
    s3_client.create_bucket(Bucket=name)
    return name


def put_directly(s3_client, bucket: str, path: Path, digest: str) -> None:
    s3_client.put_object(Bucket=bucket, Key=f"backups/{path.name}", Body=path.read_bytes(),
                         Metadata={"sha256": digest})


def test_upload_retries_transient_503s_then_succeeds(s3_endpoint, s3_client, bucket, tmp_path):
    path, digest = make_backup(tmp_path / "backups")
    with FaultyProxy(s3_endpoint, lambda method, p, n: method == "PUT" and n < 2, 503, "SlowDown") as proxy:
        proc = cli("upload", NAME, "--local", env=env_for(path.parent, bucket, proxy.url))
    assert_ok(proc)
    assert proxy.count("PUT", failed=True) == 2 and proxy.count("PUT", failed=False) >= 1
    head = s3_client.head_object(Bucket=bucket, Key=f"backups/{NAME}")
    assert head["Metadata"]["sha256"] == digest
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_download_retries_transient_500s_then_succeeds(s3_endpoint, s3_client, bucket, tmp_path):
    source, digest = make_backup(tmp_path / "source")
    put_directly(s3_client, bucket, source, digest)
    backups = tmp_path / "backups"
    backups.mkdir()
    with FaultyProxy(s3_endpoint, lambda method, p, n: method == "GET" and "list-type" not in p and n < 2,
                     status=500, code="InternalError") as proxy:
        proc = cli("download", NAME, "--local", env=env_for(backups, bucket, proxy.url))
    assert_ok(proc)
    assert "checksum verified" in proc.stdout
    assert proxy.count("GET", failed=True) == 2
    assert hashlib.sha256((backups / NAME).read_bytes()).hexdigest() == digest


def test_s3_failing_for_good_or_down_ends_in_a_clear_error_and_keeps_the_local_backup(s3_endpoint, s3_client,
                                                                                      bucket, tmp_path):
    """Four transfers side by side (each spends its retries' backoff asleep): upload and download through a
    proxy that answers 503 to every PUT / GET, and upload and download against a closed port."""
    source, digest = make_backup(tmp_path / "source")
    put_directly(s3_client, bucket, source, digest)
    down = closed_port()
    with FaultyProxy(s3_endpoint, lambda method, p, n: method in ("PUT", "GET"), status=503) as proxy:
        runs = {}
        for label, command, endpoint in (("upload-503", "upload", proxy.url), ("download-503", "download", proxy.url),
                                         ("upload-down", "upload", down), ("download-down", "download", down)):
            backups = tmp_path / label
            local = make_backup(backups)[0] if command == "upload" else None
            if local is None:
                backups.mkdir()
            started = time.monotonic()
            runs[label] = (cli_start(command, NAME, "--local", env=env_for(backups, bucket, endpoint)),
                           started, backups)
        results = {}

        def collect(label: str) -> None:
            proc, started, backups = runs[label]
            out, err = proc.communicate(timeout=120)
            results[label] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                              time.monotonic() - started, backups)

        waiters = [threading.Thread(target=collect, args=(label,)) for label in runs]
        for w in waiters:
            w.start()
        for w in waiters:
            w.join()
        puts, gets = proxy.count("PUT"), proxy.count("GET")

    for label, (proc, elapsed, backups) in results.items():
        line = assert_clean_error(proc, 7)
        assert line.startswith("Error: S3 "), line
        assert "retried" in proc.stderr.splitlines()[1], proc.stderr  # the hint says it was retried
        assert elapsed < 90, f"{label} took {elapsed:.0f} s"
        if label.startswith("upload"):  # the local backup stays, byte for byte, with its sidecar
            local = backups / NAME
            assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
            assert sidecar_path(local).read_text().split()[0] == digest
        else:  # nothing half-downloaded is left behind
            assert sorted(p.name for p in backups.iterdir()) == []
    # Retried (more than one attempt), and boundedly so.
    assert 2 <= puts <= 10, puts
    assert 2 <= gets <= 10, gets
    assert "reach" in results["upload-down"][0].stderr and "127.0.0.1" in results["upload-down"][0].stderr
    # The object on S3 is the one put there before: a failed upload never replaced it.
    assert s3_client.head_object(Bucket=bucket, Key=f"backups/{NAME}")["Metadata"]["sha256"] == digest
