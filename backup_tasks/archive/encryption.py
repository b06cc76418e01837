"""age encryption of the backup stream (https://age-encryption.org/v1): the only module that imports pyrage.

A backup is gzip, then age: the gzip bytes are encrypted as they are produced, to the public keys of
BACKUP_AGE_RECIPIENTS, so no secret key is needed to back up; readers decrypt as they read, with the identities of
BACKUP_AGE_IDENTITY_FILE. The result is one standard age file (`age -d -i key.txt FILE | gunzip` reads it).

pyrage streams only between two file-like objects, in one call that holds the GIL except while it calls them
(`encrypt_io(reader, writer)`, `decrypt_io(reader, writer)`); the writer and the reader of this tool push and pull
bytes instead. So each direction runs the pyrage call in a thread of its own, joined to ours by a _Pipe that
holds at most PIPE_BYTES: memory stays bounded whatever the backup's size (measured: ~700 MB/s either way).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyrage
from pyrage import x25519

from ..errors import BackupError, ConfigError, DecryptionError

MAGIC = b"age-encryption.org/v1\n"  # every binary age file starts so; the header names no recipient
PIPE_BYTES = 1 << 20
HANDOFF_BYTES = 256 << 10


@dataclass(frozen=True)
class Keys:
    """What the engine encrypts to and decrypts with. The identity file is read only when an encrypted file is
    met, and its secret never leaves this module (not in options, results, errors or logs)."""

    recipients: tuple[str, ...] = ()  # age1… public keys: every backup is encrypted to all of them
    identity_file: Path | None = field(default=None)

    @property
    def encrypts(self) -> bool:
        return bool(self.recipients)


NO_KEYS = Keys()


def parse_recipients(text: str, where: str) -> tuple[str, ...]:
    """age1… public keys separated by commas, spaces or lines (`#` starts a comment, as in `age -R` files)."""
    keys: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        keys += [k for k in line.replace(",", " ").split() if k]
    for key in keys:
        try:
            x25519.Recipient.from_str(key)
        except Exception:  # noqa: BLE001 - pyrage.RecipientError and ValueError alike
            shown = key if key.startswith("age1") else key[:8] + "…"  # a pasted secret key is never echoed
            raise ConfigError(f"{where}: not an age public key: {shown}",
                              hint="A recipient is the `age1…` line `backupctl keygen` or `age-keygen -y` prints."
                              ) from None
    return tuple(dict.fromkeys(keys))


def generate_identity() -> tuple[str, str]:
    """(secret identity `AGE-SECRET-KEY-1…`, its public key `age1…`)."""
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def identity_file_text(secret: str, public: str, created: str) -> str:
    """The identity file `age-keygen` writes, so `age -d -i FILE` reads it too."""
    return f"# created: {created}\n# public key: {public}\n{secret}\n"


def load_identities(path: Path | None) -> list[Any]:
    """The x25519 identities of an age identity file (one per line, `#` comments). Errors never quote it."""
    if path is None:
        raise _identity_refusal(DecryptionError(
            "the backup is encrypted and no identity is configured",
            hint="Set BACKUP_AGE_IDENTITY_FILE to the age identity file (the secret key) it was encrypted for."))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DecryptionError(f"age identity file not found: {path}",
                              hint="Check BACKUP_AGE_IDENTITY_FILE; `backupctl keygen` makes a new one.") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not text"
        raise DecryptionError(f"cannot read the age identity file {path}: {why}",
                              hint="Check BACKUP_AGE_IDENTITY_FILE and its permissions.") from None
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            try:
                identities.append(x25519.Identity.from_str(line))
            except Exception:  # noqa: BLE001 - the line is a secret: not quoted
                raise DecryptionError(f"{path} holds a line that is not an age identity",
                                      hint="An identity file has `AGE-SECRET-KEY-1…` lines, as "
                                           "`backupctl keygen` or `age-keygen` write them.") from None
    if not identities:
        raise DecryptionError(f"{path} holds no age identity",
                              hint="An identity file has `AGE-SECRET-KEY-1…` lines.")
    return identities


def public_keys(path: Path | None) -> list[str]:
    """The public keys of an identity file's identities (for hints; [] when it cannot be read)."""
    try:
        return [str(i.to_public()) for i in load_identities(path)]
    except DecryptionError:
        return []


def is_encrypted(stream: BinaryIO) -> bool:
    """Whether a seekable stream holds an age file (it is left at its start)."""
    head = stream.read(len(MAGIC))
    stream.seek(0)
    return head == MAGIC


class _Cancelled(Exception):
    """The other side of a pipe gave up."""


class _Pipe:
    """Bytes from one thread to another, at most `limit` of them waiting: put() blocks while the reader is behind.
    fail() from either side wakes both and makes every later call raise (nothing is left blocked)."""

    def __init__(self, limit: int = PIPE_BYTES):
        self._cv = threading.Condition()
        self._chunks: deque[memoryview] = deque()
        self._waiting = 0
        self._limit = limit
        self._closed = False
        self._failed: BaseException | None = None

    def put(self, data) -> None:
        with self._cv:
            while self._waiting >= self._limit and self._failed is None:
                self._cv.wait()
            if self._failed is not None:
                raise _Cancelled()
            self._chunks.append(memoryview(bytes(data)))
            self._waiting += len(data)
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def fail(self, error: BaseException | None = None) -> None:
        with self._cv:
            if self._failed is None:
                self._failed = error or _Cancelled()
            self._chunks.clear()
            self._waiting = 0
            self._cv.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cv:
            while not self._chunks and not self._closed and self._failed is None:
                self._cv.wait()
            if self._failed is not None:
                raise self._failed
            n = self._waiting if n is None or n < 0 else n
            out = []
            while self._chunks and n > 0:
                chunk = self._chunks[0]
                if len(chunk) > n:
                    out.append(chunk[:n])
                    self._chunks[0] = chunk[n:]
                    taken = n
                else:
                    out.append(self._chunks.popleft())
                    taken = len(chunk)
                n -= taken
                self._waiting -= taken
            self._cv.notify_all()
            return b"".join(out)

    def readable(self) -> bool:
        return True



class _Gathering:
    """pyrage.decrypt_io's writer: its 8 KiB writes gathered into HANDOFF_BYTES pieces before they cross to the
    reading thread (each handoff wakes it; per 8 KiB that doubled the cost of decrypting, measured)."""

    def __init__(self, pipe: _Pipe):
        self._pipe = pipe
        self._buffer = bytearray()

    def write(self, data) -> int:
        self._buffer += data
        if len(self._buffer) >= HANDOFF_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._pipe.put(self._buffer)
            self._buffer = bytearray()


class _SinkWriter:
    """pyrage's writer: ciphertext into the sink, counted and hashed (the checksum describes the stored bytes).
    The sink's own exception is kept, since pyrage would turn it into a bare "EncryptError"."""

    def __init__(self, owner: EncryptingSink):
        self._owner = owner

    def write(self, data) -> int:
        owner = self._owner
        try:
            owner.inner.write(data)
        except BaseException as exc:
            owner.error = owner.error or exc
            raise
        owner.sha256.update(data)
        owner.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


class EncryptingSink:
    """A Sink (archive/writer.py) that age-encrypts what is written to it into `inner` as it comes. After
    finish(), `stored` is the (size, sha256) of the ciphertext, which is what the destination holds."""

    def __init__(self, inner: Any, recipients: Iterable[str]):
        self.inner = inner
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.error: BaseException | None = None
        self._pipe = _Pipe()
        keys = [x25519.Recipient.from_str(r) for r in recipients]
        self._thread = threading.Thread(target=self._run, args=(keys,), name="age-encrypt", daemon=True)
        self._thread.start()

    def _run(self, keys: list) -> None:
        try:
            pyrage.encrypt_io(self._pipe, _SinkWriter(self), keys)
        except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
            self.error = self.error or exc
            self._pipe.fail(exc)

    def write(self, data) -> int:
        try:
            self._pipe.put(data)
        except _Cancelled:
            self._raise()
        return len(data)

    def _raise(self) -> None:
        """The sink's own failure as it was (a full disk, an S3 error), else pyrage's as an OSError of writing."""
        error = self.error
        if isinstance(error, (OSError, BackupError)) or (error is not None and not isinstance(error, Exception)):
            raise error
        raise OSError(f"age encryption failed: {error or 'stopped'}")

    def finish(self) -> None:
        self._pipe.close()
        self._thread.join()
        if self.error is not None:
            self._raise()
        self.inner.finish()

    @property
    def stored(self) -> tuple[int, str]:
        return self.size, self.sha256.hexdigest()

    def abort(self) -> None:
        self._pipe.fail()
        self._thread.join()
        self.inner.abort()


class DecryptingReader(io.RawIOBase):
    """The plaintext of an age file, read as a stream (`read(n)`), decrypted by a thread that stays at most
    PIPE_BYTES ahead. Failures come out of read() as DecryptionErrors: a wrong identity before any byte, a chunk
    that fails authentication (truncated or altered) before that chunk's bytes."""

    def __init__(self, raw: BinaryIO, identities: list, name: str):
        self.name = name
        self._raw = raw
        self._pipe = _Pipe()
        self._thread = threading.Thread(target=self._run, args=(identities,), name="age-decrypt", daemon=True)
        self._thread.start()

    def _run(self, identities: list) -> None:
        out = _Gathering(self._pipe)
        try:
            pyrage.decrypt_io(self._raw, out, identities)
            out.flush()
        except _Cancelled:
            return
        except pyrage.DecryptError as exc:
            self._pipe.fail(_refusal(self.name, str(exc)))
        except BaseException as exc:  # noqa: BLE001 - pyrage's OSError("decryption error"), or reading failed
            self._pipe.fail(_refusal(self.name, str(exc)))
        else:
            self._pipe.close()

    def read(self, n: int = -1) -> bytes:
        return self._pipe.read(n)

    def readinto(self, buffer) -> int:
        data = self._pipe.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._pipe.fail()  # a reader that stops early (a header read) stops the thread too
        self._thread.join()
        super().close()


def _identity_refusal(error: DecryptionError) -> DecryptionError:
    error.wants_recipients = True  # see wants_recipients()
    return error


def wants_recipients(error: DecryptionError) -> bool:
    """Whether the failure is about which identity is needed (none configured, or none that matches), so the
    caller's hint should name the backup's recipients (from its manifest: the file's header does not)."""
    return getattr(error, "wants_recipients", False)


def _refusal(name: str, detail: str) -> DecryptionError:
    if "No matching keys" in detail:
        return _identity_refusal(DecryptionError(f"{name}: no identity of BACKUP_AGE_IDENTITY_FILE can decrypt it"))
    if "decryption error" in detail or "MAC" in detail:
        return DecryptionError(f"{name} fails age authentication: it was truncated or altered after it was written",
                               hint="Nothing was changed. Use another backup, or fetch this one again.")
    return DecryptionError(f"{name} is not a readable age file ({detail})",
                           hint="Nothing was changed. Use another backup, or fetch this one again.")


def open_decrypted(raw: BinaryIO, keys: Keys, name: str) -> BinaryIO | DecryptingReader:
    """`raw` itself when it is not an age file, else its plaintext (the identities read now)."""
    if not is_encrypted(raw):
        return raw
    return DecryptingReader(raw, load_identities(keys.identity_file), name)


def write_identity_file(path: Path, text: str) -> None:
    """A new file readable by its owner only, never replacing one (an identity lost is its backups lost)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


class _ChunksRaw(io.RawIOBase):
    """An iterator of byte chunks as a readable raw stream (pyrage reads file-likes only)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._pending = memoryview(chunk)
        n = len(self._pending) if n is None or n < 0 else n
        out, self._pending = self._pending[:n], self._pending[n:]
        return bytes(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class PartKey:
    """A key pair made for one parallel backup, so its parts are never plaintext in their part store (hidden
    files, temporary S3 objects) either: the part writers get the public key (`recipient`, in the PartTask), the
    secret stays in the coordinator's memory and dies with it. The coordinator decrypts each part as it appends
    it to the backup's own age stream."""

    def __init__(self) -> None:
        self._identity = x25519.Identity.generate()
        self.recipient = str(self._identity.to_public())

    def __repr__(self) -> str:
        return f"PartKey(recipient={self.recipient})"

    def __reduce__(self):
        raise TypeError("a PartKey never leaves the coordinator's process")

    def open(self, chunks: Iterable[bytes], name: str) -> Iterable[bytes]:
        """The plaintext of a part, from its ciphertext's chunks."""
        reader = DecryptingReader(_ChunksRaw(chunks), [self._identity], name)
        try:
            while data := reader.read(1 << 20):
                yield data
        finally:
            reader.close()
