"""The CLI's reports from the job-result models: validated at the edge (extra keys ignored, a wrong shape an
Error, not a traceback), one byte formatter, the progress bar's text (a phase message when there is one)."""

from __future__ import annotations

from datetime import datetime, timezone

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
                             timestamp=datetime(2025, 1, 1, tzinfo=timezone.utc), migration_version=None,
                             database_name="app", tables=[TableReport(name="users", rows=10, bytes=676_700)],
                             total_rows=10, uncompressed_bytes=1_887_437, compressed_bytes=1024, sha256="0" * 64,
                             duration_s=0.1)
    return {**result.model_dump(mode="json"), "job": "create"}


def test_a_result_renders_the_same_from_its_dict_with_the_tasks_extra_keys(capsys):
    render_result(created())
    out = capsys.readouterr().out
    assert "- users: 10 rows (660.84 KB)\n" in out and "Backup size: 1.80 MB → 1.00 KB (compressed)" in out
    listing = ListingJobResult(location="local", where="/b", backups=[StoredBackup(
        name="backup_20250101_000000.backup.gz", size=1_153_434, created_at=datetime(2025, 1, 1, tzinfo=timezone.utc))])
    render_result({**listing.model_dump(mode="json"), "job": "list_local"})
    assert "backup_20250101_000000.backup.gz      1.1 MB  2025-01-01 00:00:00  never" in capsys.readouterr().out


def test_a_result_of_another_shape_is_an_error_not_a_traceback():
    broken = created()
    del broken["total_rows"]
    with pytest.raises(BackupError, match="could not be read as CreateJobResult.*total_rows") as info:
        as_model(CreateJobResult, broken)
    assert "another version" in info.value.hint
