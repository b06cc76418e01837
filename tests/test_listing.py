"""Listings read a bounded head of each backup (archive/header.py) and never more (issue 13 item 9): any file with a
backup's name is listed, with its migration version or the reason it could not be read."""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import zlib

import pytest

from backup_tasks.archive.header import (
    COMPRESSED_BYTES,
    HEAD_BYTES,
    InflatedHead,
    read_migration_version,
)
from backup_tasks.errors import InvalidBackupError
from backup_tasks.jobs.listing import with_migration_versions
from backup_tasks.names import make_name
from backup_tasks.storage import LocalStorage
from tests.test_storage_contract import T0


class Counting(io.BytesIO):
    """The file's bytes, counting how many were read."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.taken = 0

    def read(self, n: int = -1) -> bytes:
        chunk = super().read(n)
        self.taken += len(chunk)
        return chunk


def version(data: bytes) -> tuple[str | None, int]:
    stream = Counting(data)
    return read_migration_version(stream), stream.taken


def reason(data: bytes) -> str:
    with pytest.raises(InvalidBackupError) as err:
        read_migration_version(Counting(data))
    return err.value.message


def test_own_and_seed_layouts():
    own = gzip.compress(b'{"metadata":{"timestamp":"2025-11-01T12:00:00Z","migration_version":"0aa2","contents":[]},'
                        b'"tables":{\n')
    seed = gzip.compress(json.dumps({"metadata": {"timestamp": "x", "migration_version": None}, "tables": {}}).encode())
    without = gzip.compress(json.dumps({"metadata": {"timestamp": "x"}, "tables": {}}).encode())
    assert version(own)[0] == "0aa2" and version(seed)[0] is None and version(without)[0] is None


def test_several_gzip_members_are_one_document():
    # As a parallel backup writes: head, parts and tail as members of their own; here the head is split too.
    members = [b'{"metadata":{"timest', b'amp":"x","migration_version":"v2"},"tables":{\n', b"}}\n"]
    assert version(b"".join(gzip.compress(m) for m in members))[0] == "v2"
    assert "not valid JSON" in reason(b"".join(gzip.compress(m) for m in members[:1]))  # complete, cut short
    assert "truncated" in reason(gzip.compress(members[0]) + gzip.compress(members[1])[:14])


def test_a_large_foreign_document_is_read_only_up_to_the_bound():
    rows = os.urandom(3 << 20).hex()  # ~6 MB of text, ~3.4 MB compressed, metadata at the very end
    doc = gzip.compress(json.dumps({"tables": {"t": rows}, "metadata": {"migration_version": "x"}}).encode(), 1)
    late = gzip.compress(json.dumps({"metadata": {"pad": rows, "migration_version": "x"}}).encode(), 1)
    assert len(doc) > 2 * COMPRESSED_BYTES
    assert "does not start with a metadata object" in reason(doc)
    assert "no migration version within its first 64 KB" in reason(late)
    for data in (doc, late):
        stream = Counting(data)
        with pytest.raises(InvalidBackupError):
            read_migration_version(stream)
        assert stream.taken <= HEAD_BYTES + (64 << 10)  # incompressible: about HEAD_BYTES of the file


def test_a_gzip_header_that_never_ends_is_read_only_up_to_the_bound():
    # FNAME set, then 8 MB of name without its terminating NUL: no data ever comes out.
    endless = b"\x1f\x8b\x08\x08" + struct.pack("<I", 0) + b"\x00\x03" + b"a" * (8 << 20)
    stream = Counting(endless)
    with pytest.raises(InvalidBackupError, match="no migration version"):
        read_migration_version(stream)
    assert stream.taken == COMPRESSED_BYTES


def test_a_decompression_bomb_is_read_only_up_to_the_bound():
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(b'{"metadata":{"x":"' + b"a" * (20 << 20)) + bomb.flush()  # 20 MB in ~20 KB
    assert "no migration version" in reason(data)
    head = InflatedHead(Counting(data))  # what is decompressed is bounded, however well the file compresses
    while head.read(1 << 20):
        pass
    assert (head.given, head.stop) == (HEAD_BYTES, "bound")


def test_a_backup_of_this_tool_costs_one_small_read():
    own = gzip.compress(b'{"metadata":{"timestamp":"x","migration_version":"0aa2"},"tables":{\n'
                        + os.urandom(1 << 20).hex().encode() + b"\n}}\n")
    assert version(own) == ("0aa2", 16 << 10)


@pytest.mark.parametrize("data, why", [
    (b"", "empty file"),
    (b"not gzip at all", "not a readable gzip file"),
    (gzip.compress(b'{"metadata":{"timestamp":"x",', mtime=0)[:-12], "truncated"),
    (gzip.compress(b"[1, 2, 3]", mtime=0), "does not start with a metadata object"),
    (gzip.compress(b'{"metadata":{"migration_version":5}}', mtime=0), "migration_version is not a string"),
    (gzip.compress(b'{"metadata":{"timestamp":"x",', mtime=0), "not a backup document"),
    (gzip.compress(os.urandom(2000)), "not a backup document"),
], ids=["empty", "not-gzip", "truncated", "an-array", "version-not-a-string", "no-tables", "random-bytes"])
# Fixed ids (and mtime=0): test ids made of compressed bytes differed between pytest-xdist's processes when they
# collected across a second boundary (gzip's header holds the time), which fails the whole run.
def test_what_cannot_be_read_says_why(data, why):
    assert why in reason(data)


GARBAGE = "not a readable gzip file (Error -3 while decompressing data: incorrect header check)"


def test_with_migration_versions_lists_every_file_with_a_version_or_a_reason(tmp_path):
    good = tmp_path / make_name(T0)
    good.write_bytes(gzip.compress(b'{"metadata":{"migration_version":"v1"},"tables":{}}'))
    (tmp_path / make_name(T0, 1)).write_bytes(b"garbage")
    storage = LocalStorage(tmp_path)

    listed = with_migration_versions(storage, storage.list())

    assert [(b.name, b.migration_version, b.unreadable) for b in listed] == [
        (make_name(T0, 1), None, GARBAGE),
        (good.name, "v1", None),
    ]
    good.unlink()  # deleted between the listing and the read: simply not listed
    assert [b.name for b in with_migration_versions(storage, storage.list() + listed[1:])] == [make_name(T0, 1)]


def test_real_backups_single_and_parallel_are_listed_with_their_version(make_db, settings_env, backup_dir):
    from click.testing import CliRunner

    from backup_tasks.cli import cli, register_commands
    from tests.conftest import run_sql

    register_commands()
    _, url = make_db()
    run_sql(url, "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
                 "INSERT INTO alembic_version VALUES ('1bb3939gd176');"
                 "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (id int PRIMARY KEY);"
                 "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 20000) i;"
                 "INSERT INTO u SELECT generate_series(1, 100);")
    settings_env(url)
    for jobs in ("1", "2"):  # --jobs 2 writes the head, the parts and the tail as gzip members of their own
        created = CliRunner().invoke(cli, ["create", "--local", "--jobs", jobs])
        assert created.exit_code == 0, created.output

    listed = CliRunner().invoke(cli, ["list", "--local"])

    rows = listed.stdout.splitlines()[2:]
    assert len(rows) == 2 and all(row.split()[-1] == "1bb3939gd176" for row in rows), listed.stdout
    dry = CliRunner().invoke(cli, ["cleanup", "--dry-run", "--target", "local", "--local"]).stdout
    assert "newest backup whose checksum verifies" in dry
