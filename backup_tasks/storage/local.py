"""Backups in a local directory (BACKUP_DIR): each `<name>` with its `<name>.sha256` and other sidecars next to it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..checksum import CHUNK, read_sidecar, sha256_file, write_sidecar
from ..errors import IntegrityError, NotFoundError, StorageError
from ..names import SIDECARS, parse_name, parse_sidecar, sidecar_path, validate_name
from ..progress import Progress, ProgressFn, Throttle
from .base import (
    CALLER_SIDECARS,
    SIDECAR_MAX_BYTES,
    BackupInfo,
    Verification,
    caller_sidecar_name,
    check_sidecar_size,
)


@contextlib.contextmanager
def atomic_target(dest: Path) -> Iterator[Path]:
    """A temp file next to `dest` that becomes `dest` only if the block succeeds; removed otherwise.

    So a reader never sees a half-written or unverified file under a backup name. The temp name starts with
    a dot and ends in `.part`, which is never a backup or sidecar name, so a crash leaves nothing list() reports.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_small(dest: Path, data: bytes) -> None:
    """Write a sidecar's bytes under `dest` atomically and durably."""
    with atomic_target(dest) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_small(path: Path) -> bytes | None:
    """A sidecar's bytes (at most SIDECAR_MAX_BYTES, else StorageError), or None when there is none."""
    try:
        with open(path, "rb") as f:
            check_sidecar_size(path.name, os.fstat(f.fileno()).st_size, reading=True)
            data = f.read(SIDECAR_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}", hint="Check BACKUP_DIR's permissions.") from exc
    check_sidecar_size(path.name, len(data), reading=True)  # grew while read
    return data


def copy_sidecars(src: Path, dest: Path) -> set[str]:
    """Copy the CALLER_SIDECARS present next to backup `src` to sit next to `dest`; the kinds copied."""
    copied = set()
    for kind in CALLER_SIDECARS:
        data = read_small(sidecar_path(src, kind))
        if data is not None:
            write_small(sidecar_path(dest, kind), data)
            copied.add(kind)
    return copied


def copy_verified(
    src: BinaryIO, dest: Path, expected: str | None, size: int | None, phase: str, progress: ProgressFn | None
) -> str:
    """Stream `src` to `dest` (atomically), refusing it if its SHA-256 differs from `expected`."""
    report = Throttle(progress)
    with atomic_target(dest) as tmp:
        h, done = hashlib.sha256(), 0
        with open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                report(Progress(phase=phase, bytes_done=done, bytes_total=size))
            out.flush()
            os.fsync(out.fileno())
        report.flush()
        digest = h.hexdigest()
        if expected is not None and digest != expected:
            raise mismatch(dest.name, expected, digest)
    return digest


def mismatch(name: str, expected: str, actual: str) -> IntegrityError:
    return IntegrityError(f"checksum mismatch for {name}: recorded sha256 {expected[:12]}…, got {actual[:12]}…")


class LocalStorage:
    kind = "local"

    def __init__(self, root: Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def location(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(
                f"no backup {name!r} in {self.root}", hint="See `backupctl list` for the backups in BACKUP_DIR."
            )
        return path

    def _failed(self, what: str, exc: OSError) -> StorageError:
        return StorageError(f"cannot {what} in {self.root}: {exc.strerror}", hint="Check BACKUP_DIR.")

    def list(self, details: bool = False) -> list[BackupInfo]:
        # `details` adds nothing here: the one thing it stands for, the recorded checksum, is a small local file
        # read either way. The backups' own bytes are never read (that is jobs/listing.py's, through archive).
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.root}: {exc.strerror}", hint="Check BACKUP_DIR.") from exc
        sidecars: dict[str, set[str]] = {}
        for entry in entries:
            if (side := parse_sidecar(entry.name)) is not None:
                sidecars.setdefault(side[0], set()).add(side[1])
        infos = [
            self._info(entry, frozenset(sidecars.get(entry.name, ())))
            for entry in entries
            if parse_name(entry.name) is not None and entry.is_file()
        ]
        return sorted(infos, key=lambda i: parse_name(i.name), reverse=True)

    def _info(self, entry: os.DirEntry, sidecars: frozenset[str]) -> BackupInfo:
        created = parse_name(entry.name)[0]
        try:
            size = entry.stat().st_size
        except OSError as exc:  # listed, not hidden: retention and `list` show it as unreadable
            return BackupInfo(entry.name, 0, created, location=self.kind, sidecars=sidecars,
                              unreadable=f"cannot stat: {exc.strerror}")
        sha256 = read_sidecar(Path(entry.path)) if "sha256" in sidecars else None
        return BackupInfo(entry.name, size, created, sha256, None, self.kind, sidecars)

    def put(self, local_path: Path, progress: ProgressFn | None = None,
            migration_version: str | None = None) -> BackupInfo:
        src = Path(local_path)
        name = validate_name(src.name)
        dest = self._path(name)
        recorded = read_sidecar(src)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            in_place = dest.exists() and dest.samefile(src)
            if in_place:
                # Already in place (a backup written straight into BACKUP_DIR): record a checksum if none exists.
                digest = sha256_file(src)
                if recorded is not None and digest != recorded:
                    raise mismatch(name, recorded, digest)
            else:
                with open(src, "rb") as f:
                    digest = copy_verified(f, dest, recorded, src.stat().st_size, "upload", progress)
            # The checksum before the other sidecars: a crash in between leaves a backup that verifies.
            write_sidecar(dest, digest)
            if in_place:
                kinds = {k for k in CALLER_SIDECARS if sidecar_path(dest, k).is_file()}
            else:
                kinds = copy_sidecars(src, dest)
            size = dest.stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"file not found: {src}") from exc
        except OSError as exc:
            raise self._failed(f"store {name}", exc) from exc
        created = parse_name(name)[0]
        return BackupInfo(name, size, created, digest, migration_version, self.kind, frozenset({"sha256", *kinds}))

    def get(self, name: str, dest_dir: Path, progress: ProgressFn | None = None) -> Path:
        src = self._existing(name)
        dest_dir = Path(dest_dir)
        dest = dest_dir / src.name
        recorded = read_sidecar(src)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            if dest.exists() and dest.samefile(src):
                digest = sha256_file(src)
                if recorded is not None and digest != recorded:
                    raise mismatch(name, recorded, digest)
                return dest
            with open(src, "rb") as f:
                copy_verified(f, dest, recorded, src.stat().st_size, "download", progress)
            if recorded is not None:
                write_sidecar(dest, recorded)
            copy_sidecars(src, dest)
        except OSError as exc:
            raise StorageError(f"cannot copy {name} to {dest_dir}: {exc.strerror}") from exc
        return dest

    def open(self, name: str) -> BinaryIO:
        path = self._existing(name)
        try:
            return open(path, "rb")
        except OSError as exc:
            raise self._failed(f"read {name}", exc) from exc

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            # The data file goes first: a crash in between leaves orphan sidecars, which list() never shows.
            path.unlink(missing_ok=True)
            for kind in SIDECARS:
                sidecar_path(path, kind).unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed(f"delete {name}", exc) from exc

    def checksum(self, name: str) -> str | None:
        return read_sidecar(self._existing(name))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def verify(self, name: str) -> Verification:
        path = self._existing(name)
        recorded = read_sidecar(path)
        if recorded is None:
            return Verification(False, "no SHA-256 recorded (no readable .sha256 sidecar)")
        try:
            actual = sha256_file(path)
        except OSError as exc:
            return Verification(False, f"cannot be read: {exc.strerror}")
        if actual != recorded:
            return Verification(False, f"SHA-256 {actual[:12]}… differs from the recorded {recorded[:12]}…")
        return Verification(True, "SHA-256 matches its sidecar")

    def put_sidecar(self, name: str, kind: str, data: bytes) -> None:
        target = self.root / caller_sidecar_name(name, kind)
        check_sidecar_size(target.name, len(data), reading=False)
        self._existing(name)
        try:
            write_small(target, bytes(data))
        except OSError as exc:
            raise self._failed(f"write {target.name}", exc) from exc

    def get_sidecar(self, name: str, kind: str) -> bytes | None:
        return read_small(self.root / caller_sidecar_name(name, kind))
