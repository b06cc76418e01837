"""The engine: create, diff, restore and verify backups. No Celery, no boto3."""

from .backup import create_backup, run_backup
from .diff import calculate_diff
from .restore import restore_backup
from .verify import verify_backup

__all__ = ["calculate_diff", "create_backup", "restore_backup", "run_backup", "verify_backup"]
