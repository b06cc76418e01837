"""A backup file as the engine reads it: its table of contents, whether its bytes are the ones backup_tasks wrote
(the trusted-file decision, made here once for restore and diff), and its manifest when that describes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..archive.encryption import NO_KEYS, Keys, public_keys, wants_recipients
from ..archive.reader import Contents, TableHeader, read_contents_fast, scan
from ..checksum import check_recorded, read_sidecar, sha256_file
from ..errors import DecryptionError, IntegrityError
from ..manifest import Manifest, read_manifest
from ..models import FORMAT_NAME


@dataclass
class BackupSource:
    path: Path
    contents: Contents
    # The file's SHA-256 when it matched the one recorded when it was written (None: no sidecar, or a diff of a
    # file that no longer matches, which a diff reports on rather than refuses).
    verified: str | None
    manifest: Manifest | None
    max_line: int
    keys: Keys = NO_KEYS

    @property
    def trusted(self) -> bool:
        """Bytes that match the SHA-256 recorded when backup_tasks wrote them are its own canonical JSON lines: they
        go to COPY (or into a diff's comparison) without being parsed again (measured: ~40% of the restore's Python
        work). Any other file (no sidecar, another writer) is parsed and checked row by row. Even a trusted block is
        checked byte-wise for the shape this tool writes (archive/rowjson.lines_to_copy_text with `width`)."""
        return self.verified is not None and self.contents.metadata.format == FORMAT_NAME

    def row_counts(self) -> Contents:
        """The table list with every table's row count: from the manifest when it describes this very file
        (nothing read), else from one pass over the file."""
        if self.manifest is not None:
            headers = [TableHeader(t.key, t.schema, t.name, t.columns, t.column_types,
                                   row_count=self.manifest.tables.get(t.key, 0)) for t in self.contents.tables]
            if all(t.key in self.manifest.tables for t in self.contents.tables):
                return Contents(self.contents.metadata, headers, self.manifest.uncompressed_bytes)
        return scan(self.path, self.max_line, parse_rows=False, keys=self.keys)


def open_source(path: Path, max_line: int, *, refuse_mismatch: bool = True, keys: Keys = NO_KEYS) -> BackupSource:
    """Check the file against its recorded SHA-256 (a mismatch is an IntegrityError, unless refuse_mismatch is
    False) and read its table of contents (from the metadata, or a pass over the file when it has none)."""
    path = Path(path)
    try:
        verified = check_recorded(path) if path.is_file() else None
    except IntegrityError:
        if refuse_mismatch:
            raise
        verified = None
    try:
        contents = read_contents_fast(path, max_line, keys) or scan(path, max_line, keys=keys)
    except DecryptionError as exc:
        raise with_recipients_hint(exc, path, keys) from None
    return BackupSource(path, contents, verified, _manifest(path, verified), max_line, keys)


def with_recipients_hint(exc: DecryptionError, path: Path, keys: Keys) -> DecryptionError:
    """A wrong identity's error with the hint that helps: which public keys the backup was made for (the manifest
    records them; age headers do not) and which ones the identity file holds."""
    if not wants_recipients(exc):
        return exc
    manifest = read_manifest(path)
    recorded = manifest.recipients if manifest is not None else []
    made_for = ", ".join(recorded) or "unknown (no manifest records them)"
    have = ", ".join(public_keys(keys.identity_file)) or "none"
    return DecryptionError(exc.message, hint=f"It was encrypted for: {made_for}. BACKUP_AGE_IDENTITY_FILE holds: "
                                             f"{have}. Point it at an identity file of one of those recipients.")


def _manifest(path: Path, verified: str | None) -> Manifest | None:
    """The manifest, only when it names this file's SHA-256 (hashed here when no sidecar recorded it)."""
    if verified is None and read_sidecar(path) is not None:
        return None  # the file no longer matches its checksum: its manifest says nothing about these bytes
    manifest = read_manifest(path)
    if manifest is None:
        return None
    digest = verified or sha256_file(path)
    return manifest if manifest.sha256 == digest else None
