"""`backupctl` on a pseudo-terminal, for the tests of what a person is asked (restore confirmations)."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

BACKUPCTL = str(Path(sys.executable).parent / "backupctl")


def on_terminal(args: list[str], env: dict[str, str], answer: str | None, timeout: float = 60,
                cwd: str = "/") -> tuple[int, str]:
    """Run `backupctl ARGS` on a pseudo-terminal; type `answer` when it asks. Returns (exit code, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes backupctl, with the pty as its terminal
        try:
            os.chdir(cwd)
            os.execve(BACKUPCTL, [BACKUPCTL, *args], env)
        finally:
            os._exit(127)
    output, asked = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not data:
                break
            output += data
            if answer is not None and not asked and b"Restore into database" in output:
                os.write(fd, answer.encode() + b"\r")
                asked = True
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode("utf-8", "replace")
