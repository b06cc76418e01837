"""The error tree. Every expected failure is a BackupError with a user-facing message, a hint and an exit code.

The CLI turns these into `Error: …` / `Hint: …` lines and the exit code in one place (cli/_errors.py); tasks
turn them into JSON-safe failure payloads. Subclassing RuntimeError keeps the seed's contract
("Raises: RuntimeError") for callers of the Python API.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # unexpected failure
    USAGE = 2  # bad arguments or configuration
    NOT_FOUND = 3  # backup file or object does not exist
    INVALID_BACKUP = 4  # corrupt, truncated, tampered or foreign file
    SCHEMA_MISMATCH = 5  # the database does not have the backup's tables/columns
    DATABASE = 6  # database unreachable or a statement failed
    STORAGE = 7  # local directory or S3 failure
    BUSY = 8  # another job holds the lock for this database
    QUEUE = 9  # broker or worker unreachable
    ABORTED = 10  # the user declined, or no terminal to confirm on
    STALE = 11  # `check`: the newest good backup is too old
    DECRYPTION = 12  # encrypted backup: no identity, a wrong one, or ciphertext that fails authentication
    DRILL_STALE = 13  # `check --max-drill-age`: the newest successful restore drill is too old, or there is none
    DRILL_FAILED = 14  # a restore drill ran and the backup did not restore exactly (report next to the backup)
    INTERRUPTED = 130


class Transient(str, Enum):
    """What kind of passing trouble an error is, so a retry policy can decide without guessing.

    Set where the error is raised, by the code that knows its cause (pg/connection.py for a connection that could
    not be made, storage/s3.py for throttling or an unreachable endpoint); tasks retry the kinds they declare."""

    DATABASE = "database"  # the server could not be reached or refused new connections for now
    STORAGE = "storage"  # the object store throttled, answered 5xx, or could not be reached


class BackupError(RuntimeError):
    exit_code: ExitCode = ExitCode.ERROR
    default_hint: str | None = None

    def __init__(self, message: str, hint: str | None = None, *, transient: Transient | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.transient = transient

    def to_dict(self) -> dict:
        return {
            "type": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
            "transient": self.transient.value if self.transient else None,
        }


class ConfigError(BackupError):
    exit_code = ExitCode.USAGE


class UsageError(BackupError):
    exit_code = ExitCode.USAGE


class NotFoundError(BackupError):
    exit_code = ExitCode.NOT_FOUND


class InvalidBackupError(BackupError):
    """The file is not a complete, well-formed backup of this tool's format."""

    exit_code = ExitCode.INVALID_BACKUP
    default_hint = "Check the file with `backupctl verify FILE`; use another backup if it is damaged."


class IntegrityError(InvalidBackupError):
    """The file's SHA-256 differs from the one recorded when it was created."""

    default_hint = "The file was changed or damaged after it was written; use another backup."


class SchemaMismatchError(BackupError):
    exit_code = ExitCode.SCHEMA_MISMATCH
    default_hint = (
        "Bring the database schema to the backup's migration version (e.g. `alembic upgrade <version>`) and retry."
    )


class DatabaseError(BackupError):
    exit_code = ExitCode.DATABASE
    default_hint = "Check DATABASE_URL and that PostgreSQL is running and reachable."


class RestoreError(DatabaseError):
    """A statement failed during restore; the transaction was rolled back."""

    default_hint = "Nothing was changed: the restore ran in one transaction and was rolled back."


class StorageError(BackupError):
    exit_code = ExitCode.STORAGE


class BusyError(BackupError):
    exit_code = ExitCode.BUSY
    default_hint = "Wait for the running job to finish (see `backupctl status ID`), then retry."


class QueueError(BackupError):
    exit_code = ExitCode.QUEUE
    default_hint = "Start a worker with `make worker`, or run the command in-process with --local."


class AbortedError(BackupError):
    exit_code = ExitCode.ABORTED


class StaleBackupError(BackupError):
    exit_code = ExitCode.STALE


class DecryptionError(BackupError):
    """An age-encrypted backup that cannot be decrypted: no identity configured, none that matches, or
    ciphertext that fails authentication. Nothing was changed."""

    exit_code = ExitCode.DECRYPTION
    default_hint = "Set BACKUP_AGE_IDENTITY_FILE to an identity the backup was encrypted for."


class DrillStaleError(BackupError):
    exit_code = ExitCode.DRILL_STALE
    default_hint = ("Run `backupctl drill` (or set BACKUP_DRILL_CRON for Beat) and look at the last drill reports "
                    "(`backupctl list`).")


class DrillFailedError(BackupError):
    """A drill ran to its end (or to the failing step) and found the backup does not restore exactly."""

    exit_code = ExitCode.DRILL_FAILED
    default_hint = "The drill report (<backup>.drill.json, next to the backup) lists every failing check."


def from_dict(payload: dict) -> BackupError:
    """The BackupError that to_dict() described (same class, hint, exit code, transient kind): how a failure
    crosses a process boundary (a pool process, a Celery worker) without losing what the user is told."""
    cls = globals().get(str(payload.get("type")))
    if not (isinstance(cls, type) and issubclass(cls, BackupError)):
        cls = BackupError
    kind = payload.get("transient")
    error = cls(str(payload.get("message", "unknown error")), payload.get("hint"),
                transient=Transient(kind) if kind in {t.value for t in Transient} else None)
    code = payload.get("exit_code")
    if isinstance(code, int) and code != int(error.exit_code) and code in {c.value for c in ExitCode}:
        error.exit_code = ExitCode(code)
    return error
