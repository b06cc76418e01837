"""SHA-256 of backup files and their sidecars (`<name>.sha256`, in `sha256sum` format so `sha256sum -c` works)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from . import names

CHUNK = 1024 * 1024
SIDECAR_BYTES = 4096


def sidecar_path(path: Path) -> Path:
    return names.sidecar_path(path, "sha256")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_sidecar(path: Path, digest: str) -> Path:
    """Write `<digest>  <name>\\n` next to `path`, atomically (temp file + rename)."""
    side = sidecar_path(path)
    tmp = side.with_name(f".{side.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{digest}  {path.name}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, side)
    return side


def read_sidecar(path: Path) -> str | None:
    """The recorded digest for `path`, or None when no sidecar exists or it is unreadable.

    Reads at most SIDECAR_BYTES: a sidecar is one `sha256sum` line, so a larger file with its name is not one."""
    side = sidecar_path(path)
    try:
        with open(side, "rb") as f:
            data = f.read(SIDECAR_BYTES + 1)
        text = data.decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if len(data) > SIDECAR_BYTES:
        return None
    digest = text.split()[0] if text else ""
    return digest if is_digest(digest) else None


def is_digest(value: object) -> bool:
    """A SHA-256 as this tool records it: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def check_recorded(path: Path) -> str | None:
    """Compare the file with its recorded SHA-256 (if one was recorded); raise IntegrityError on a mismatch."""
    from .errors import IntegrityError

    recorded = read_sidecar(path)
    if recorded is None:
        return None
    actual = sha256_file(path)
    if actual != recorded:
        raise IntegrityError(f"{path.name}: SHA-256 {actual} differs from the recorded {recorded}")
    return actual
