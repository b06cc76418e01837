"""One contract suite for every Storage: the local directory and S3 (over real HTTP to moto's server).

Each backend comes with raw access to what it stores (files / objects behind the storage's back) so the
tests can plant foreign objects and tamper with backups the way a user, a bug or bit rot would. Both
implementations must match the Protocol's signatures exactly, and every method is called here with every
parameter the Protocol declares (test_every_method_with_every_parameter keeps that true).
"""

from __future__ import annotations

import dataclasses
import gzip
import inspect
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_tasks.checksum import read_sidecar, sha256_file, sidecar_path, write_sidecar
from backup_tasks.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    StorageError,
    UsageError,
)
from backup_tasks.names import SIDECARS, make_name, sidecar_name
from backup_tasks.progress import Progress
from backup_tasks.retention import RetentionPolicy, apply_policy
from backup_tasks.settings import get_settings, reset_settings_cache
from backup_tasks.storage import BackupInfo, LocalStorage, Storage, s3_storage
from backup_tasks.storage import base as storage_base
from backup_tasks.storage.base import Verification, iter_chunks
from tests.adversarial.faulty_proxy import FaultyProxy

pytest_plugins = ["tests.s3_server"]

T0 = datetime(2025, 11, 1, 12, 0, 0, tzinfo=UTC)


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

    def raw_get(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def raw_delete(self, rel: str) -> None:
        (self.root / rel).unlink()

    def tamper(self, name: str) -> None:
        path = self.root / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    def truncate(self, name: str) -> None:
        path = self.root / name
        path.write_bytes(path.read_bytes()[:-10])

    def forget_checksum(self, name: str) -> None:
        (self.root / (name + ".sha256")).unlink()

    def broken(self, tmp_path: Path) -> LocalStorage:
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        return LocalStorage(blocker / "store")

    @contextmanager
    def sidecars_undeletable(self, name: str):
        """A crash between deleting the data and its sidecars, as near as a test gets: the sidecar delete fails."""
        blocker = self.root / (name + SIDECARS["drill"])
        blocker.unlink(missing_ok=True)
        blocker.mkdir()
        (blocker / "x").write_text("x")  # a non-empty directory: unlink() fails
        yield self.storage


class S3Backend:
    def __init__(self, storage, client):
        self.storage, self.client = storage, client
        self.bucket, self.prefix = storage.bucket, storage.prefix

    def raw_put(self, rel: str, data: bytes = b"foreign", **kwargs) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + rel, Body=data, **kwargs)

    def raw_keys(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {o["Key"].removeprefix(self.prefix) for page in pages for o in page.get("Contents", [])}

    def raw_get(self, rel: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"].read()

    def raw_delete(self, rel: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + rel)

    def _rewrite(self, name: str, edit) -> None:
        # Rewrite the bytes but keep the recorded metadata, as bit rot or a careless edit would.
        obj = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        self.raw_put(name, edit(bytearray(obj["Body"].read())), Metadata=obj["Metadata"])

    def tamper(self, name: str) -> None:
        def flip(data: bytearray) -> bytes:
            data[len(data) // 2] ^= 0xFF
            return bytes(data)

        self._rewrite(name, flip)

    def truncate(self, name: str) -> None:
        self._rewrite(name, lambda data: bytes(data[:-10]))

    def forget_checksum(self, name: str) -> None:
        self.raw_put(name, self.raw_get(name))  # no metadata

    def broken(self, tmp_path: Path):
        from backup_tasks.storage.s3 import S3Storage

        return S3Storage(get_settings().model_copy(update={"S3_BUCKET_NAME": "no-such-bucket-here"}))

    @contextmanager
    def sidecars_undeletable(self, name: str):
        """Deleting the sidecars refused, as if the process died right after deleting the data."""
        from backup_tasks.storage.s3 import S3Storage

        def refuse(method: str, path: str, n: int) -> bool:
            return method == "DELETE" and path.endswith(tuple(SIDECARS.values()))

        with FaultyProxy(get_settings().S3_ENDPOINT_URL, refuse, 403, "AccessDenied") as proxy:
            yield S3Storage(get_settings().model_copy(update={"S3_ENDPOINT_URL": proxy.url}), max_attempts=1)


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


PROTOCOL_METHODS = sorted(n for n, v in vars(Storage).items() if inspect.isfunction(v) and not n.startswith("_"))


@pytest.mark.parametrize("impl", ["local", "s3"])
def test_implementations_match_the_protocol_signatures(impl):
    """litestream's `var _ ReplicaClient = (*ReplicaClient)(nil)`: an implementation cannot drift from the
    Protocol, not even in a parameter's name, default or annotation."""
    from backup_tasks.storage.s3 import S3Storage

    cls = {"local": LocalStorage, "s3": S3Storage}[impl]
    assert PROTOCOL_METHODS == sorted(["location", "list", "put", "get", "open", "delete", "checksum", "exists",
                                       "verify", "put_sidecar", "get_sidecar"])
    for name in PROTOCOL_METHODS:
        assert inspect.signature(getattr(cls, name)) == inspect.signature(getattr(Storage, name)), name
    assert isinstance(cls.kind, str) and cls.kind == impl


def test_every_method_with_every_parameter(backend, src, tmp_path):
    """Each Protocol method called with every parameter it declares, by name: the table must name them all, so
    a parameter added to the Protocol fails here until the suite passes it."""
    f = make_backup(src, body=os.urandom(100_000))
    (src / sidecar_name(f.name, "manifest")).write_bytes(b'{"m": 1}')
    events: list[Progress] = []
    name = f.name
    calls = {  # in this order: put first, delete last
        "put": {"local_path": f, "progress": events.append, "migration_version": "0aa2828fc065"},
        "location": {},
        "list": {"details": True},
        "exists": {"name": name},
        "checksum": {"name": name},
        "verify": {"name": name},
        "open": {"name": name},
        "put_sidecar": {"name": name, "kind": "drill", "data": b'{"ok": true}'},
        "get_sidecar": {"name": name, "kind": "drill"},
        "get": {"name": name, "dest_dir": tmp_path / "dest", "progress": events.append},
        "delete": {"name": name},
    }
    for method in PROTOCOL_METHODS:
        declared = [p for p in inspect.signature(getattr(Storage, method)).parameters if p != "self"]
        assert sorted(calls.get(method, {"(missing)": None})) == sorted(declared), method
    r = {method: getattr(backend.storage, method)(**kwargs) for method, kwargs in calls.items()}

    assert (r["put"].name, r["put"].sha256, r["put"].migration_version) == (name, sha256_file(f), "0aa2828fc065")
    assert "manifest" in r["put"].sidecars and events[0].phase == "upload"
    assert r["location"] == (str(backend.root) if isinstance(backend, LocalBackend) else backend.storage.url())
    [listed] = r["list"]
    assert listed.sha256 == sha256_file(f) and "manifest" in listed.sidecars
    assert r["exists"] and r["checksum"] == sha256_file(f) and r["verify"].ok
    try:
        assert b"".join(iter_chunks(r["open"])) == f.read_bytes()
    finally:
        r["open"].close()
    assert r["put_sidecar"] is None and r["get_sidecar"] == b'{"ok": true}'
    assert r["get"].read_bytes() == f.read_bytes() and events[-1].phase == "download"
    assert (r["get"].parent / sidecar_name(name, "drill")).read_bytes() == b'{"ok": true}'
    assert r["delete"] is None and not backend.storage.exists(name) and backend.raw_keys() == set()


def test_put_then_list_newest_first(backend, src):
    times = [T0 - timedelta(days=2), T0, T0 - timedelta(hours=1)]
    files = [make_backup(src, t) for t in times] + [make_backup(src, T0, seq=1)]
    for f in files:
        info = backend.storage.put(f)
        expected = BackupInfo(f.name, f.stat().st_size, info.created_at, sha256_file(f), None, backend.storage.kind)
        assert info == dataclasses.replace(expected, sidecars=info.sidecars)

    listed = backend.storage.list()
    detailed = backend.storage.list(details=True)

    expected_names = [
        make_name(T0, 1),
        make_name(T0),
        make_name(T0 - timedelta(hours=1)),
        make_name(T0 - timedelta(days=2)),
    ]
    assert [b.name for b in listed] == [b.name for b in detailed] == expected_names
    for fast, b in zip(listed, detailed):
        f = src / b.name
        assert (b.size, b.sha256, b.location) == (f.stat().st_size, sha256_file(f), backend.storage.kind)
        assert (fast.size, fast.created_at, fast.location) == (b.size, b.created_at, b.location)
        assert fast.sha256 in (None, b.sha256)  # S3 reads the checksum only with details (a HEAD per backup)
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
        lambda: backend.storage.verify(name),
        lambda: backend.storage.put_sidecar(name, "drill", b"{}"),
    ):
        with pytest.raises(NotFoundError) as err:
            call()
        assert err.value.hint
    assert backend.storage.get_sidecar(name, "drill") is None
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())
    assert backend.raw_keys() == set()  # no sidecar for a backup that is not there


def test_delete_removes_backup_and_checksum(backend, src):
    keep, gone = make_backup(src, T0), make_backup(src, T0 - timedelta(days=1))
    backend.storage.put(keep)
    backend.storage.put(gone)
    backend.storage.put_sidecar(gone.name, "manifest", b"{}")
    backend.storage.put_sidecar(gone.name, "drill", b"{}")

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
        lambda: backend.storage.verify(name),
        lambda: backend.storage.put_sidecar(name, "drill", b"{}"),
        lambda: backend.storage.get_sidecar(name, "drill"),
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


def test_sidecars_travel_with_the_backup(backend, src, tmp_path):
    f = make_backup(src)
    (src / sidecar_name(f.name, "manifest")).write_bytes(b'{"manifest": 1}')
    (src / sidecar_name(f.name, "drill")).write_bytes(b'{"drill": 1}')
    other = make_backup(src, T0 - timedelta(hours=1))

    assert backend.storage.put(f).sidecars >= {"manifest", "drill"}
    backend.storage.put(other)

    keys = backend.raw_keys()
    assert {f.name, sidecar_name(f.name, "manifest"), sidecar_name(f.name, "drill")} <= keys
    # On S3 the checksum is object metadata, never a `.sha256` object; locally it is the sidecar file.
    assert (sidecar_name(f.name, "sha256") in keys) == isinstance(backend, LocalBackend)
    by_name = {b.name: b for b in backend.storage.list()}  # sidecars seen from the listing alone
    assert by_name[f.name].sidecars - {"sha256"} == {"manifest", "drill"}
    assert by_name[other.name].sidecars - {"sha256"} == set()
    assert backend.storage.get_sidecar(f.name, "manifest") == b'{"manifest": 1}'

    path = backend.storage.get(f.name, tmp_path / "dest")
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [f.name] + [sidecar_name(f.name, k) for k in ("sha256", "manifest", "drill")])
    assert (path.parent / sidecar_name(f.name, "drill")).read_bytes() == b'{"drill": 1}'

    backend.storage.delete(f.name)
    assert not any(k.startswith(f.name) for k in backend.raw_keys())


def test_put_sidecar_replaces_and_refuses_what_is_not_a_sidecar(backend, src, monkeypatch):
    f = make_backup(src)
    backend.storage.put(f)
    backend.storage.put_sidecar(f.name, "drill", b"first")
    backend.storage.put_sidecar(f.name, "drill", b"second")
    assert backend.storage.get_sidecar(f.name, "drill") == b"second"
    assert backend.storage.get_sidecar(f.name, "manifest") is None
    for kind in ("sha256", "notes", ""):  # the checksum is the storage's own; other kinds do not exist
        with pytest.raises(UsageError):
            backend.storage.put_sidecar(f.name, kind, b"x")
        with pytest.raises(UsageError):
            backend.storage.get_sidecar(f.name, kind)
    monkeypatch.setattr(storage_base, "SIDECAR_MAX_BYTES", 1000)
    with pytest.raises(UsageError):
        backend.storage.put_sidecar(f.name, "manifest", b"x" * 1001)
    assert backend.storage.get_sidecar(f.name, "manifest") is None and backend.storage.checksum(f.name)


def test_get_sidecar_reads_a_bounded_amount(backend, src, monkeypatch):
    f = make_backup(src)
    backend.storage.put(f)
    backend.raw_put(sidecar_name(f.name, "manifest"), b"x" * 5000)  # not one of ours: too large
    monkeypatch.setattr(storage_base, "SIDECAR_MAX_BYTES", 1000)
    with pytest.raises(StorageError) as err:
        backend.storage.get_sidecar(f.name, "manifest")
    assert "5000 bytes" in err.value.message and err.value.hint


def test_orphan_sidecars_never_make_a_backup_look_present(backend):
    name = make_name(T0)
    for kind in SIDECARS:
        backend.raw_put(sidecar_name(name, kind), b"{}")
    assert backend.storage.list() == [] and not backend.storage.exists(name)


def test_a_crash_between_the_deletes_leaves_no_listed_backup(backend, src):
    f = make_backup(src)
    (src / sidecar_name(f.name, "manifest")).write_bytes(b"{}")
    backend.storage.put(f)
    with backend.sidecars_undeletable(f.name) as storage, pytest.raises(StorageError):
        storage.delete(f.name)
    # The data went first: what is left are orphan sidecars, which no listing shows as a backup.
    keys = backend.raw_keys()
    assert f.name not in keys and any(k.startswith(f.name + ".") for k in keys)
    assert backend.storage.list() == [] and not backend.storage.exists(f.name)


def test_verify_checks_the_recorded_checksum(backend, src):
    good, short, unrecorded = (make_backup(src, T0 - timedelta(hours=h), body=os.urandom(5000)) for h in range(3))
    for f in (good, short, unrecorded):
        backend.storage.put(f)
    backend.truncate(short.name)
    backend.forget_checksum(unrecorded.name)

    assert backend.storage.verify(good.name).ok
    verdicts = {f.name: backend.storage.verify(f.name) for f in (short, unrecorded)}
    assert not any(v.ok for v in verdicts.values())
    assert "differs" in verdicts[short.name].detail  # local: the SHA-256; S3: the size recorded at upload
    assert "no SHA-256 recorded" in verdicts[unrecorded.name].detail
    assert all(isinstance(v, Verification) for v in verdicts.values())


# --- local specifics ------------------------------------------------------------------------------------------


def test_local_put_of_a_file_already_in_place_records_its_checksum(tmp_path):
    storage = LocalStorage(tmp_path)
    f = make_backup(tmp_path)
    info = storage.put(f)
    assert info.sha256 == read_sidecar(f) == sha256_file(f)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name, sidecar_path(f).name]


def test_local_verify_hashes_the_file(tmp_path):
    storage = LocalStorage(tmp_path)
    f = make_backup(tmp_path, body=os.urandom(5000))
    storage.put(f)
    LocalBackend(tmp_path).tamper(f.name)  # same size, one byte flipped: only a hash sees it
    assert not storage.verify(f.name).ok


def test_local_list_of_a_missing_dir_is_empty(tmp_path):
    assert LocalStorage(tmp_path / "nope").list() == []


def test_local_list_reads_only_names_sizes_and_checksums(tmp_path):
    (tmp_path / make_name(T0)).write_bytes(b"not gzip at all")
    [info] = LocalStorage(tmp_path).list()
    assert (info.size, info.sha256, info.migration_version, info.unreadable) == (15, None, None, None)


# --- S3 specifics ---------------------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_records_sha256_size_and_migration_version_as_metadata(s3_bucket, s3_client, src):
    storage = s3_storage()
    f = make_backup(src)
    storage.put(f, migration_version="0aa2828fc065")
    head = s3_client.head_object(Bucket=s3_bucket, Key="backups/" + f.name)
    size = str(f.stat().st_size)
    assert head["Metadata"] == {"sha256": sha256_file(f), "size": size, "migration-version": "0aa2828fc065"}
    assert storage.list(details=True)[0].migration_version == "0aa2828fc065"
    assert storage.list()[0].migration_version is None  # the listing alone has no metadata


@pytest.mark.s3
def test_s3_verify_trusts_a_recorded_checksum_without_a_recorded_size(s3_bucket, s3_client, src):
    # Objects uploaded before the size was recorded still verify by their checksum alone.
    f = make_backup(src)
    s3_client.put_object(Bucket=s3_bucket, Key="backups/" + f.name, Body=f.read_bytes(),
                         Metadata={"sha256": sha256_file(f)})
    assert s3_storage().verify(f.name) == Verification(True, "SHA-256 recorded (no size recorded)")


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
