"""Loading the settings: the environment over .env over the defaults, names in any case, and a bad value refused
in one line that names the setting and never prints the value (some are secrets)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tasks.errors import ConfigError, ExitCode
from backup_tasks.settings import Settings, load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.upper() in Settings.model_fields:
            monkeypatch.delenv(key)
    return monkeypatch


def test_defaults_without_environment_or_file(clean_env, tmp_path: Path) -> None:
    s = load_settings(tmp_path / "absent.env")
    assert s.BACKUP_JOBS == 1 and s.BACKUP_DIR == Path("./backups") and not s.s3_enabled


def test_environment_wins_over_the_env_file_and_keywords_over_both(clean_env, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("BACKUP_JOBS=3\nBACKUP_RETENTION_DAYS=9\nS3_BUCKET_NAME=from-file\nNOT_A_SETTING=x\n")
    clean_env.setenv("BACKUP_JOBS", "5")
    s = load_settings(env_file, S3_BUCKET_NAME="kw")
    assert (s.BACKUP_JOBS, s.BACKUP_RETENTION_DAYS, s.S3_BUCKET_NAME) == (5, 9, "kw")
    assert load_settings(None).BACKUP_RETENTION_DAYS == 7, "env_file=None reads no file"


def test_names_match_in_any_case(clean_env, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("backup_retention_days=11\n")
    clean_env.setenv("database_url", "postgresql://u:pw@db/app")
    s = load_settings(env_file)
    assert s.BACKUP_RETENTION_DAYS == 11 and s.database_url == "postgresql://u:pw@db/app"


def test_the_working_directory_env_file_is_the_default(clean_env, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BACKUP_KEEP_WEEKLY=4\n")
    clean_env.chdir(tmp_path)
    assert load_settings().BACKUP_KEEP_WEEKLY == 4


@pytest.mark.parametrize("name, value, reason", [
    ("BACKUP_JOBS", "many", "valid integer"),
    ("BACKUP_JOBS", "0", "greater than or equal to 1"),
    ("S3_ADDRESSING_STYLE", "sideways", "'auto', 'path' or 'virtual'"),
    ("BACKUP_METRICS_PORT", "hunter2-secret", "valid integer"),
])
def test_a_bad_value_is_a_config_error_naming_the_setting_not_the_value(clean_env, name, value, reason) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert name in caught.value.message and reason in caught.value.message
    assert value not in caught.value.message and ".env.example" in (caught.value.hint or "")
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("url", ["host=db password=s3cret-pw dbname=app", "postgresql://app:s3cret-pw@db/app"],
                         ids=["key-value", "url"])
def test_backupctl_refuses_a_bad_setting_in_one_line_without_a_traceback(tmp_path: Path, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in Settings.model_fields}
    env.update(BACKUP_JOBS="0", BACKUP_DIR=str(tmp_path), DATABASE_URL=url)
    done = subprocess.run([sys.executable, "-m", "backup_tasks", "list", "--local"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == int(ExitCode.USAGE), done.stderr
    assert "Traceback" not in done.stderr and "s3cret-pw" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "Error: invalid setting: BACKUP_JOBS: Input should be greater than or equal to 1", lines
    assert lines[1].startswith("Hint: ") and len(lines) == 2
