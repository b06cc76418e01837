"""The migration version at the head of a backup, from a bounded read: for listings, which must stay fast and safe
on any file with a backup's name (a foreign document, a damaged or hostile one).

At most HEAD_BYTES of the decompressed document (from at most COMPRESSED_BYTES of the file) are read, whatever
the file holds. This tool and the seed both write `metadata` as the first key with `migration_version` among its
first fields, so a few hundred bytes suffice for their files; a document whose metadata comes later, or is longer
than the bound before its migration version, is not read further here (`backupctl verify FILE` reads it all).
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

import ijson

from ..errors import InvalidBackupError

HEAD_BYTES = 64 << 10
COMPRESSED_BYTES = 1 << 20  # more than this for HEAD_BYTES of data: a gzip header with a huge name or extra field
_READ = 64 << 10
_NOT_A_STRING = {"number", "boolean", "start_map", "start_array"}


def read_head(stream: BinaryIO) -> tuple[bytes, str]:
    """Up to HEAD_BYTES of the decompressed document, and why the read stopped: "complete" (the whole document),
    "bound" (a limit was reached) or "ended" (the file ended inside the gzip stream: truncated)."""
    inflater = zlib.decompressobj(wbits=31)  # gzip framing only
    out, pending, taken = bytearray(), b"", 0
    try:
        while len(out) < HEAD_BYTES and not inflater.eof:
            if not pending:
                if taken >= COMPRESSED_BYTES:
                    return bytes(out), "bound"
                pending = stream.read(min(_READ, COMPRESSED_BYTES - taken))
                taken += len(pending)
                if not pending:
                    if not taken:
                        raise InvalidBackupError("empty file")
                    return bytes(out), "ended"
            out += inflater.decompress(pending, HEAD_BYTES - len(out))
            pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise InvalidBackupError(f"not a readable gzip file ({exc})") from None
    return bytes(out), "complete" if inflater.eof else "bound"


def read_migration_version(stream: BinaryIO) -> str | None:
    """The `metadata.migration_version` at the head of the gzip document in `stream` (None when the metadata has
    none). Raises InvalidBackupError, saying why, when the head is not a backup's metadata within the bound."""
    head, stop = read_head(stream)
    events = ijson.parse(io.BytesIO(head))
    opening = [("", "start_map", None), ("", "map_key", "metadata"), ("metadata", "start_map", None)]
    try:
        if [next(events, None) for _ in opening] != opening:
            raise InvalidBackupError("not a backup document (it does not start with a metadata object)")
        for prefix, event, value in events:
            if prefix == "metadata" and event == "end_map":
                return None
            if prefix == "metadata.migration_version" and event in ("string", "null"):
                return value
            if prefix == "metadata.migration_version" and event in _NOT_A_STRING:
                raise InvalidBackupError("its migration_version is not a string")
    except ijson.JSONError:
        if stop == "complete":
            raise InvalidBackupError("not a backup document (not valid JSON)") from None
        # Otherwise the parser ran into the end of the bounded head (or damage before it): said below.
    if stop == "complete":
        raise InvalidBackupError("not a backup document (its metadata ends without a closing brace)")
    if stop == "ended":
        raise InvalidBackupError("truncated (the gzip stream ends within its first 64 KB)")
    raise InvalidBackupError("no migration version within its first 64 KB (its metadata is longer, or damaged)")
