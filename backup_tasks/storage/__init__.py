from .base import BackupInfo, Storage
from .factory import local_storage, s3_storage
from .local import LocalStorage

__all__ = ["BackupInfo", "LocalStorage", "Storage", "local_storage", "s3_storage"]
