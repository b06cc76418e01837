"""Backups in an S3 bucket (AWS or any S3-compatible endpoint). The only module that imports boto3.

Keys are exactly `S3_PREFIX + backup name`; anything else in the bucket is never listed, read or deleted.
The SHA-256 travels as object metadata (x-amz-meta-sha256) because a multipart ETag is not a content hash, with
the size (x-amz-meta-size) so that verify() can tell a replaced object from a HEAD; sidecars other than the
checksum are objects next to the backup (`S3_PREFIX + name + suffix`). A listing costs one ListObjectsV2 request
per 1,000 keys: metadata is read (a HEAD) only where it is needed (details, verify, get).
Credentials come only from boto3's default chain and are never read, stored or printed here.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from .. import dsn
from ..checksum import is_digest, read_sidecar, sha256_file, write_sidecar
from ..errors import ConfigError, IntegrityError, NotFoundError, StorageError, Transient
from ..names import SIDECARS, make_name, parse_name, parse_sidecar, sidecar_name, sidecar_path, validate_name
from ..progress import Progress, ProgressFn, Throttle
from . import local
from .base import (
    CALLER_SIDECARS,
    SIDECAR_MAX_BYTES,
    BackupInfo,
    Verification,
    caller_sidecar_name,
    check_sidecar_size,
)
from .s3_upload import S3Upload

if TYPE_CHECKING:
    from ..settings import Settings

MB = 1024 * 1024
PARTS_FOLDER = ".backup_tasks-parts/"  # temporary objects of parallel backups, under the prefix
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_CRED_HINT = (
    "Credentials come from boto3's standard chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
    "or an instance/task role. Check they are set for this process and allowed on the bucket."
)


# S3 error codes for trouble that passes: throttling, timeouts, the service's own errors.
_PASSING_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "SlowDown", "RequestLimitExceeded",
    "TooManyRequestsException", "RequestThrottled", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "500", "502", "503", "504",
}


def _safe_url(url: str | None) -> str:
    """The endpoint as scheme://host:port, for messages."""
    return dsn.endpoint(url) if url else "the default AWS endpoint"


def _boto_cause(exc: BaseException) -> BaseException | None:
    """The boto error behind `exc`: upload_file re-raises a ClientError as S3UploadFailedError keeping it only
    as context, and s3transfer's RetriesExceededError keeps it as `last_exception`."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ClientError, BotoCoreError)):
            return seen
        inner = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
        if inner is None and type(seen).__module__.split(".")[0] in {"boto3", "botocore", "s3transfer"}:
            return seen
        seen = inner
    return None


class _ProgressCounter:
    """boto3 transfer callbacks report byte increments from several threads; turn them into Progress events."""

    def __init__(self, phase: str, total: int | None, progress: ProgressFn | None):
        self._phase, self._total, self._done = phase, total, 0
        self._lock = threading.Lock()
        self._report = Throttle(progress)

    def __call__(self, n: int) -> None:
        with self._lock:
            self._done += n
            self._report(Progress(phase=self._phase, bytes_done=self._done, bytes_total=self._total))

    def flush(self) -> None:
        with self._lock:
            self._report.flush()


class S3Storage:
    kind = "s3"

    def __init__(
        self,
        settings: Settings,
        *,
        max_attempts: int = 5,
        multipart_threshold: int = 64 * MB,
        multipart_chunksize: int = 16 * MB,
        max_concurrency: int = 4,
    ):
        if not settings.S3_BUCKET_NAME:
            raise ConfigError("S3 is not configured: S3_BUCKET_NAME is not set", hint="Set S3_BUCKET_NAME.")
        if settings.S3_SSE_KMS_KEY_ID and settings.S3_SSE != "aws:kms":
            raise ConfigError(
                "S3_SSE_KMS_KEY_ID is set but S3_SSE is not 'aws:kms'", hint="Set S3_SSE=aws:kms to use the key."
            )
        self._settings = (settings, max_attempts, multipart_threshold, multipart_chunksize, max_concurrency)
        self.bucket = settings.S3_BUCKET_NAME
        prefix = settings.S3_PREFIX.lstrip("/")
        # "backups" and "backups/" mean the same folder; without the slash keys would read "backupsbackup_…".
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.endpoint = settings.S3_ENDPOINT_URL
        config = Config(
            region_name=settings.S3_REGION,
            retries={"mode": "standard", "max_attempts": max_attempts},
            s3={"addressing_style": settings.S3_ADDRESSING_STYLE},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=max(10, max_concurrency * 2),
        )
        self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)
        # Memory stays near max_concurrency * chunksize whatever the file size; s3transfer raises the chunk size
        # on its own when a file would need more than 10,000 parts.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            max_io_queue=64,
        )
        self._extra: dict[str, str] = {}
        if settings.S3_SSE:
            self._extra["ServerSideEncryption"] = settings.S3_SSE
        if settings.S3_SSE_KMS_KEY_ID:
            self._extra["SSEKMSKeyId"] = settings.S3_SSE_KMS_KEY_ID
        if settings.S3_STORAGE_CLASS:
            self._extra["StorageClass"] = settings.S3_STORAGE_CLASS

    def __repr__(self) -> str:
        return f"S3Storage({self.url()!r})"

    def __reduce__(self):
        """Rebuilt from its settings in another process (a pool process writing a part): a client is not
        picklable. (The settings go through the pool's pipe to a child of this process, nowhere else.)"""
        settings, attempts, threshold, chunk, concurrency = self._settings
        return _rebuilt, (settings, attempts, threshold, chunk, concurrency)

    def url(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def _key(self, name: str) -> str:
        return self.prefix + validate_name(name)

    # --- errors -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, name: str | None = None) -> Iterator[None]:
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, action, name) from None
        except (ConnectionResetError, ConnectionAbortedError) as exc:  # a socket dropped under s3transfer
            raise StorageError(f"S3 {action} failed: the connection to {_safe_url(self.endpoint)} was cut "
                               f"({type(exc).__name__})", hint="Check the network; try again.",
                               transient=Transient.STORAGE) from None
        except Exception as exc:
            cause = _boto_cause(exc)
            if cause is None:
                raise
            if isinstance(cause, ClientError):
                raise self._client_error(cause, action, name) from None
            if isinstance(cause, (NoCredentialsError, PartialCredentialsError)):
                raise StorageError(f"S3 {action} failed: no AWS credentials found", hint=_CRED_HINT) from None
            if isinstance(cause, BotoConnectionError):
                raise StorageError(
                    f"S3 {action} failed: cannot reach {_safe_url(self.endpoint)} ({type(cause).__name__})",
                    hint="Check S3_ENDPOINT_URL, S3_REGION and the network; the request was retried.",
                    transient=Transient.STORAGE,
                ) from None
            raise StorageError(f"S3 {action} failed: {type(cause).__name__}", hint="Check the S3 settings.") from None

    def _client_error(self, exc: ClientError, action: str, name: str | None) -> Exception:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        # Only the service's code and message: never the request, which carries the signature.
        detail = f"{code}: {err.get('Message') or 'no message'}"
        if code == "NoSuchBucket" or (code in _NOT_FOUND and not self._bucket_exists()):
            return StorageError(
                f"S3 bucket {self.bucket!r} does not exist at {_safe_url(self.endpoint)}",
                hint="Check S3_BUCKET_NAME and S3_ENDPOINT_URL (and create the bucket first).",
            )
        if code in _NOT_FOUND:
            return NotFoundError(
                f"no backup {name!r} in {self.url()}" if name else f"not found in {self.url()}",
                hint="See `backupctl list-s3` for the backups in the bucket.",
            )
        if code in _DENIED:
            return StorageError(f"S3 {action} denied on {self.url()} ({detail})", hint=_CRED_HINT)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if (isinstance(status, int) and status >= 500) or status == 429 or code in _PASSING_CODES:
            # Without a hint a user could not tell that this was already retried, nor what to do next.
            return StorageError(f"S3 {action} failed on {self.url(name or '')} ({detail}, HTTP {status})",
                                hint="The S3 service kept answering with a server error, also when retried with "
                                     "backoff; try again later (local backups are left as they were).",
                                transient=Transient.STORAGE)
        return StorageError(f"S3 {action} failed on {self.url(name or '')} ({detail})")

    def _bucket_exists(self) -> bool:
        # HEAD on a key answers a bare 404 both for a missing key and a missing bucket; ask the bucket.
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code")) not in {"404", "NoSuchBucket", "NotFound"}
        except Exception:  # noqa: BLE001 - unsure (no answer at all): the caller's own error is the one to report
            return True

    # --- the Storage protocol -----------------------------------------------------------------------------

    def location(self) -> str:
        return self.url()

    def _head(self, name: str) -> dict:
        with self._errors("head", name):
            return self._client.head_object(Bucket=self.bucket, Key=self._key(name))

    def _info(self, name: str, size: int, sidecars: frozenset[str], meta: dict[str, str] | None) -> BackupInfo:
        meta = meta or {}
        return BackupInfo(name, size, parse_name(name)[0], meta.get("sha256"), meta.get("migration-version"),
                          self.kind, sidecars)

    def _scan(self) -> tuple[dict[str, int], dict[str, set[str]]]:
        """One listing: {backup name: size} and {backup name: sidecar kinds} (nested keys never parse)."""
        sizes: dict[str, int] = {}
        sidecars: dict[str, set[str]] = {}
        with self._errors("list"):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix) :]
                    if parse_name(name) is not None:
                        sizes[name] = obj["Size"]
                    elif (side := parse_sidecar(name)) is not None and side[1] in CALLER_SIDECARS:
                        sidecars.setdefault(side[0], set()).add(side[1])
        return sizes, sidecars

    def list(self, details: bool = False) -> list[BackupInfo]:
        sizes, sidecars = self._scan()

        def info(name: str) -> BackupInfo | None:
            # Listings carry no user metadata: only details pay a HEAD per backup for the checksum and version.
            try:
                meta = self._head(name).get("Metadata", {}) if details else None
            except NotFoundError:  # deleted since the listing
                return None
            return self._info(name, sizes[name], frozenset(sidecars.get(name, ())), meta)

        if details:
            with ThreadPoolExecutor(max_workers=8) as pool:
                infos = [i for i in pool.map(info, sizes) if i is not None]
        else:
            infos = [info(name) for name in sizes]
        return sorted(infos, key=lambda i: parse_name(i.name), reverse=True)

    def put(self, local_path: Path, progress: ProgressFn | None = None,
            migration_version: str | None = None) -> BackupInfo:
        src = Path(local_path)
        name = validate_name(src.name)
        try:
            size = src.stat().st_size
            digest = sha256_file(src)
        except FileNotFoundError as exc:
            raise NotFoundError(f"file not found: {src}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {src}: {exc.strerror}") from exc
        recorded = read_sidecar(src)
        if recorded is not None and recorded != digest:
            # Uploading would give a damaged file a fresh, matching checksum.
            raise IntegrityError(f"checksum mismatch for {name}: the file differs from its sidecar; not uploaded")
        # The size lets verify() catch an object replaced by a shorter one that kept the recorded sha256.
        meta = {"sha256": digest, "size": str(size)}
        if migration_version and migration_version.isascii() and len(migration_version) <= 256:
            meta["migration-version"] = migration_version
        counter = _ProgressCounter("upload", size, progress)
        with self._errors("upload", name):
            self._client.upload_file(
                str(src),
                self.bucket,
                self._key(name),
                ExtraArgs={"Metadata": meta, "ContentType": "application/gzip", **self._extra},
                Callback=counter,
                Config=self._transfer,
            )
        counter.flush()
        # After the backup: a sidecar is never stored for a backup that is not there.
        kinds = set()
        for kind in CALLER_SIDECARS:
            data = local.read_small(sidecar_path(src, kind))
            if data is not None:
                self._put_sidecar(name, kind, data)
                kinds.add(kind)
        return self._info(name, size, frozenset(kinds), meta)

    def get(self, name: str, dest_dir: Path, progress: ProgressFn | None = None) -> Path:
        head = self._head(name)
        expected = head.get("Metadata", {}).get("sha256")
        dest_dir = Path(dest_dir)
        dest = dest_dir / name
        counter = _ProgressCounter("download", head.get("ContentLength"), progress)
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            with local.atomic_target(dest) as tmp:
                with open(tmp, "wb") as f:
                    with self._errors("download", name):
                        self._client.download_fileobj(
                            self.bucket, self._key(name), f, Callback=counter, Config=self._transfer
                        )
                    f.flush()
                    os.fsync(f.fileno())
                counter.flush()
                # Parts arrive out of order, so the hash is taken from the finished file rather than the stream.
                digest = sha256_file(tmp)
                if expected is not None and digest != expected:
                    raise local.mismatch(name, expected, digest)
            if expected is not None:
                write_sidecar(dest, expected)
            for kind in self._sidecar_kinds(name):
                data = self.get_sidecar(name, kind)
                if data is not None:
                    local.write_small(sidecar_path(dest, kind), data)
        except OSError as exc:
            raise StorageError(f"cannot write {name} to {dest_dir}: {exc.strerror}") from exc
        return dest

    def _sidecar_kinds(self, name: str) -> set[str]:
        """The CALLER_SIDECARS stored next to `name`, from one listing of the keys that start with its key."""
        with self._errors("list", name):
            found = self._client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(name)).get("Contents", [])
        keys = {obj["Key"] for obj in found}
        return {kind for kind in CALLER_SIDECARS if self.prefix + sidecar_name(name, kind) in keys}

    def open(self, name: str) -> BinaryIO:
        with self._errors("read", name):
            return self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]

    def delete(self, name: str) -> None:
        with self._errors("delete", name):
            # The backup first: a crash before its sidecars go leaves orphans, which list() never shows.
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))
            # One request per kind rather than DeleteObjects, which not every S3-compatible store offers. Every
            # kind, the checksum's too: a `.sha256` object copied there by hand belongs to the backup.
            for kind in SIDECARS:
                self._client.delete_object(Bucket=self.bucket, Key=self.prefix + sidecar_name(name, kind))

    def checksum(self, name: str) -> str | None:
        return self._head(name).get("Metadata", {}).get("sha256")

    def exists(self, name: str) -> bool:
        try:
            self._head(name)
            return True
        except NotFoundError:
            return False

    def verify(self, name: str) -> Verification:
        head = self._head(name)
        meta = head.get("Metadata", {})
        if not is_digest(meta.get("sha256")):
            return Verification(False, "no SHA-256 recorded in the object's metadata")
        size, recorded = head.get("ContentLength"), meta.get("size")
        if recorded is None:
            return Verification(True, "SHA-256 recorded (no size recorded)")
        if not recorded.isdigit() or int(recorded) != size:
            return Verification(False, f"size {size} differs from the recorded {recorded[:20]}")
        return Verification(True, "SHA-256 recorded, size matches the recorded one")

    def put_sidecar(self, name: str, kind: str, data: bytes) -> None:
        check_sidecar_size(caller_sidecar_name(name, kind), len(data), reading=False)
        self._head(name)  # NotFoundError: no sidecar for a backup that is not there
        self._put_sidecar(name, kind, bytes(data))

    def _put_sidecar(self, name: str, kind: str, data: bytes) -> None:
        key = self.prefix + caller_sidecar_name(name, kind)
        with self._errors("upload", name):
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/json",
                                    **self._extra)

    def get_sidecar(self, name: str, kind: str) -> bytes | None:
        side = caller_sidecar_name(name, kind)
        try:
            with self._errors("read", name):
                answer = self._client.get_object(Bucket=self.bucket, Key=self.prefix + side)
        except NotFoundError:
            return None
        body = answer["Body"]
        try:
            check_sidecar_size(side, answer.get("ContentLength") or 0, reading=True)
            with self._errors("read", name):
                data = body.read(SIDECAR_MAX_BYTES + 1)
        finally:
            body.close()
        check_sidecar_size(side, len(data), reading=True)
        return data

    # --- streamed writes (storage/s3_upload.py): a backup or a parallel backup's part, no local copy ---------

    def free_name(self, taken_at, encrypted: bool = False) -> str:
        """The first backup name for `taken_at` that no object has (`_1`, `_2`… after the first)."""
        for sequence in range(0, 10000):
            name = make_name(taken_at, sequence, encrypted)
            if not self.exists(name):
                return name
        raise StorageError(f"too many backups named for {taken_at:%Y-%m-%d %H:%M:%S} in {self.url()}")

    def begin_backup(self, name: str, migration_version: str | None) -> S3Upload:
        """A Sink that becomes the object of backup `name` when finished, its sha256 and size recorded."""
        meta = {}
        if migration_version and migration_version.isascii() and len(migration_version) <= 256:
            meta["migration-version"] = migration_version
        return S3Upload(self._client, self.bucket, self._key(name), self._errors, self._extra, metadata=meta)

    def begin_part(self, job: str, part: str) -> tuple[S3Upload, str]:
        """A Sink for a part of a parallel backup, as a temporary object; returns it and the object's key."""
        key = self._part_key(job, part)
        return S3Upload(self._client, self.bucket, key, self._errors, self._extra), key

    def _part_key(self, job: str, part: str = "") -> str:
        # Nested under the prefix: never a backup name (listings and retention pass over it).
        if not job.isalnum() or (part and not part.replace("-", "").isalnum()):
            raise ValueError(f"not a part name: {job!r}/{part!r}")
        return f"{self.prefix}{PARTS_FOLDER}{job}/{part}"

    def read_part(self, key: str) -> Iterator[bytes]:
        with self._errors("download"):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            with self._errors("download"):
                yield from body.iter_chunks(1 << 20)
        finally:
            body.close()

    def remove_part(self, key: str) -> None:
        with self._errors("delete"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def abandon_parts(self, job: str) -> None:
        """Every temporary object of a parallel backup and every unfinished upload of them, gone."""
        prefix = self._part_key(job)
        with self._errors("delete"):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    self._client.delete_object(Bucket=self.bucket, Key=obj["Key"])
            self.abandon_uploads(prefix)

    def abandon_uploads(self, prefix: str) -> None:
        """Abort the multipart uploads under `prefix` that were never completed (a writer killed mid-upload)."""
        with self._errors("delete"):
            answer = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
            for upload in answer.get("Uploads", []):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                    UploadId=upload["UploadId"])


def _rebuilt(settings, max_attempts, threshold, chunk, concurrency) -> S3Storage:
    return S3Storage(settings, max_attempts=max_attempts, multipart_threshold=threshold,
                     multipart_chunksize=chunk, max_concurrency=concurrency)
