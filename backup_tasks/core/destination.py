"""Where a backup (and a parallel backup's parts) is written: a local directory, or straight into S3.

A directory: the backup is written under a hidden temporary name and linked to its backup name once complete,
with its SHA-256 sidecar and manifest (a reader never sees half a backup under a backup name). S3: the backup is
streamed into a multipart upload (storage/s3_upload.py) that becomes the object when it completes, its SHA-256
recorded on it and its manifest beside it; nothing is written to the local disk.

Encrypted (EngineOptions.keys has recipients): the destination's sink is wrapped by sealed(), so only ciphertext
reaches the file or the upload, and the checksum and sizes recorded are the ciphertext's (stored_digest()).
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..archive.encryption import EncryptingSink, Keys
from ..archive.writer import FileSink, Sink
from ..checksum import sidecar_path, write_sidecar
from ..errors import StorageError
from ..manifest import Manifest, manifest_path, write_manifest
from ..names import make_name
from .parts import PART_FILE_PREFIX


class Destination(Protocol):
    def prepare(self) -> None:
        """Before the snapshot is taken: fail early when the backup could not be written there."""

    def begin(self, taken_at: datetime, migration_version: str | None, encrypted: bool = False) -> Sink:
        """The sink the backup's bytes go into (under an encrypted backup's name when `encrypted`)."""

    def publish(self, digest: str, manifest: Manifest) -> tuple[str, str]:
        """After the sink finished: give the backup its name (and sidecars); returns (name, where it is)."""

    def discard(self) -> None:
        """After a failure: nothing of the backup is left."""


class LocalDestination:
    """A directory. The hidden temporary file never looks like a backup (a leading dot, a `.tmp-` suffix)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.tmp: Path | None = None
        self.taken_at: datetime | None = None
        self.encrypted = False

    def prepare(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create backup directory {self.directory}: {exc.strerror}") from None
        sweep_stale_partials(self.directory)

    def begin(self, taken_at: datetime, migration_version: str | None, encrypted: bool = False) -> Sink:
        self.taken_at, self.encrypted = taken_at, encrypted
        self.tmp = self.directory / f".{make_name(taken_at, 0, encrypted)}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        with disk_errors(self.directory):
            return FileSink(self.tmp)

    def publish(self, digest: str, manifest: Manifest) -> tuple[str, str]:
        with disk_errors(self.directory):
            final = self._link()
        self.tmp = None
        _write_sidecars(final, digest, manifest.model_copy(update={"name": final.name}))
        return final.name, str(final)

    def _link(self) -> Path:
        """Give the finished file its backup name without ever replacing another backup (link fails if taken)."""
        for sequence in range(0, 10000):
            final = self.directory / make_name(self.taken_at, sequence, self.encrypted)
            try:
                os.link(self.tmp, final)
            except FileExistsError:
                continue
            self.tmp.unlink()
            _fsync_dir(self.directory)
            return final
        raise StorageError(f"too many backups named for {self.taken_at:%Y-%m-%d %H:%M:%S} in {self.directory}")

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


@contextmanager
def disk_errors(directory: Path) -> Iterator[None]:
    """OSErrors of a local write as StorageErrors: a full disk says so (the caller leaves nothing behind)."""
    try:
        yield
    except OSError as exc:
        raise storage_error(exc, directory) from None


def storage_error(exc: OSError, where: Any) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return StorageError(f"no space left while writing the backup to {where}",
                            hint="Free disk space or point BACKUP_DIR elsewhere; no partial file was kept.")
    return StorageError(f"writing the backup to {where} failed: {exc.strerror or exc}")


def _write_sidecars(final: Path, digest: str, manifest: Manifest) -> None:
    """The checksum and the manifest next to the published file; if they cannot be written the backup is taken
    back (a backup without its checksum would be restored unverified)."""
    try:
        write_sidecar(final, digest)
        write_manifest(final, manifest)
    except OSError as exc:
        for path in (final, sidecar_path(final), manifest_path(final)):
            path.unlink(missing_ok=True)
        raise StorageError(f"writing the checksum and manifest of {final.name} failed: {exc.strerror or exc}",
                           hint="Free disk space or check BACKUP_DIR's permissions; the backup was removed.") from None


STALE_PARTIAL_S = 3600
# A finished part of a parallel backup may wait for the parts before it for as long as the backup runs.
STALE_PART_S = 24 * 3600


def sweep_stale_partials(directory: Path) -> None:
    """Remove partial files of backups that died (SIGKILL, OOM, power loss) and so could not clean up.

    A running backup writes its partial file continuously, so one untouched for an hour is dead; a part waits
    for assembly at most as long as its backup runs. They never look like backups (hidden); this only gives
    their disk space back."""
    now = time.time()
    stale = [(p, STALE_PARTIAL_S) for p in directory.glob(".backup_*.backup.gz*.tmp-*")]
    stale += [(p, STALE_PART_S) for p in directory.glob(PART_FILE_PREFIX + "*")]
    for partial, age in stale:
        try:
            if partial.stat().st_mtime < now - age:
                partial.unlink()
        except OSError:
            pass


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Destination:
    """`storage` is the S3 storage (storage/s3.py): free_name, begin_backup, put_sidecar, url."""

    def __init__(self, storage: Any):
        self.storage = storage
        self.name: str | None = None
        self._sink = None

    def prepare(self) -> None:
        pass

    def begin(self, taken_at: datetime, migration_version: str | None, encrypted: bool = False) -> Sink:
        self.name = self.storage.free_name(taken_at, encrypted)
        self._sink = self.storage.begin_backup(self.name, migration_version)
        return self._sink

    def publish(self, digest: str, manifest: Manifest) -> tuple[str, str]:
        data = manifest.model_copy(update={"name": self.name}).model_dump_json(indent=1).encode() + b"\n"
        self.storage.put_sidecar(self.name, "manifest", data)
        return self.name, self.storage.url(self.name)

    def discard(self) -> None:
        if self._sink is not None:
            self._sink.abort()


def begin_sealed(destination: Destination, taken_at: datetime, migration_version: str | None, keys: Keys) -> Sink:
    """The destination's sink, age-encrypting to `keys.recipients` when there are any (else the sink itself)."""
    sink = destination.begin(taken_at, migration_version, keys.encrypts)
    return EncryptingSink(sink, keys.recipients) if keys.encrypts else sink


def stored_digest(sink: Sink, written: tuple[int, str]) -> tuple[int, str]:
    """(size, sha256) of the bytes the destination holds: the ciphertext's when `sink` encrypted, else `written`
    (what the writer counted on its way into the sink)."""
    return sink.stored if isinstance(sink, EncryptingSink) else written


@contextmanager
def writing(destination: Destination) -> Iterator[Destination]:
    """Discard the destination's partial backup unless the block published it; an OSError of writing it (a full
    disk) as the StorageError that says so."""
    try:
        yield destination
    except OSError as exc:
        destination.discard()
        raise storage_error(exc, getattr(destination, "directory", "the destination")) from None
    except BaseException:
        destination.discard()
        raise


# --- where the parts of a parallel backup go ---------------------------------------------------------------

class LocalPartStore:
    """Parts as hidden files in a directory (the backup's own, or a shared volume)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def open(self, job: str, part: str) -> tuple[Sink, str]:
        path = self.directory / f"{PART_FILE_PREFIX}{job}-{part}"
        return FileSink(path), str(path)

    def read(self, output: str) -> Iterator[bytes]:
        with open(output, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    def remove(self, output: str) -> None:
        Path(output).unlink(missing_ok=True)

    def remove_all(self, job: str) -> None:
        for path in self.directory.glob(f"{PART_FILE_PREFIX}{job}-*"):
            path.unlink(missing_ok=True)


class S3PartStore:
    """Parts as temporary S3 objects, for workers on several hosts (no shared directory) and small disks."""

    def __init__(self, storage: Any):
        self.storage = storage

    def open(self, job: str, part: str) -> tuple[Sink, str]:
        return self.storage.begin_part(job, part)

    def read(self, output: str) -> Iterator[bytes]:
        return self.storage.read_part(output)

    def remove(self, output: str) -> None:
        self.storage.remove_part(output)

    def remove_all(self, job: str) -> None:
        self.storage.abandon_parts(job)
