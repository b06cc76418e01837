"""The layers are a promise the build checks (import-linter contracts in pyproject.toml): the tree keeps them, and a
contract broken on purpose fails the check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "backup_tasks", tmp_path / "backup_tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(ROOT / "beat_schedule.py", tmp_path / "beat_schedule.py")
    return tmp_path


def test_a_driver_import_in_the_engine_breaks_the_build(tmp_path):
    root = _copy(tmp_path)
    verify = root / "backup_tasks" / "core" / "verify.py"
    verify.write_text(verify.read_text() + "\nimport psycopg2  # noqa: E402,F401  (deliberately broken)\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "Only pg/ imports psycopg2 BROKEN" in result.stdout.replace("\n", " ")


def test_a_lower_layer_reaching_up_breaks_the_build(tmp_path):
    root = _copy(tmp_path)
    reader = root / "backup_tasks" / "archive" / "writer.py"
    reader.write_text(reader.read_text() + "\nfrom ..core import options  # noqa: E402,F401  (deliberately broken)\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "backup_tasks.archive is not allowed to import backup_tasks.core" in result.stdout
