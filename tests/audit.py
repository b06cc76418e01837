"""`backupctl` in a fresh interpreter with an audit hook on `open`: every path it opens for writing, for tests that
prove something is never written to the local disk (a backup streamed to S3, plaintext of an encrypted backup)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

WRITES_AUDIT = """
import os, sys
written = []
def hook(event, args):
    if event == "open" and args[0] is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] or "", args[2] or 0
        if any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR):
            written.append(os.fsdecode(args[0]))
sys.addaudithook(hook)
from backup_tasks.cli import main
sys.argv = ["backupctl", *sys.argv[1:]]
try:
    main()
finally:
    sys.stderr.write("WRITTEN " + repr(written) + "\\n")
"""


def run_writes_audited(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """(the finished process, every path it opened for writing)."""
    proc = subprocess.run([sys.executable, "-c", WRITES_AUDIT, *args], env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
                          capture_output=True, text=True, timeout=300)
    found = re.search(r"WRITTEN (\[.*\])", proc.stderr)
    return proc, ast.literal_eval(found.group(1)) if found else []
