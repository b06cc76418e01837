"""The engine: create, diff, restore and verify backups. No Celery, no boto3.

The entry points are imported on first use (PEP 562): a helper process that runs one module of this package
(core/json_rows.py, the diff's database reader) then loads that module's imports only, not the whole engine with
pydantic's models (measured: 40 MB of RSS and 130 ms of imports for the child, against ~20 MB and ~40 ms).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backup import create_backup, run_backup
    from .diff import calculate_diff
    from .restore import restore_backup
    from .verify import verify_backup

_HOMES = {"create_backup": "backup", "run_backup": "backup", "calculate_diff": "diff",
          "restore_backup": "restore", "verify_backup": "verify"}

__all__ = ["calculate_diff", "create_backup", "restore_backup", "run_backup", "verify_backup"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
