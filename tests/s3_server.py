"""pytest fixtures: a real S3 HTTP endpoint on localhost (moto's server mode) and a fresh bucket per test.

boto3 talks to it over HTTP with endpoint_url, exactly as it would to MinIO; nothing in boto3 is patched.
Load with `pytest_plugins = ["tests.s3_server"]`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_tasks.settings import reset_settings_cache


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials only; a developer's ~/.aws or instance role can never be used by a test."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def worker_s3_env(endpoint: str, bucket: str, tmp_path: Path) -> dict[str, str]:
    """What a worker (or a backupctl subprocess) needs to use `bucket` on the test endpoint, with test
    credentials only."""
    return {"S3_ENDPOINT_URL": endpoint, "S3_BUCKET_NAME": bucket, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}


@pytest.fixture
def s3_client(s3_endpoint: str, aws_env: None):
    """A plain boto3 client on the test endpoint, for arranging and inspecting buckets behind the code's back."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_client, backup_dir_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new empty bucket, configured through the environment as a user would (S3_* settings)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("S3_BUCKET_NAME", name)
    for var in ("S3_PREFIX", "S3_REGION", "S3_ADDRESSING_STYLE", "S3_SSE", "S3_SSE_KMS_KEY_ID", "S3_STORAGE_CLASS"):
        monkeypatch.delenv(var, raising=False)
    reset_settings_cache()
    yield name
    reset_settings_cache()


@pytest.fixture
def backup_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """BACKUP_DIR pointed at an empty directory and S3 unconfigured (s3_bucket, which uses this, configures it).

    The working directory moves to tmp_path so that a developer's `.env` is not read.
    """
    path = tmp_path / "backups"
    path.mkdir(exist_ok=True)  # the same directory as conftest.py's backup_dir, so the two compose
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKUP_DIR", str(path))
    monkeypatch.delenv("S3_BUCKET_NAME", raising=False)
    reset_settings_cache()
    yield path
    reset_settings_cache()
