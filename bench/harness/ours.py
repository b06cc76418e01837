"""Our commands, as a user types them: `backupctl create|diff|restore`, queued (a worker runs the job) or
--local, always with an explicit --database-url (no password: a queued command refuses one), and what their
output says (where the backup went, which tables the diff found changed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .context import DatasetRun, Keys
from .measure import Command

SAVED_TO = re.compile(r"^Saved to: (.+)$", re.MULTILINE)
DIFF_LINE = re.compile(r"^\s+(\S+): (\d+) → (\d+) \(([+-]?\d+)\)(?:\s+\[(.*)\])?", re.MULTILINE)
AGE_RECIPIENT = re.compile(r"\bage1[0-9a-z]{20,}\b")
AGE_IDENTITY = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]+")


def _ctl(run: DatasetRun, *args: str, env: dict | None = None) -> Command:
    return Command(run.engine.backupctl() + list(args), env or run.ours_env(), cwd=str(run.dir))


def create(run: DatasetRun, local: bool, jobs: int | None = None, encrypted: bool = False) -> Command:
    args = ["create", "--database-url", run.source_url]
    if local:
        args.append("--local")
    if jobs is not None:
        args += ["--jobs", str(jobs)]
    env = run.ours_env(BACKUP_AGE_RECIPIENTS=run.keys.recipient) if encrypted else None
    return _ctl(run, *args, env=env)


def restore(run: DatasetRun, file_key: str, local: bool, encrypted: bool = False) -> Command:
    """restore FILE --yes into the target; a queued one names the file (the worker reads its BACKUP_DIR)."""
    path = run.files[file_key]
    env = run.ours_env(BACKUP_AGE_IDENTITY_FILE=str(run.keys.identity_file)) if encrypted else None
    args = ["restore", str(path) if local else path.name, "--yes", "--database-url", run.target_url]
    return _ctl(run, *args, *(["--local"] if local else []), env=env)


def diff(run: DatasetRun, file_key: str, local: bool, against_target: bool) -> Command:
    path = run.files[file_key]
    url = run.target_url if against_target else run.source_url
    args = ["diff", str(path) if local else path.name, "--database-url", url]
    return _ctl(run, *args, *(["--local"] if local else []))


def saved_to(stdout: str, backup_dir: Path) -> Path | None:
    m = SAVED_TO.findall(stdout)
    if not m:
        return None
    path = Path(m[-1].strip())
    return path if path.is_absolute() else backup_dir / path.name


def remove_backup(path: Path | None) -> None:
    """A backup and its sidecars (checksum, manifest: `<name>.*`)."""
    if path is None:
        return
    for f in path.parent.glob(path.name + "*"):
        f.unlink(missing_ok=True)


def diff_changes(stdout: str) -> dict | None:
    """Per table with changes: [insert, delete, change] as the diff printed them; None if nothing parsed."""
    lines = DIFF_LINE.findall(stdout)
    if not lines:
        return None
    changes = {}
    for table, current, backup, _total, bracket in lines:
        counts = {k: int(n) for k, n in re.findall(r"(insert|delete|change) (\d+)", bracket or "")}
        if counts or current != backup:
            changes[table] = [counts.get("insert", 0), counts.get("delete", 0), counts.get("change", 0)]
    return changes


def make_keys(run: DatasetRun, directory: Path) -> Keys | str:
    """An age identity from `backupctl keygen` (issue 18), or why not. Its interface is detected from --help:
    an -o/--output option, else a file argument, else the identity on stdout."""
    help_text = run.engine.features.get("keygen_help", "")
    identity = directory / "age-identity.txt"
    identity.unlink(missing_ok=True)
    if re.search(r"(-o|--output)\b", help_text):
        args = ["keygen", "--output", str(identity)] if "--output" in help_text else ["keygen", "-o", str(identity)]
    elif re.search(r"Usage: .*keygen .*\b(FILE|PATH|IDENTITY)", help_text):
        args = ["keygen", str(identity)]
    else:
        args = ["keygen"]
    p = subprocess.run(run.engine.backupctl() + args, env=run.ours_env(), cwd=run.dir, check=False,
                       capture_output=True, text=True)
    if p.returncode != 0:
        return f"`backupctl {' '.join(args)}` failed: {(p.stderr or p.stdout).strip()[-300:]}"
    if not identity.exists():
        secret = AGE_IDENTITY.search(p.stdout)
        if not secret:
            return "`backupctl keygen` wrote no identity file and printed no AGE-SECRET-KEY"
        identity.write_text(secret.group(0) + "\n")
        identity.chmod(0o600)
    recipient = AGE_RECIPIENT.search(p.stdout + p.stderr) or AGE_RECIPIENT.search(identity.read_text())
    if not recipient:
        return "`backupctl keygen` printed no public key (age1...)"
    return Keys(identity, recipient.group(0))
