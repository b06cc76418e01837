"""Build the configured storages from settings. Everything else asks here rather than constructing them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..settings import Settings, get_settings
from .local import LocalStorage

if TYPE_CHECKING:
    from .s3 import S3Storage


def local_storage(settings: Settings | None = None) -> LocalStorage:
    s = settings or get_settings()
    return LocalStorage(s.BACKUP_DIR)


def s3_storage(settings: Settings | None = None) -> S3Storage:
    s = settings or get_settings()
    if not s.S3_BUCKET_NAME:
        raise ConfigError(
            "S3 is not configured: S3_BUCKET_NAME is not set",
            hint="Set S3_BUCKET_NAME (and S3_ENDPOINT_URL for MinIO, R2, B2 or Spaces) in the environment or .env.",
        )
    # Imported here so that local-only commands never pay for (or need) boto3.
    from .s3 import S3Storage

    return S3Storage(s)
