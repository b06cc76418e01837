"""The migration version at the head of a backup, from a bounded read: for listings, which must stay fast and safe
on any file with a backup's name (a foreign document, a damaged or hostile one).

At most HEAD_BYTES of the decompressed document (from at most COMPRESSED_BYTES of the file) are read, whatever
the file holds, and only as far as the parser needs: this tool and the seed both write `metadata` as the first
key with `migration_version` among its first fields, so their files cost one small read. A document whose
metadata comes later, or is longer than the bound before its migration version, is not read further here
(`backupctl verify FILE` reads it all).
"""

from __future__ import annotations

import zlib
from typing import BinaryIO

import ijson

from ..errors import InvalidBackupError

HEAD_BYTES = 64 << 10
AGE_MAGIC = b"age-encryption.org/v1\n"  # archive/encryption.MAGIC, without importing pyrage into listings
COMPRESSED_BYTES = 1 << 20  # more than this for HEAD_BYTES of data: a gzip header with a huge name or extra field
_READ = 16 << 10
_NOT_A_STRING = {"number", "boolean", "start_map", "start_array"}
_OPENING = [("", "start_map", None), ("", "map_key", "metadata"), ("metadata", "start_map", None)]


class InflatedHead:
    """The decompressed document as a file for ijson, ending after HEAD_BYTES. `stop` says why it ended:
    "complete" (the whole document), "bound" (a limit was reached), "ended" (the file ended inside a gzip
    member: truncated); None while there is more. Several gzip members are one stream, as to every gzip reader
    (a parallel backup writes its head, parts and tail as members of their own)."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self._inflater = zlib.decompressobj(wbits=31)  # gzip framing only
        self._pending = b""
        self._between = False  # at the end of a member, before any byte of the next
        self.taken = 0  # compressed bytes read
        self.given = 0  # decompressed bytes handed out
        self.stop: str | None = None

    def read(self, n: int) -> bytes:
        out = b""
        if n <= 0:  # ijson reads 0 bytes first to tell bytes from text; zlib takes max_length=0 as "no limit"
            return out
        while not out and self.stop is None:
            if self.given >= HEAD_BYTES:
                self.stop = "bound"
                break
            if self._inflater.eof:
                self._pending, self._between = self._inflater.unused_data, True
                self._inflater = zlib.decompressobj(wbits=31)
            if not self._pending and not self._fill():
                break
            try:
                out = self._inflater.decompress(self._pending, min(n, HEAD_BYTES - self.given))
            except zlib.error as exc:
                raise InvalidBackupError(f"not a readable gzip file ({exc})") from None
            self._pending, self._between = self._inflater.unconsumed_tail, False
        self.given += len(out)
        return out

    def _fill(self) -> bool:
        if self.taken >= COMPRESSED_BYTES:
            self.stop = "bound"
            return False
        self._pending = self._stream.read(min(_READ, COMPRESSED_BYTES - self.taken))
        if not self.taken and self._pending.startswith(AGE_MAGIC):
            # Listings never decrypt; a backup encrypted by this tool is named .age and listed from its manifest.
            raise InvalidBackupError("age-encrypted (name it …backup.gz.age: its migration version is then read "
                                     "from its manifest)")
        if not self._pending:
            if not self.taken:
                raise InvalidBackupError("empty file")
            self.stop = "complete" if self._between else "ended"
        self.taken += len(self._pending)
        return bool(self._pending)


def read_migration_version(stream: BinaryIO) -> str | None:
    """The `metadata.migration_version` at the head of the gzip document in `stream` (None when the metadata has
    none). Raises InvalidBackupError, saying why, when the head is not a backup's metadata within the bound."""
    head = InflatedHead(stream)
    events = ijson.parse(head, buf_size=4096)
    try:
        if [next(events, None) for _ in _OPENING] != _OPENING:
            raise InvalidBackupError("not a backup document (it does not start with a metadata object)")
        for prefix, event, value in events:
            if prefix == "metadata" and event == "end_map":
                return None
            if prefix == "metadata.migration_version" and event in ("string", "null"):
                return value
            if prefix == "metadata.migration_version" and event in _NOT_A_STRING:
                raise InvalidBackupError("its migration_version is not a string")
    except ijson.JSONError:
        pass  # damage, or the end of the bounded head: which one is said below
    if head.stop == "ended":
        raise InvalidBackupError("truncated (the gzip stream ends within its first 64 KB)")
    if head.stop == "bound":
        raise InvalidBackupError("no migration version within its first 64 KB (its metadata is longer, or damaged)")
    raise InvalidBackupError("not a backup document (not valid JSON)")
