"""backup_tasks: PostgreSQL backup and restore to gzip JSON, run as Celery tasks."""

__version__ = "0.2.0"
