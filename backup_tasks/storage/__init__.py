from .base import BackupInfo, Storage

__all__ = ["BackupInfo", "Storage"]
