"""The CLI's reports from the job-result models: validated at the edge (extra keys ignored, a wrong shape an
Error, not a traceback), one byte formatter, the progress bar's text (a phase message when there is one)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backup_tasks.cli.progressbar import progress_detail
from backup_tasks.cli.render import as_model, render_result
from backup_tasks.errors import BackupError
from backup_tasks.jobs.results import CreateJobResult, ListingJobResult, StoredBackup
from backup_tasks.models import TableReport
from backup_tasks.progress import Progress
from backup_tasks.units import format_bytes


@pytest.mark.parametrize("n, decimals, text", [
    (0, 2, "0 B"), (1023, 2, "1023 B"), (1024, 2, "1.00 KB"), (676_700, 2, "660.84 KB"),
    (1_887_437, 2, "1.80 MB"), (1_153_434, 1, "1.1 MB"), (3 * 1024**4, 2, "3.00 TB"), (5 * 1024**5, 1, "5120.0 TB"),
])
def test_one_byte_formatter_prints_the_seeds_sizes(n, decimals, text):
    assert format_bytes(n, decimals) == text


def test_the_progress_bar_shows_a_phase_message_when_the_engine_sends_one():
    assert progress_detail(Progress("restore", "events", 1000, None, 2048)) == "events 1,000 rows 2.0 KB"
    assert progress_detail(Progress("restore", "events", 1000, message="rebuilding 3 indexes")) == \
        "rebuilding 3 indexes"


def created() -> dict:
    result = CreateJobResult(path="/b/backup_20250101_000000.backup.gz", name="backup_20250101_000000.backup.gz",
                             timestamp=datetime(2025, 1, 1, tzinfo=UTC), migration_version=None,
                             database_name="app", tables=[TableReport(name="users", rows=10, bytes=676_700)],
                             total_rows=10, uncompressed_bytes=1_887_437, compressed_bytes=1024, sha256="0" * 64,
                             duration_s=0.1)
    return {**result.model_dump(mode="json"), "job": "create"}


def test_a_result_renders_the_same_from_its_dict_with_the_tasks_extra_keys(capsys):
    render_result(created())
    out = capsys.readouterr().out
    assert "- users: 10 rows (660.84 KB)\n" in out and "Backup size: 1.80 MB → 1.00 KB (compressed)" in out
    listing = ListingJobResult(location="local", where="/b", backups=[StoredBackup(
        name="backup_20250101_000000.backup.gz", size=1_153_434, created_at=datetime(2025, 1, 1, tzinfo=UTC))])
    render_result({**listing.model_dump(mode="json"), "job": "list_local"})
    assert "backup_20250101_000000.backup.gz      1.1 MB  2025-01-01 00:00:00  never" in capsys.readouterr().out


def test_a_result_of_another_shape_is_an_error_not_a_traceback():
    broken = created()
    del broken["total_rows"]
    with pytest.raises(BackupError, match=r"could not be read as CreateJobResult.*total_rows") as info:
        as_model(CreateJobResult, broken)
    assert "another version" in info.value.hint


def test_a_drill_report_and_a_listings_last_drill_render_from_their_dicts(capsys):
    from backup_tasks.jobs.results import DrillJobResult, DrillStatus

    when = datetime(2026, 12, 2, 4, 0, 7, tzinfo=UTC)
    report = DrillJobResult(
        backup="backup_20261202_020000.backup.gz", location="s3", ok=True, outcome="ok", started_at=when,
        finished_at=when, duration_s=2.5, scratch="database app_drill on db1:5432", tables=3, rows=12_000,
        restore_s=1.5, rows_per_s=8000.0, bytes_per_s=2048.0, peak_rss_bytes=64 << 20, server_version="15.20",
        backup_server_version="15.19", tool_version="0.2.0", report="s3://b/backups/x.drill.json",
        checks=[{"name": "checksum", "ok": True, "seconds": 0.1, "detail": "sha256 ab matches"},
                {"name": "rows", "ok": None}])
    render_result({**report.model_dump(mode="json"), "job": "drill"})
    out = capsys.readouterr().out
    assert "Drill of backup_20261202_020000.backup.gz (s3) into database app_drill on db1:5432: OK\n" in out
    assert "  checksum           ok      sha256 ab matches (0.10 s)\n" in out and "  rows               not run" in out
    assert "Restored 3 tables, 12,000 rows in 1.50 s, 8,000 rows/s, 2.00 KB/s; drill 2.50 s in all" in out
    assert "Peak memory: process 64.00 MB\n" in out and "Server 15.20 (backup from 15.19), tool 0.2.0" in out
    from backup_tasks.cli.job_commands import summary

    assert summary({**report.model_dump(mode="json"), "job": "drill"}) == \
        "drill of backup_20261202_020000.backup.gz (s3): ok, 12000 rows"
    listing = ListingJobResult(location="local", where="/b", backups=[
        StoredBackup(name="backup_20250101_000000.backup.gz", size=10, created_at=when,
                     drill=DrillStatus(outcome="failed", finished_at=when), migration_version="abc"),
        StoredBackup(name="backup_20250101_000001.backup.gz", size=10, created_at=when)])
    render_result({**listing.model_dump(mode="json"), "job": "list_local"})
    lines = capsys.readouterr().out.splitlines()
    assert "LAST DRILL (UTC)" in lines[1] and lines[1].endswith("MIGRATION")
    assert "  failed 2026-12-02 04:00      abc" in lines[2] and lines[3].split()[-2:] == ["never", "-"]
    assert DrillStatus.of(b"not json").outcome == "unreadable" and DrillStatus.of(None) is None
