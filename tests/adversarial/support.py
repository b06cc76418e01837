"""Helpers for the adversarial suite: a small seeded database, the CLI in a subprocess, backup documents taken
apart and put back together (independently of backup_tasks.archive), and a gzip decompression-bomb writer.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import _admin, db_url, run_sql

BACKUPCTL = str(Path(sys.executable).parent / "backupctl")

# The small database every bad-input, fuzz and security test starts from: a PK table with a text / bool / int /
# numeric / timestamptz / bytea / jsonb mix, a table without a key that owns a sequence, a table with a
# composite key and a foreign key, and `y`, the table the SQL-injection names try to drop.
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, active bool, qty int, price numeric(10, 2),
                    created timestamptz, blob bytea, meta jsonb);
CREATE TABLE logs (id serial, msg text, level smallint);
CREATE TABLE tags (item_id int REFERENCES items (id), tag text, PRIMARY KEY (item_id, tag));
CREATE TABLE y (v text);
"""
DATA = r"""
INSERT INTO items
SELECT i, 'item ' || i || CASE i WHEN 3 THEN E' "quoted", back\\slash\ttab\nnewline' WHEN 4 THEN ' ünï☃' ELSE '' END,
       CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END, i * 3, i * 1.5,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 day 1 hour', decode(md5(i::text), 'hex'),
       jsonb_build_object('k', i, 'tags', jsonb_build_array('a', i))
FROM generate_series(1, 8) i;
INSERT INTO logs (msg, level) SELECT CASE WHEN i = 2 THEN '' WHEN i = 5 THEN NULL ELSE 'log ' || i END, i
FROM generate_series(1, 6) i;
INSERT INTO tags VALUES (1, 'red'), (1, 'blue'), (2, 'red'), (5, 'null'), (8, '');
INSERT INTO y VALUES ('keep me'), ('me too');
"""
TABLES = ("items", "logs", "tags", "y")


def new_database(seed: bool = True) -> tuple[str, str]:
    """A new database (seeded unless told otherwise); the caller drops it with drop_database()."""
    name = f"bt_adv_{uuid.uuid4().hex[:10]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = db_url(name)
    if seed:
        run_sql(url, SCHEMA + DATA)
    return name, url


def drop_database(name: str) -> None:
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


# -- the CLI in a subprocess -------------------------------------------------------------------------------------

def cli_env(**extra: str) -> dict[str, str]:
    """A clean environment: nothing from the developer's shell (DATABASE_URL, AWS_*, S3_*) leaks in."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "AWS_EC2_METADATA_DISABLED": "true"}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None, timeout: float = 120,
        **popen: Any) -> subprocess.CompletedProcess:
    """Run `backupctl ARGS` and return the finished process (text stdout/stderr). cwd defaults to a place
    without a `.env`."""
    return subprocess.run([BACKUPCTL, *args], env=env or cli_env(), cwd=cwd or "/", capture_output=True,
                          text=True, timeout=timeout, **popen)


def cli_start(*args: str, env: dict[str, str] | None = None, cwd: Path | str | None = None,
              **popen: Any) -> subprocess.Popen:
    return subprocess.Popen([BACKUPCTL, *args], env=env or cli_env(), cwd=cwd or "/", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def assert_clean_error(proc: subprocess.CompletedProcess, exit_code: int | None = None) -> str:
    """Non-zero exit (the given one, if any); stderr is exactly `Error: …` plus an optional `Hint: …`; no
    traceback anywhere. Returns the error line."""
    shown = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode != 0, shown
    if exit_code is not None:
        assert proc.returncode == exit_code, shown
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    lines = proc.stderr.splitlines()
    assert 1 <= len(lines) <= 2, shown
    assert lines[0].startswith("Error: ") and len(lines[0]) > len("Error: "), shown
    if len(lines) == 2:
        assert lines[1].startswith("Hint: ") and len(lines[1]) > len("Hint: "), shown
    return lines[0]


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, \
        f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


# -- documents ---------------------------------------------------------------------------------------------------

def gz(data: bytes | str) -> bytes:
    return gzip.compress(data.encode() if isinstance(data, str) else data, compresslevel=6, mtime=0)


def gunzip(path: Path) -> bytes:
    return gzip.decompress(Path(path).read_bytes())


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def layout_dump(doc: Any) -> bytes | None:
    """`doc` in the tool's own line layout (README "File format"), written here independently of the tool's
    writer; None when the document's shape cannot be written that way (the caller then uses json.dumps)."""
    if not isinstance(doc, dict) or list(doc) != ["metadata", "tables"] or not isinstance(doc["tables"], dict):
        return None
    parts = ['{"metadata":' + compact(doc["metadata"]) + ',"tables":{\n']
    for i, (key, table) in enumerate(doc["tables"].items()):
        if not isinstance(table, dict) or not isinstance(table.get("data"), list) or "row_count" not in table:
            return None
        head = {k: v for k, v in table.items() if k not in ("data", "row_count")}
        head_text = compact(head)[:-1]
        parts.append((",\n" if i else "") + compact(key) + ":" + head_text + ("," if head else "") + '"data":[\n')
        rows = table["data"]
        parts.append(",\n".join(compact(r) for r in rows))
        parts.append(("\n]," if rows else "],") + '"row_count":' + compact(table["row_count"]) + "}")
    parts.append("\n}}\n")
    return "".join(parts).encode()


def write_bomb(path: Path, prefix: bytes, filler: bytes, total: int, suffix: bytes = b"") -> int:
    """A valid gzip file of `prefix`, then `filler` repeated to `total` bytes, then `suffix`; written without
    holding the output in memory (one deflate block repeated). Returns the decompressed size."""
    chunk = filler * ((1 << 20) // len(filler))
    n = max(1, total // len(chunk))
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    first = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    repeat = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)  # identical from here on: the window is full
    tail = comp.compress(suffix) + comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    size = len(prefix) + n * len(chunk) + len(suffix)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        f.write(head + first)
        for _ in range(n - 1):
            f.write(repeat)
        f.write(tail + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF))
    return size


def mutate_doc(text: str, change: Callable[[dict], Any]) -> dict:
    doc = json.loads(text)
    change(doc)
    return doc


# -- every file the CLI writes ----------------------------------------------------------------------------------

_AUDIT_RUNNER = r'''
import os, sys
_log = open(os.environ.pop("BT_AUDIT_LOG"), "a", buffering=1)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_EVENTS = ("os.mkdir", "os.rename", "os.link", "os.symlink", "os.remove", "os.rmdir", "os.truncate", "os.chmod",
           "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile")

def _path(p, dir_fd=None):
    if not isinstance(p, (str, bytes, os.PathLike)):
        return None
    p = os.fsdecode(p)
    if isinstance(dir_fd, int) and not os.path.isabs(p):  # relative to a directory fd (shutil.rmtree does this)
        return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), p)
    return os.path.abspath(p)

_DIR_FD = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2}

def _hook(event, args):
    try:
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE)
            if writes and _path(path):
                _log.write("open\t" + _path(path) + "\n")
        elif event in _EVENTS:
            if event in _DIR_FD:
                dir_fd = args[_DIR_FD[event]] if len(args) > _DIR_FD[event] else None
                paths = [_path(args[0], dir_fd)]
            else:
                paths = [_path(a) for a in args[:2]]
            for path in filter(None, paths):
                _log.write(event + "\t" + path + "\n")
    except Exception:
        pass

sys.addaudithook(_hook)
sys.argv[0] = "backupctl"
from backup_tasks.cli import main
main()
'''


def cli_audited(log: Path, *args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """`backupctl ARGS` with a Python audit hook that logs every path opened for writing, created, renamed,
    linked or removed (to `log`, one `event<TAB>absolute path` a line)."""
    return subprocess.run([sys.executable, "-c", _AUDIT_RUNNER, *args], env={**env, "BT_AUDIT_LOG": str(log)},
                          cwd="/", capture_output=True, text=True, timeout=timeout)


def written_paths(log: Path) -> list[tuple[str, Path]]:
    if not log.exists():
        return []
    return [(event, Path(path)) for event, path in (line.split("\t", 1) for line in log.read_text().splitlines())
            if not path.startswith("/dev/")]
