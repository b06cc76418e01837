"""The storage commands, run in-process with --local against a real BACKUP_DIR and the moto S3 endpoint.

The backup files are small gzip files with valid names: these tests are about moving and keeping files,
not about their contents (the restore-s3 round trip through PostgreSQL belongs to the core tests).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from backup_tasks.checksum import read_sidecar, sha256_file, sidecar_path, write_sidecar
from backup_tasks.cli import _register, cli
from backup_tasks.errors import AbortedError, ConfigError, IntegrityError, NotFoundError, StorageError, UsageError
from backup_tasks.names import make_name
from backup_tasks.settings import reset_settings_cache

pytest_plugins = ["tests.s3_server"]

_register()

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(error: type[Exception], *args: str):
    result = invoke(*args)
    assert isinstance(result.exception, error), (result.output, result.exception)
    return result.exception


VERSION = "0aa2828fc065"


def fake_backup(directory: Path, when: datetime, sidecar: bool = True) -> Path:
    """A seed-format document with no tables: enough for the header (migration version) to be read."""
    meta = {"timestamp": when.isoformat(), "migration_version": VERSION, "database_name": "app", "database_host": "db"}
    path = directory / make_name(when)
    path.write_bytes(gzip.compress(json.dumps({"metadata": meta, "tables": {}}).encode()))
    if sidecar:
        write_sidecar(path, sha256_file(path))
    return path


def test_list_empty(backup_dir_env):
    assert f"No backups in {backup_dir_env}" in ok("list", "--local")


def test_list_shows_backups_newest_first(backup_dir_env):
    files = [fake_backup(backup_dir_env, NOW - timedelta(days=d)) for d in (3, 0, 1)]
    (backup_dir_env / "notes.txt").write_text("not a backup")

    out = ok("list", "--local")

    assert "3 backups" in out and "notes.txt" not in out
    rows = [line.split()[0] for line in out.splitlines()[2:]]
    assert rows == [files[1].name, files[2].name, files[0].name]
    assert (NOW - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S") in out
    assert [line.split()[-1] for line in out.splitlines()[2:]] == [VERSION] * 3  # read from each file's header


@pytest.mark.s3
def test_upload_by_name_and_by_path_then_list_s3(s3_bucket, s3_client, backup_dir_env, tmp_path):
    in_dir = fake_backup(backup_dir_env, NOW - timedelta(hours=2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = fake_backup(elsewhere, NOW - timedelta(hours=1))

    assert f"s3://{s3_bucket}/backups/{in_dir.name}" in ok("upload", in_dir.name, "--local")
    assert f"Uploaded {outside}" in ok("upload", str(outside), "--local")

    out = ok("list-s3", "--local")
    assert f"2 backups in s3://{s3_bucket}/backups/" in out
    assert out.index(outside.name) < out.index(in_dir.name)
    assert out.count(VERSION) == 2  # recorded as object metadata at upload
    assert in_dir.exists() and outside.exists()  # upload never moves the local file


@pytest.mark.s3
def test_upload_refuses_a_file_without_a_backup_name(s3_bucket, s3_client, tmp_path):
    f = tmp_path / "dump.gz"
    f.write_bytes(gzip.compress(b"{}"))
    fails(UsageError, "upload", str(f), "--local")
    fails(NotFoundError, "upload", make_name(NOW), "--local")
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket)


@pytest.mark.s3
def test_failed_upload_leaves_the_local_file(s3_bucket, backup_dir_env, monkeypatch):
    f = fake_backup(backup_dir_env, NOW)
    before = f.read_bytes()
    monkeypatch.setenv("S3_BUCKET_NAME", "no-such-bucket-here")
    reset_settings_cache()

    err = fails(StorageError, "upload", f.name, "--local")

    assert "no-such-bucket-here" in err.message
    assert f.read_bytes() == before and read_sidecar(f) == sha256_file(f)


@pytest.mark.s3
def test_download_restores_file_and_checksum(s3_bucket, backup_dir_env):
    f = fake_backup(backup_dir_env, NOW)
    digest = sha256_file(f)
    ok("upload", f.name, "--local")
    f.unlink()
    sidecar_path(f).unlink()

    out = ok("download", f.name, "--local")

    assert "checksum verified" in out
    assert sha256_file(f) == read_sidecar(f) == digest
    assert sorted(p.name for p in backup_dir_env.iterdir()) == [f.name, sidecar_path(f).name]


@pytest.mark.s3
@pytest.mark.parametrize("name", ["../backup_20251101_120000.backup.gz", "/etc/passwd", "backups/x.backup.gz"])
def test_download_refuses_unsafe_names(s3_bucket, backup_dir_env, name):
    fails(UsageError, "download", name, "--local")
    assert list(backup_dir_env.iterdir()) == []
    assert list(backup_dir_env.parent.glob("*.backup.gz")) == []


@pytest.mark.s3
def test_download_refuses_a_tampered_object(s3_bucket, s3_client, backup_dir_env):
    f = fake_backup(backup_dir_env, NOW)
    ok("upload", f.name, "--local")
    f.unlink()
    sidecar_path(f).unlink()
    key = f"backups/{f.name}"
    meta = s3_client.head_object(Bucket=s3_bucket, Key=key)["Metadata"]
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"tampered", Metadata=meta)

    fails(IntegrityError, "download", f.name, "--local")

    assert list(backup_dir_env.iterdir()) == []


def test_cleanup_dry_run_explains_and_deletes_nothing(backup_dir_env):
    old = fake_backup(backup_dir_env, NOW - timedelta(days=30))
    new = fake_backup(backup_dir_env, NOW - timedelta(days=20))
    (backup_dir_env / "notes.txt").write_text("keep me")
    before = sorted(p.name for p in backup_dir_env.iterdir())

    out = ok("cleanup", "--dry-run", "--local")

    assert f"would delete: {old.name}: older than 7 days (30 days old)" in out
    assert f"keep: {new.name}: newest backup" in out
    assert "s3: skipped (S3_BUCKET_NAME is not set)" in out
    assert "Dry run: nothing was deleted." in out
    assert sorted(p.name for p in backup_dir_env.iterdir()) == before


@pytest.mark.s3
def test_cleanup_applies_retention_to_local_and_s3(s3_bucket, s3_client, backup_dir_env):
    old, mid, new = (fake_backup(backup_dir_env, NOW - timedelta(days=d)) for d in (30, 10, 1))
    for f in (old, mid, new):
        ok("upload", f.name, "--local")
    s3_client.put_object(Bucket=s3_bucket, Key="backups/readme.txt", Body=b"foreign")
    (backup_dir_env / "notes.txt").write_text("foreign")

    out = ok("cleanup", "--local")

    assert out.count(f"deleted: {old.name}") == 2 and out.count(f"deleted: {mid.name}") == 2
    assert sorted(p.name for p in backup_dir_env.iterdir()) == sorted([new.name, sidecar_path(new).name, "notes.txt"])
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"backups/{new.name}", "backups/readme.txt"}


def test_cleanup_of_s3_without_a_bucket_is_a_config_error(backup_dir_env):
    err = fails(ConfigError, "cleanup", "--target", "s3", "--local")
    assert "S3_BUCKET_NAME" in err.message


def test_list_s3_without_a_bucket_is_a_config_error(backup_dir_env):
    fails(ConfigError, "list-s3", "--local")


def test_restore_s3_without_a_terminal_needs_yes(backup_dir_env):
    err = fails(AbortedError, "restore-s3", make_name(NOW), "--local")
    assert "--yes" in err.hint
    assert list(backup_dir_env.parent.glob(".backup-s3-*")) == []


def test_restore_s3_refuses_unsafe_names_before_asking(backup_dir_env):
    fails(UsageError, "restore-s3", "../backup_20251101_120000.backup.gz", "--yes", "--local")


@pytest.mark.s3
def test_restore_s3_refuses_a_tampered_object_before_touching_the_database(s3_bucket, s3_client, backup_dir_env):
    f = fake_backup(backup_dir_env, NOW)
    ok("upload", f.name, "--local")
    key = f"backups/{f.name}"
    meta = s3_client.head_object(Bucket=s3_bucket, Key=key)["Metadata"]
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"tampered", Metadata=meta)

    # The download fails its checksum, so restore_file is never reached: no database is needed here.
    fails(IntegrityError, "restore-s3", f.name, "--yes", "--database-url", "postgresql://nowhere/none", "--local")

    assert list(backup_dir_env.parent.glob(".backup-s3-*")) == []


@pytest.mark.s3
def test_s3_temp_download_is_removed_whatever_happens(s3_bucket, backup_dir_env):
    from backup_tasks.jobs.storage import _downloaded
    from backup_tasks.progress import no_progress

    f = fake_backup(backup_dir_env, NOW)
    ok("upload", f.name, "--local")

    with pytest.raises(RuntimeError):
        with _downloaded(f.name, no_progress) as (path, source):
            assert path.read_bytes() == f.read_bytes() and source["sha256"] == sha256_file(f)
            assert path.parent.parent == backup_dir_env  # in BACKUP_DIR: nothing is written outside it (issue 7)
            raise RuntimeError("restore failed")

    assert not path.exists() and not path.parent.exists()
