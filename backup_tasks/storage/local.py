"""Backups in a local directory (BACKUP_DIR), each with a `<name>.sha256` sidecar."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..checksum import CHUNK, read_sidecar, sha256_file, sidecar_path, write_sidecar
from ..errors import IntegrityError, NotFoundError, StorageError
from ..names import parse_name, validate_name
from ..progress import Progress, ProgressFn, Throttle
from .base import BackupInfo


def header_migration_version(path: Path) -> str | None:
    """The migration version recorded in the backup's own header, or None if it cannot be read.

    Listing must keep working on a damaged or foreign-format file, so every failure here means "unknown".
    """
    try:
        from ..archive.reader import read_metadata

        return read_metadata(path).migration_version
    except Exception:
        return None


@contextlib.contextmanager
def atomic_target(dest: Path) -> Iterator[Path]:
    """A temp file next to `dest` that becomes `dest` only if the block succeeds; removed otherwise.

    So a reader never sees a half-written or unverified file under a backup name. The temp name starts with
    a dot and ends in `.part`, which is never a backup name, so a crash leaves nothing that list() reports.
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

    def _path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _existing(self, name: str) -> Path:
        path = self._path(name)
        if not path.is_file():
            raise NotFoundError(
                f"no backup {name!r} in {self.root}", hint="See `backupctl list` for the backups in BACKUP_DIR."
            )
        return path

    def list(self) -> list[BackupInfo]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"cannot read {self.root}: {exc.strerror}", hint="Check BACKUP_DIR.") from exc
        infos = []
        for entry in entries:
            parsed = parse_name(entry.name)
            if parsed is None or not entry.is_file():
                continue
            path = Path(entry.path)
            infos.append(
                BackupInfo(
                    name=entry.name,
                    size=entry.stat().st_size,
                    created_at=parsed[0],
                    sha256=read_sidecar(path),
                    migration_version=header_migration_version(path),
                    location=self.kind,
                )
            )
        return sorted(infos, key=lambda i: parse_name(i.name), reverse=True)

    def put(self, local_path: Path, progress: ProgressFn | None = None) -> BackupInfo:
        src = Path(local_path)
        name = validate_name(src.name)
        dest = self._path(name)
        recorded = read_sidecar(src)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if dest.exists() and dest.samefile(src):
                # Already in place (a backup written straight into BACKUP_DIR): record a checksum if none exists.
                digest = sha256_file(src)
                if recorded is not None and digest != recorded:
                    raise mismatch(name, recorded, digest)
            else:
                with open(src, "rb") as f:
                    digest = copy_verified(f, dest, recorded, src.stat().st_size, "upload", progress)
            write_sidecar(dest, digest)
            size = dest.stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"file not found: {src}") from exc
        except OSError as exc:
            raise StorageError(f"cannot store {name} in {self.root}: {exc.strerror}", hint="Check BACKUP_DIR.") from exc
        return BackupInfo(name, size, parse_name(name)[0], digest, header_migration_version(dest), self.kind)

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
        except OSError as exc:
            raise StorageError(f"cannot copy {name} to {dest_dir}: {exc.strerror}") from exc
        return dest

    def open(self, name: str) -> BinaryIO:
        return open(self._existing(name), "rb")

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            # The data file goes first: a crash in between leaves an orphan sidecar, which list() ignores.
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {name} from {self.root}: {exc.strerror}") from exc

    def checksum(self, name: str) -> str | None:
        return read_sidecar(self._existing(name))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()
