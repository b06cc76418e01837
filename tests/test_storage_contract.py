"""One contract suite for every Storage: the local directory and S3 (over real HTTP to moto's server).

Each backend comes with raw access to what it stores (files / objects behind the storage's back) so the
tests can plant foreign objects and tamper with backups the way a user, a bug or bit rot would.
"""

from __future__ import annotations

import gzip
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from backup_tasks.checksum import read_sidecar, sha256_file, sidecar_path, write_sidecar
from backup_tasks.errors import ConfigError, IntegrityError, NotFoundError, StorageError, UsageError
from backup_tasks.names import make_name
from backup_tasks.progress import Progress
from backup_tasks.retention import RetentionPolicy, apply_policy
from backup_tasks.settings import get_settings, reset_settings_cache
from backup_tasks.storage import BackupInfo, LocalStorage, Storage, s3_storage
from backup_tasks.storage import local as local_module
from backup_tasks.storage.base import iter_chunks

pytest_plugins = ["tests.s3_server"]

T0 = datetime(2025, 11, 1, 12, 0, 0, tzinfo=timezone.utc)


def make_backup(directory: Path, when: datetime = T0, seq: int = 0, body: bytes | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / make_name(when, seq)
    path.write_bytes(gzip.compress(body or f'{{"metadata": {{"timestamp": "{when.isoformat()}"}}}}\n'.encode()))
    return path


class LocalBackend:
    def __init__(self, root: Path):
        self.root = root
        self.storage = LocalStorage(root)

    def raw_put(self, rel: str, data: bytes = b"foreign") -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def raw_keys(self) -> set[str]:
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}

    def tamper(self, name: str) -> None:
        path = self.root / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def broken(self, tmp_path: Path) -> LocalStorage:
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        return LocalStorage(blocker / "store")


class S3Backend:
    def __init__(self, storage, client):
        self.storage, self.client = storage, client
        self.bucket, self.prefix = storage.bucket, storage.prefix

    def raw_put(self, rel: str, data: bytes = b"foreign", **kwargs) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + rel, Body=data, **kwargs)

    def raw_keys(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"].removeprefix(self.prefix) for page in pages for o in page.get("Contents", [])}

    def tamper(self, name: str) -> None:
        # Rewrite the bytes but keep the recorded sha256, as bit rot or a careless edit would.
        obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        data = bytearray(obj["Body"].read())
        data[len(data) // 2] ^= 0xFF
        self.raw_put(name, bytes(data), Metadata=obj["Metadata"])

    def broken(self, tmp_path: Path):
        from backup_tasks.storage.s3 import S3Storage

        return S3Storage(get_settings().model_copy(update={"S3_BUCKET_NAME": "no-such-bucket-here"}))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def backend(request, tmp_path):
    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    request.getfixturevalue("s3_bucket")
    return S3Backend(s3_storage(), request.getfixturevalue("s3_client"))


@pytest.fixture
def src(tmp_path) -> Path:
    return tmp_path / "src"


# --- the contract ---------------------------------------------------------------------------------------------


def test_implements_protocol(backend):
    assert isinstance(backend.storage, Storage)


def test_put_then_list_newest_first(backend, src):
    times = [T0 - timedelta(days=2), T0, T0 - timedelta(hours=1)]
    files = [make_backup(src, t) for t in times] + [make_backup(src, T0, seq=1)]
    for f in files:
        info = backend.storage.put(f)
        assert info == BackupInfo(f.name, f.stat().st_size, info.created_at, sha256_file(f), None, backend.storage.kind)

    listed = backend.storage.list()

    assert [b.name for b in listed] == [
        make_name(T0, 1),
        make_name(T0),
        make_name(T0 - timedelta(hours=1)),
        make_name(T0 - timedelta(days=2)),
    ]
    for b in listed:
        f = src / b.name
        assert (b.size, b.sha256, b.location) == (f.stat().st_size, sha256_file(f), backend.storage.kind)
    assert listed[1].created_at == T0


def test_checksum_is_recorded_at_put(backend, src):
    f = make_backup(src)
    backend.storage.put(f)
    assert backend.storage.checksum(f.name) == sha256_file(f)
    assert backend.storage.exists(f.name)


def test_open_streams_the_stored_bytes(backend, src):
    f = make_backup(src, body=os.urandom(300_000))
    backend.storage.put(f)
    stream = backend.storage.open(f.name)
    try:
        assert b"".join(iter_chunks(stream, 64 * 1024)) == f.read_bytes()
    finally:
        stream.close()


def test_get_copies_verifies_and_keeps_the_checksum(backend, src, tmp_path):
    f = make_backup(src)
    backend.storage.put(f)
    dest_dir = tmp_path / "restore"

    path = backend.storage.get(f.name, dest_dir)

    assert path == dest_dir / f.name
    assert path.read_bytes() == f.read_bytes()
    assert read_sidecar(path) == sha256_file(f)
    assert sorted(p.name for p in dest_dir.iterdir()) == [f.name, sidecar_path(path).name]  # no temp files left


def test_missing_backup_is_not_found(backend, tmp_path):
    name = make_name(T0)
    assert not backend.storage.exists(name)
    for call in (
        lambda: backend.storage.get(name, tmp_path / "dest"),
        lambda: backend.storage.open(name),
        lambda: backend.storage.checksum(name),
    ):
        with pytest.raises(NotFoundError) as err:
            call()
        assert err.value.hint
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_delete_removes_backup_and_checksum(backend, src):
    keep, gone = make_backup(src, T0), make_backup(src, T0 - timedelta(days=1))
    backend.storage.put(keep)
    backend.storage.put(gone)

    backend.storage.delete(gone.name)
    backend.storage.delete(gone.name)  # idempotent

    assert not backend.storage.exists(gone.name)
    assert [b.name for b in backend.storage.list()] == [keep.name]
    assert not any(k.startswith(gone.name) for k in backend.raw_keys())  # sidecar went too


FOREIGN = [
    "notes.txt",
    f"{make_name(T0)}.bak",
    f"sub/{make_name(T0 - timedelta(days=30))}",
    f"x{make_name(T0 - timedelta(days=30))}",
    "backup_20251301_000000.backup.gz",  # month 13: the pattern matches, the date does not
    "backup_latest.backup.gz",
    f"{make_name(T0 - timedelta(days=40))}.sha256",  # an orphan sidecar
]


def test_foreign_objects_are_ignored_and_survive_cleanup(backend, src):
    for rel in FOREIGN:
        backend.raw_put(rel)
    old = make_backup(src, T0 - timedelta(days=30))
    new = make_backup(src, T0)
    backend.storage.put(old)
    backend.storage.put(new)

    assert [b.name for b in backend.storage.list()] == [new.name, old.name]

    decision = apply_policy(backend.storage.list(), RetentionPolicy(days=7, min_count=1), now=T0)
    for b in decision.delete:
        backend.storage.delete(b.name)

    assert [b.name for b in decision.delete] == [old.name]
    assert set(FOREIGN) <= backend.raw_keys()
    assert [b.name for b in backend.storage.list()] == [new.name]


def test_tampered_backup_is_refused_by_get(backend, src, tmp_path):
    f = make_backup(src, body=os.urandom(10_000))
    backend.storage.put(f)
    backend.tamper(f.name)
    dest = tmp_path / "dest"

    with pytest.raises(IntegrityError):
        backend.storage.get(f.name, dest)

    assert list(dest.iterdir()) == []  # the temp copy was removed


UNSAFE = [
    f"../{make_name(T0)}",
    f"sub/{make_name(T0)}",
    f"/tmp/{make_name(T0)}",
    f"{make_name(T0)}/../../etc/passwd",
    "..",
    "",
    "/etc/passwd",
    f"{make_name(T0)}\x00",
    f"{make_name(T0)}\n",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused(backend, name, tmp_path):
    for call in (
        lambda: backend.storage.get(name, tmp_path / "dest"),
        lambda: backend.storage.open(name),
        lambda: backend.storage.delete(name),
        lambda: backend.storage.checksum(name),
        lambda: backend.storage.exists(name),
    ):
        with pytest.raises(UsageError):
            call()
    assert not (tmp_path / "dest").exists()


def test_put_refuses_a_file_without_a_backup_name(backend, tmp_path):
    f = tmp_path / "mydump.gz"
    f.write_bytes(gzip.compress(b"{}"))
    with pytest.raises(UsageError):
        backend.storage.put(f)
    assert backend.raw_keys() == set()


def test_put_refuses_a_file_that_differs_from_its_sidecar(backend, src):
    f = make_backup(src)
    write_sidecar(f, "0" * 64)
    with pytest.raises(IntegrityError):
        backend.storage.put(f)
    assert not backend.storage.exists(f.name)


def test_failed_put_leaves_the_local_file(backend, src, tmp_path):
    f = make_backup(src)
    before = f.read_bytes()
    with pytest.raises(StorageError) as err:
        backend.broken(tmp_path).put(f)
    assert err.value.message
    assert f.read_bytes() == before


def test_put_reports_progress(backend, src):
    f = make_backup(src, body=os.urandom(200_000))
    events: list[Progress] = []
    backend.storage.put(f, progress=events.append)
    assert events and events[-1].bytes_done == events[-1].bytes_total == f.stat().st_size


@pytest.mark.slow
def test_list_pages_past_1000_backups(backend):
    names = [make_name(T0 - timedelta(minutes=i)) for i in range(1005)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: backend.raw_put(n, b"x"), names))
    listed = backend.storage.list()
    assert [b.name for b in listed] == names  # newest first, all of them


# --- local specifics ------------------------------------------------------------------------------------------


def test_local_put_of_a_file_already_in_place_records_its_checksum(tmp_path):
    storage = LocalStorage(tmp_path)
    f = make_backup(tmp_path)
    info = storage.put(f)
    assert info.sha256 == read_sidecar(f) == sha256_file(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name, sidecar_path(f).name]


def test_local_list_reads_migration_version_from_the_header(tmp_path, monkeypatch):
    make_backup(tmp_path)
    monkeypatch.setattr(local_module, "header_migration_version", lambda path: "0aa2828fc065")
    assert LocalStorage(tmp_path).list()[0].migration_version == "0aa2828fc065"


def test_local_list_survives_unreadable_headers(tmp_path):
    (tmp_path / make_name(T0)).write_bytes(b"not gzip at all")
    [info] = LocalStorage(tmp_path).list()
    assert info.migration_version is None and info.sha256 is None


def test_local_list_of_a_missing_dir_is_empty(tmp_path):
    assert LocalStorage(tmp_path / "nope").list() == []


# --- S3 specifics ---------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_records_sha256_and_migration_version_as_metadata(s3_bucket, s3_client, src, monkeypatch):
    monkeypatch.setattr(local_module, "header_migration_version", lambda path: "0aa2828fc065")
    storage = s3_storage()
    f = make_backup(src)
    storage.put(f)
    head = s3_client.head_object(Bucket=s3_bucket, Key="backups/" + f.name)
    assert head["Metadata"] == {"sha256": sha256_file(f), "migration-version": "0aa2828fc065"}
    assert storage.list()[0].migration_version == "0aa2828fc065"


@pytest.mark.s3
def test_s3_multipart_round_trip(s3_bucket, s3_client, src, tmp_path):
    from backup_tasks.storage.s3 import S3Storage

    mb = 1024 * 1024
    storage = S3Storage(get_settings(), multipart_threshold=5 * mb, multipart_chunksize=5 * mb)
    f = make_backup(src)
    f.write_bytes(os.urandom(11 * mb))
    storage.put(f)
    head = s3_client.head_object(Bucket=s3_bucket, Key=storage.prefix + f.name)
    assert "-" in head["ETag"]  # a multipart ETag, which is why the sha256 travels as metadata
    assert storage.get(f.name, tmp_path / "dest").read_bytes() == f.read_bytes()


@pytest.mark.s3
def test_s3_encryption_and_storage_class_settings(s3_bucket, s3_client, src, monkeypatch):
    monkeypatch.setenv("S3_SSE", "AES256")
    monkeypatch.setenv("S3_STORAGE_CLASS", "STANDARD_IA")
    reset_settings_cache()
    f = make_backup(src)
    s3_storage().put(f)
    head = s3_client.head_object(Bucket=s3_bucket, Key="backups/" + f.name)
    assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")


@pytest.mark.s3
def test_s3_kms_key_without_kms_mode_is_a_config_error(s3_bucket, monkeypatch):
    monkeypatch.setenv("S3_SSE_KMS_KEY_ID", "alias/backups")
    reset_settings_cache()
    with pytest.raises(ConfigError):
        s3_storage()


@pytest.mark.s3
def test_s3_prefix_is_a_folder_and_nothing_outside_it_is_touched(s3_bucket, s3_client, src, monkeypatch):
    monkeypatch.setenv("S3_PREFIX", "team/db")
    reset_settings_cache()
    outside = make_name(T0 - timedelta(days=60))
    for key in (outside, f"other/{outside}", f"team/dbx/{outside}", f"team/{outside}"):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    storage = s3_storage()
    f = make_backup(src)
    storage.put(f)

    assert [b.name for b in storage.list()] == [f.name]
    assert storage.exists(f.name) and not storage.exists(outside)
    s3_client.head_object(Bucket=s3_bucket, Key=f"team/db/{f.name}")


def test_s3_storage_needs_a_bucket(backup_dir_env):
    with pytest.raises(ConfigError) as err:
        s3_storage()
    assert "S3_BUCKET_NAME" in err.value.message


@pytest.mark.s3
def test_s3_missing_bucket_is_a_storage_error_with_a_hint(s3_bucket, monkeypatch):
    monkeypatch.setenv("S3_BUCKET_NAME", "no-such-bucket-here")
    reset_settings_cache()
    storage = s3_storage()
    for call in (storage.list, lambda: storage.get(make_name(T0), Path("."))):
        with pytest.raises(StorageError) as err:
            call()
        assert "no-such-bucket-here" in err.value.message and "S3_BUCKET_NAME" in err.value.hint
        assert "testing" not in str(err.value)


@pytest.mark.s3
def test_s3_unreachable_endpoint(s3_bucket, monkeypatch):
    import socket

    from backup_tasks.storage.s3 import S3Storage

    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = get_settings().model_copy(update={"S3_ENDPOINT_URL": f"http://user:pw@127.0.0.1:{port}"})
    with pytest.raises(StorageError) as err:
        S3Storage(settings, max_attempts=1).list()
    assert "cannot reach" in err.value.message and "pw" not in err.value.message
    assert "S3_ENDPOINT_URL" in err.value.hint


@pytest.mark.s3
def test_s3_without_credentials(s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError) as err:
        s3_storage().list()
    assert "credentials" in err.value.message and "AWS_ACCESS_KEY_ID" in err.value.hint
