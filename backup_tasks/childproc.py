"""Helper processes that stream bytes to their parent: a job as JSON on stdin, the stream on stdout, a failure as
one JSON line (BackupError.to_dict) on stderr and a non-zero exit.

Why processes: work that must overlap other Python work in the same job (the diff reads the database and decodes
the file at once) stalls when it shares one interpreter's GIL (measured: psycopg2's COPY next to a busy thread,
150 s instead of 1.1 s for 2 M rows). A child has a thread of its own and a core of its own; the parent reads the
pipe a MiB at a time. Secrets (a database URL) travel in the environment, never on the command line (`ps`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import errors
from .errors import BackupError

READ_BYTES = 1 << 20
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the child imports this same copy of backup_tasks


def _widen_pipe(fd: int) -> None:
    """A pipe of READ_BYTES instead of Linux's 64 KiB: the child runs on while the parent is busy with the other
    side of its work (the diff decompressing the file) rather than stalling at every 64 KiB."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), READ_BYTES)
    except (ImportError, OSError):
        pass  # not Linux, or above /proc/sys/fs/pipe-max-size: the default pipe works, only with more stalls


class Child:
    """A running helper `python -m MODULE`, killed if the parent stops reading early."""

    def __init__(self, module: str, job: dict[str, Any], env: dict[str, str] | None = None):
        environ = {**os.environ, **(env or {}),
                   "PYTHONPATH": os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=environ)
        self._stderr = _Drain(self.proc.stderr)  # read as it comes: a child blocked on a full stderr never ends
        _widen_pipe(self.proc.stdout.fileno())
        try:
            self.proc.stdin.write(json.dumps(job).encode())
            self.proc.stdin.close()
        except BrokenPipeError:
            pass  # the child is gone already: its exit code and message say why

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()

    def chunks(self, size: int = READ_BYTES) -> Iterator[bytes]:
        while chunk := os.read(self.fd, size):
            yield chunk

    def finish(self, stopped: BackupError) -> None:
        """After the stream ended: the child's own failure if it had one (a failed child also leaves its output
        incomplete, so its message comes first), else nothing."""
        if self.proc.wait() != 0:
            raise self.error(stopped)

    def error(self, stopped: BackupError) -> BackupError:
        printed = self._stderr.text().decode("utf-8", "replace")
        for line in reversed(printed.splitlines()):
            try:
                failure = json.loads(line)
            except ValueError:
                continue
            if isinstance(failure, dict) and "message" in failure:
                return errors.from_dict(failure)
        last = (printed.strip().splitlines() or [f"exit code {self.proc.returncode}"])[-1]
        return type(stopped)(f"{stopped.message} ({last})", stopped.hint)

    def close(self) -> None:
        if self.proc.poll() is None:  # stopped early (an error on the other side, Ctrl-C): the child goes too
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._stderr.thread.join()


class _Drain:
    """The child's stderr, read in a thread; the last 64 KiB are kept."""

    def __init__(self, stream):
        self._stream = stream
        self._data = bytearray()
        self.thread = threading.Thread(target=self._run, name="child-stderr", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self._stream:
            while chunk := self._stream.read1(65536):
                self._data += chunk
                del self._data[:-65536]

    def text(self) -> bytes:
        self.thread.join()
        return bytes(self._data)


def read_job() -> dict[str, Any]:
    """In the child: its job."""
    return json.load(sys.stdin)


def report_failure(error: BackupError) -> int:
    """In the child: hand the failure to the parent (which raises it as the same BackupError); the exit code."""
    sys.stderr.write(json.dumps(error.to_dict()) + "\n")
    sys.stderr.flush()
    return 1


def stdout_stream():
    """In the child: stdout as a C-buffered binary writer (a MiB), for a stream of small writes."""
    return open(sys.stdout.fileno(), "wb", buffering=READ_BYTES, closefd=False)
