"""The manifest: a small JSON file next to each backup (`<name>.manifest.json`) that says what the backup holds.

Written by the backup once the file is complete, stored and fetched with it (local directory, S3), so that the
questions asked most often (how many rows does each table have in this backup, which migration version, how big,
what was left out) are answered without reading the backup itself: the counts diff before a `--yes` restore,
listings, retention, monitoring. It is a summary, never the authority: the backup file is, and a restore still
checks every row count against the file's own. A backup without a manifest (older files, files of other tools)
is read instead.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

from .names import sidecar_path
from .record import Record, empty_dict, empty_list

MANIFEST_FORMAT = "backup_tasks-manifest"
MANIFEST_VERSION = 1
MAX_BYTES = 64 << 20  # a manifest of a million tables is ~60 MB; anything larger is not one of ours


class Manifest(Record):
    format: str = MANIFEST_FORMAT
    manifest_version: int = MANIFEST_VERSION
    name: str
    sha256: str
    compressed_bytes: int
    uncompressed_bytes: int
    timestamp: datetime
    database_name: str
    database_host: str
    migration_version: str | None
    tool_version: str | None = None
    format_version: int = 1
    tables: dict[str, int] = Field(default_factory=empty_dict)  # table key -> rows, in the file's order
    total_rows: int = 0
    large_objects: int = 0
    large_object_bytes: int = 0
    not_included: list[dict[str, Any]] = Field(default_factory=empty_list)
    # The age public keys the backup was encrypted to (empty: not encrypted). The age header does not name its
    # recipients, so this is how a wrong identity's error can say which key is needed.
    recipients: list[str] = Field(default_factory=empty_list)

    model_config = ConfigDict(extra="allow")


def manifest_path(backup: Path) -> Path:
    return sidecar_path(backup, "manifest")


def write_manifest(backup: Path, manifest: Manifest) -> Path:
    """Write `<backup>.manifest.json` atomically (temp file + rename)."""
    path = manifest_path(backup)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = manifest.model_dump_json(indent=1).encode()
    with open(tmp, "wb") as f:
        f.write(data + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def parse_manifest(data: bytes, name: str | None = None) -> Manifest | None:
    """A manifest from its bytes; None when they are not a manifest (of this backup, when `name` is given)."""
    if len(data) > MAX_BYTES:
        return None
    try:
        manifest = Manifest.model_validate(json.loads(data))
    except (ValueError, ValidationError):
        return None
    if manifest.format != MANIFEST_FORMAT or manifest.manifest_version > MANIFEST_VERSION:
        return None
    if name is not None and manifest.name != name:
        return None
    return manifest


def read_manifest(backup: Path, *, sha256: str | None = None) -> Manifest | None:
    """The manifest next to `backup`, or None when there is none, it is unreadable, or it describes another file
    (a different name, or a different SHA-256 than `sha256` when given)."""
    path = manifest_path(backup)
    try:
        with open(path, "rb") as f:
            # Its size first: read(MAX_BYTES + 1) allocates the whole 64 MiB before reading a small file.
            size = os.fstat(f.fileno()).st_size
            data = f.read(min(size, MAX_BYTES) + 1)
    except OSError:
        return None
    manifest = parse_manifest(data, backup.name)
    if manifest is None or (sha256 is not None and manifest.sha256 != sha256):
        return None
    return manifest
