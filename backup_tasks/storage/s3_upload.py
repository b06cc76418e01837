"""A backup streamed straight into S3 as it is written: an S3 multipart upload behind the Sink interface
(archive/writer.py), so no local copy of the backup ever exists (a container with a small disk can back up a big
database).

Parts of PART_BYTES (S3 wants at least 5 MiB but the last; at most 10,000 parts, so the part size doubles every
1,000 parts: 8 MiB x (1 + 2 + 4 + ... ) reaches far beyond S3's 5 TiB object limit) are uploaded by one thread
while the next one fills: memory is two parts, whatever the size. The bytes are hashed as they pass, so the
object's SHA-256 is recorded (object metadata, as for an uploaded file) once it is complete: S3 takes metadata only
when an object is created, so the completed object is copied onto itself with it (server-side, no transfer). A
failure aborts the upload: an unfinished multipart upload would keep costing storage.

This module calls the client it is given and imports no boto3 (storage/s3.py is the only importer).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

MiB = 1 << 20
PART_BYTES = 8 * MiB
PARTS_PER_STEP = 1000  # the part size doubles after every this many parts
COPY_LIMIT = 5 * 1024 * MiB  # CopyObject's limit; above it the copy is done in parts (UploadPartCopy)

Errors = Callable[[str], AbstractContextManager]


class S3Upload:
    """A Sink that writes one S3 object (bucket/key) through a multipart upload; finish(metadata) completes it."""

    def __init__(self, client: Any, bucket: str, key: str, errors: Errors, extra: dict[str, str],
                 metadata: dict[str, str] | None = None, content_type: str = "application/gzip"):
        """metadata: recorded on the object with its sha256 and size (a backup); None for a temporary object."""
        self.client, self.bucket, self.key, self._errors = client, bucket, key, errors
        self._extra, self._content_type, self._metadata = extra, content_type, metadata
        self._buffer = bytearray()
        self._parts: list[dict] = []
        self._upload_id: str | None = None
        self._pending: queue.Queue = queue.Queue(maxsize=1)  # one part in flight, one filling: two parts of memory
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        self.sha256.update(data)
        self.size += len(data)
        if len(self._buffer) >= self._part_size():
            self._send(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def _part_size(self) -> int:
        return PART_BYTES << (len(self._parts) // PARTS_PER_STEP)

    def _send(self, data: bytes) -> None:
        if self._upload_id is None:
            with self._errors("upload"):
                self._upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self._content_type, **self._extra)["UploadId"]
            self._thread = threading.Thread(target=self._uploader, name="backup-tasks-s3-upload", daemon=True)
            self._thread.start()
        number = len(self._parts) + 1
        self._parts.append({"PartNumber": number})
        self._pending.put((number, data))  # waits while the previous part is still in flight

    def _uploader(self) -> None:
        while (item := self._pending.get()) is not None:
            number, data = item
            if self._failure is not None:
                continue
            try:
                with self._errors("upload"):
                    answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                     PartNumber=number, Body=data)
                self._parts[number - 1]["ETag"] = answer["ETag"]
            except BaseException as exc:  # noqa: BLE001 - handed to the writer, which raises it
                self._failure = exc

    def _drain(self) -> None:
        if self._thread is not None:
            self._pending.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            raise self._failure

    def finish(self) -> None:
        """Complete the object (one PutObject when it is smaller than a part); a backup gets its metadata."""
        metadata = None
        if self._metadata is not None:
            metadata = {"sha256": self.sha256.hexdigest(), "size": str(self.size), **self._metadata}
        if self._upload_id is None:
            with self._errors("upload"):
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                                       ContentType=self._content_type, Metadata=metadata or {}, **self._extra)
            return
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self._drain()
        with self._errors("upload"):
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                                  MultipartUpload={"Parts": self._parts})
        self._upload_id = None
        if metadata:
            self._record(metadata)

    def _record(self, metadata: dict[str, str]) -> None:
        """The metadata onto the completed object: a copy onto itself (in parts above CopyObject's limit)."""
        source = {"Bucket": self.bucket, "Key": self.key}
        with self._errors("upload"):
            if self.size <= COPY_LIMIT:
                self.client.copy_object(Bucket=self.bucket, Key=self.key, CopySource=source, Metadata=metadata,
                                        MetadataDirective="REPLACE", ContentType=self._content_type, **self._extra)
                return
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, Metadata=metadata,
                                                         ContentType=self._content_type, **self._extra)["UploadId"]
            parts = []
            for number, start in enumerate(range(0, self.size, COPY_LIMIT), 1):
                end = min(start + COPY_LIMIT, self.size) - 1
                answer = self.client.upload_part_copy(Bucket=self.bucket, Key=self.key, UploadId=upload,
                                                      PartNumber=number, CopySource=source,
                                                      CopySourceRange=f"bytes={start}-{end}")
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})

    def abort(self) -> None:
        """Give up: the multipart upload is aborted, so nothing of it is left (or kept costing storage)."""
        try:
            self._drain()
        except BaseException:  # noqa: BLE001 - aborting anyway
            pass
        if self._upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)
            except Exception:  # noqa: BLE001 - abandoned uploads are also listed and aborted by abandon_uploads
                pass
            self._upload_id = None
