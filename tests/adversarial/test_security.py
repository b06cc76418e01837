"""Security, the parts outside Celery (the queue's own checks live in tests/test_celery_security.py):

- backup names are validated wherever they enter (CLI arguments, job arguments, S3 listings): paths, `..`,
  absolute paths, newlines and NUL are refused, and an audit hook in the `backupctl` process shows that nothing
  is written outside BACKUP_DIR;
- secrets (the database password, the AWS keys) never appear in the CLI's output, the backup's metadata, its
  sidecar, the S3 object's metadata or the jobs' results, also when a step fails;
- restoring over a database whose name differs from the backup's asks on a terminal (driven through a pty), and
  without a terminal refuses unless --yes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from backup_tasks.archive.encryption import MAGIC, generate_identity, identity_file_text
from backup_tasks.errors import NotFoundError, UsageError
from backup_tasks.jobs import run_job
from backup_tasks.names import validate_name
from backup_tasks.settings import reset_settings_cache
from tests.conftest import _admin
from tests.oracle import assert_same, snapshot
from tests.terminal import on_terminal

from .support import (
    assert_clean_error,
    assert_ok,
    cli,
    cli_audited,
    cli_env,
    cli_start,
    drop_database,
    new_database,
    run_sql,
    written_paths,
)

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.adversarial

VALID = "backup_20250101_000000.backup.gz"
HOSTILE_NAMES = [
    "../x", f"../{VALID}", "../../etc/passwd", "/etc/passwd", f"/tmp/{VALID}", f"{VALID}\n", f"{VALID}\nx",
    f"sub/{VALID}", f"{VALID}/..", f"./{VALID}", f"{VALID}.sha256", f" {VALID}", "backup_20251301_000000.backup.gz",
    "", ".", "..", "~", "backup_20250101_000000.backup.gz;rm -rf ~",
]


def aws_env(endpoint: str, bucket: str, backup_dir: Path, **extra: str) -> dict[str, str]:
    return cli_env(BACKUP_DIR=str(backup_dir), S3_BUCKET_NAME=bucket, S3_ENDPOINT_URL=endpoint,
                   AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE="/nonexistent/config",
                   AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
                   **{"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", **extra})


def run_all(commands: list[tuple[str, ...]], env: dict[str, str], cwd: Path | None = None
            ) -> list[subprocess.CompletedProcess]:
    """Several `backupctl` processes side by side."""
    procs = [cli_start(*args, env=env, cwd=cwd) for args in commands]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.fixture
def s3_setup(s3_endpoint, s3_client, tmp_path):
    bucket = f"adv-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    backups = tmp_path / "sandbox" / "backups"
    backups.mkdir(parents=True)
    return bucket, backups


# -- names -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["download", "restore-s3", "upload"])
def test_hostile_names_are_refused_by_the_cli(command, s3_setup, s3_endpoint, s3_client):
    bucket, backups = s3_setup
    (backups.parent / "x").write_text("outside BACKUP_DIR")
    env = aws_env(s3_endpoint, bucket, backups)
    extra = ("--yes",) if command == "restore-s3" else ()
    names = [n for n in HOSTILE_NAMES if not (command == "upload" and n.startswith("/tmp/"))]

    # Run from inside BACKUP_DIR, so that `../x` names a file that exists (outside BACKUP_DIR).
    procs = run_all([(command, name, "--local", *extra) for name in names], env, cwd=backups)
    for name, proc in zip(names, procs):
        line = assert_clean_error(proc)
        if command == "upload":  # a path to a file that is not a backup, or to no file at all
            assert ((proc.returncode == 2 and ("backup name" in line or "no backup file" in line))
                    or proc.returncode == 3), (name, line)
        else:
            assert proc.returncode == 2 and "backup name" in line, (name, line)
    upload_x = next(p for n, p in zip(names, procs) if n == "../x")
    assert command != "upload" or "not a backup name: 'x'" in upload_x.stderr

    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert sorted(p.name for p in backups.parent.iterdir()) == ["backups", "x"]
    assert list(backups.iterdir()) == []


def test_nul_and_other_names_are_refused_where_they_enter_in_process(backup_dir_env, s3_bucket):
    """NUL cannot be passed in argv; the CLI's parser, the jobs and the storages refuse it in-process."""
    from backup_tasks.cli import cli as group
    from backup_tasks.cli import register_commands
    from backup_tasks.storage.factory import local_storage, s3_storage

    register_commands()
    nul = f"{VALID}\x00../../etc/passwd"
    for args in (["download", nul, "--local"], ["restore-s3", nul, "--local", "--yes"], ["upload", nul, "--local"]):
        result = CliRunner().invoke(group, args)
        # upload takes a path: there is no such file (and nothing is read)
        refused = (UsageError, NotFoundError) if args[0] == "upload" else UsageError
        assert isinstance(result.exception, refused), (args, result.output, result.exception)
    for name in [nul, *HOSTILE_NAMES]:
        for job, kwargs in (("download", {"name": name}), ("restore_s3", {"name": name}),
                            ("verify_s3", {"name": name})):
            with pytest.raises(UsageError):
                run_job(job, kwargs)
        with pytest.raises(UsageError):
            validate_name(name)
        for storage in (local_storage(), s3_storage()):
            with pytest.raises(UsageError):
                storage.exists(name)
    assert list(backup_dir_env.iterdir()) == []


def test_s3_listing_ignores_keys_outside_the_prefix_or_not_backups(s3_setup, s3_endpoint, s3_client):
    bucket, backups = s3_setup
    good = ["backups/backup_20250101_000000.backup.gz", "backups/backup_20250102_000000_1.backup.gz"]
    odd = ["backups/../backup_20250103_000000.backup.gz", "backups/sub/backup_20250104_000000.backup.gz",
           "other/backup_20250105_000000.backup.gz", "backupsX/backup_20250106_000000.backup.gz",
           "backups/backup_20250107_000000.backup.gz.part", "backups/backup_20250108_000000.backup.gz ",
           "backups/BACKUP_20250109_000000.BACKUP.GZ", "backups/notes.txt", "backup_20250110_000000.backup.gz",
           "backups//backup_20250111_000000.backup.gz", "backups/backup_20250112_000000.backup.gz.sha256"]
    body = gzip.compress(b'{"metadata":{},"tables":{}}')
    # The good ones with the checksum an upload records: retention deletes nothing while no backup verifies.
    for key in good + odd:
        meta = {"sha256": hashlib.sha256(body).hexdigest()} if key in good else {}
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
    env = aws_env(s3_endpoint, bucket, backups, BACKUP_RETENTION_DAYS="0", BACKUP_RETENTION_MIN_COUNT="1")

    listing = cli("list-s3", "--local", env=env)
    assert_ok(listing)
    assert "2 backups" in listing.stdout
    listed = {line.split()[0] for line in listing.stdout.splitlines()[2:]}
    assert listed == {"backup_20250101_000000.backup.gz", "backup_20250102_000000_1.backup.gz"}

    assert_ok(cli("cleanup", "--target", "s3", "--local", env=env))  # deletes the older of the two, nothing else
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == set(odd) | {"backups/backup_20250102_000000_1.backup.gz"}
    assert list(backups.iterdir()) == []


def test_nothing_is_written_outside_backup_dir(seeded, s3_setup, s3_endpoint, tmp_path):
    """create --upload, upload, download, restore-s3, verify-s3-like restore --dry-run, cleanup: every path the
    process writes, creates, renames or removes is inside BACKUP_DIR."""
    bucket, backups = s3_setup
    env = aws_env(s3_endpoint, bucket, backups, DATABASE_URL=seeded.url)
    log = tmp_path / "audit.log"
    created = cli_audited(log, "create", "--local", "--upload", env=env)
    assert_ok(created)
    name = next(p.name for p in backups.iterdir() if p.name.endswith(".backup.gz"))
    (backups / name).unlink()
    for args in (("download", name, "--local"), ("upload", name, "--local"),
                 ("restore-s3", name, "--local", "--dry-run"), ("restore-s3", name, "--local", "--yes"),
                 ("restore", name, "--local", "--yes"), ("cleanup", "--local")):
        assert_ok(cli_audited(log, *args, env=env))
    assert_same(seeded.before, snapshot(seeded.url))

    written = written_paths(log)
    assert any(event == "os.link" for event, _ in written)  # the hook did see the backup being published
    root = backups.resolve()
    outside = [(event, str(p)) for event, p in written if p.resolve() != root and root not in p.resolve().parents]
    assert outside == [], outside
    assert sorted(p.name for p in backups.parent.iterdir()) == ["backups"]


# -- secrets -----------------------------------------------------------------------------------------------------

PASSWORD = "pw-Adv3rsarial-7f3a9c"
AWS_KEY_ID = "AKIAADVERSARIALKEY7Q"
AWS_SECRET = "aws/Adversarial+Secret=9Qx2"
# An age identity (issue 18): its secret line must never appear anywhere either, encrypted runs or not.
AGE_SECRET, AGE_PUBLIC = generate_identity()
SECRETS = (PASSWORD, AWS_KEY_ID, AWS_SECRET, AGE_SECRET, AGE_SECRET.removeprefix("AGE-SECRET-KEY-1"))


def connection_string(form: str, *, user: str, dbname: str, port: int = 5432, password: str = PASSWORD) -> str:
    """The same database in libpq's two forms, both carrying the password (trust auth ignores it)."""
    if form == "url":
        return f"postgresql://{user}:{password}@localhost:{port}/{dbname}"
    return f"host=localhost port={port} dbname={dbname} user={user} password={password}"


@pytest.fixture
def secret_role(seeded):
    """A superuser role with PASSWORD: what a DATABASE_URL holding the password logs in as."""
    role = f"bt_adv_{uuid.uuid4().hex[:8]}"
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD %s", (PASSWORD,))
    conn.close()
    yield role
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(f"DROP ROLE IF EXISTS {role}")
    conn.close()


def _no_secret(where: str, text: str | bytes) -> None:
    data = text if isinstance(text, str) else text.decode("utf-8", "replace")
    for secret in SECRETS:
        assert secret not in data, f"{secret!r} appears in {where}"


def _cli_runs(name: str, secret_url: str, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Every command on the secret DSN (after `create --upload`), each succeeding."""
    outputs = []
    for args in (("list", "--local"), ("list-s3", "--local"), ("upload", name, "--local"),
                 ("verify", name, "--local"), ("diff", name, "--local"),
                 ("diff", name, "--local", "--database-url", secret_url),
                 ("restore", name, "--local", "--dry-run"), ("restore", name, "--local", "--yes"),
                 ("restore-s3", name, "--local", "--yes"), ("check", "--local")):
        outputs.append(cli(*args, env=env))
        assert_ok(outputs[-1])
    return outputs


def _failing_runs(name: str, role: str, form: str, seeded_db: str,
                  env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """The failures that print what they failed on: a database that does not exist, a port nobody listens on, a
    role that does not exist, an S3 endpoint that is down."""
    failing = [
        ("diff", name, "--local", "--database-url", connection_string(form, user=role, dbname="no_such_database")),
        ("diff", name, "--local", "--database-url", connection_string(form, user=role, dbname=seeded_db, port=1)),
        ("restore", name, "--local", "--yes", "--database-url", connection_string(form, user="x" + role,
                                                                                  dbname=seeded_db)),
    ]
    outputs = []
    for args in failing:
        outputs.append(cli(*args, env=env))
        assert_clean_error(outputs[-1])
    # The same failures through DATABASE_URL itself (the issue's case: `cannot connect to host=… password=…`).
    wrong_db = {**env, "DATABASE_URL": connection_string(form, user=role, dbname="no_such_database")}
    for args in (("create", "--local"), ("restore", name, "--local", "--yes")):
        outputs.append(cli(*args, env=wrong_db))
        assert "does not exist" in assert_clean_error(outputs[-1], 6)
    s3_down = cli("upload", name, "--local", env={**env, "S3_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert_clean_error(s3_down, 7)
    return outputs + [s3_down]


@pytest.mark.parametrize("form,encrypted", [("url", False), ("keywords", False), ("url", True)])
def test_secrets_never_appear_in_output_files_metadata_or_results(form, encrypted, seeded, secret_role, s3_setup,
                                                                  s3_endpoint, s3_client, monkeypatch, tmp_path):
    """Issue 13.1: with DATABASE_URL in either form, successes and failures alike; issue 18: with the backups
    age-encrypted, the identity file's secret key is never in any of it either."""
    bucket, backups = s3_setup
    secret_url = connection_string(form, user=secret_role, dbname=seeded.name)
    env = aws_env(s3_endpoint, bucket, backups, DATABASE_URL=secret_url, AWS_ACCESS_KEY_ID=AWS_KEY_ID,
                  AWS_SECRET_ACCESS_KEY=AWS_SECRET)
    identity = None
    if encrypted:
        identity = tmp_path / "age-identity.txt"
        identity.write_text(identity_file_text(AGE_SECRET, AGE_PUBLIC, "test"))
        env.update(BACKUP_AGE_RECIPIENTS=AGE_PUBLIC, BACKUP_AGE_IDENTITY_FILE=str(identity))
    created = cli("create", "--local", "--upload", env=env)
    assert_ok(created)
    name = next(p.name for p in backups.iterdir() if p.name.endswith((".backup.gz", ".backup.gz.age")))
    assert name.endswith(".age") == encrypted
    outputs = [created, *_cli_runs(name, secret_url, env)]
    if encrypted:
        outputs += _failing_decryption(name, env, tmp_path)
    (backups / name).unlink()
    outputs.append(cli("download", name, "--local", env=env))
    assert_ok(outputs[-1])
    outputs += _failing_runs(name, secret_role, form, seeded.name, env)
    for proc in outputs:
        _no_secret(f"the output of {proc.args[1:]}", proc.stdout + proc.stderr)
    # The restore prompts (on a terminal, answered no) name the target database: by name only.
    for args in (["restore", name, "--local"], ["restore-s3", name, "--local"]):
        code, output = on_terminal(args, env, "n")
        assert code == 10 and "Restore into database" in output, output
        _no_secret(f"the prompt of {args}", output)

    assert_same(seeded.before, snapshot(seeded.url))
    _no_secret_in_files(backups / name, bucket, s3_client, identity)
    _no_secret_in_job_results(name, secret_url, env, backups, monkeypatch)
    assert_same(seeded.before, snapshot(seeded.url))


def _failing_decryption(name: str, env: dict[str, str], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """An identity file of another key, and one whose key line is damaged (a secret-looking line): exit 12, and
    neither error quotes a key."""
    other = tmp_path / "other-identity.txt"
    other_secret, other_public = generate_identity()
    other.write_text(identity_file_text(other_secret, other_public, "test"))
    damaged = tmp_path / "damaged-identity.txt"
    damaged.write_text(AGE_SECRET[:-3] + "\n")
    outputs = []
    for path in (other, damaged):
        outputs.append(cli("restore", name, "--local", "--yes", env={**env, "BACKUP_AGE_IDENTITY_FILE": str(path)}))
        assert_clean_error(outputs[-1], 12)
        assert other_secret not in outputs[-1].stderr
    return outputs


def _plain(data: bytes, identity: Path | None) -> bytes:
    """A backup's JSON document: gunzipped, and decrypted first (by the age CLI) when it is encrypted."""
    if data.startswith(MAGIC):
        data = subprocess.run(["age", "-d", "-i", str(identity)], input=data, capture_output=True, check=True).stdout
    return gzip.decompress(data)


def _no_secret_in_files(path: Path, bucket: str, s3_client, identity: Path | None = None) -> None:
    _no_secret("the backup", _plain(path.read_bytes(), identity))
    if identity is not None:
        _no_secret("the manifest", path.with_name(path.name + ".manifest.json").read_bytes())
    _no_secret("the sidecar", path.with_name(path.name + ".sha256").read_bytes())
    head = s3_client.head_object(Bucket=bucket, Key=f"backups/{path.name}")
    _no_secret("the S3 object's metadata", json.dumps(head["Metadata"]))
    obj = s3_client.get_object(Bucket=bucket, Key=f"backups/{path.name}")["Body"].read()
    _no_secret("the S3 object", _plain(obj, identity))


def _no_secret_in_job_results(name: str, secret_url: str, env: dict[str, str], backups: Path, monkeypatch) -> None:
    """The jobs' results (what a Celery task returns and the result backend stores), run in-process."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    try:
        results = [run_job("create", {"database_url": secret_url, "upload": True})]
        results += [run_job(job, kwargs) for job, kwargs in (
            ("diff", {"file": name, "database_url": secret_url}), ("verify", {"file": name}),
            ("restore", {"file": name, "database_url": secret_url, "dry_run": True}),
            ("restore", {"file": name, "database_url": secret_url}), ("upload", {"file": name}),
            ("list_local", {}), ("list_s3", {}), ("restore_s3", {"name": name, "database_url": secret_url}),
            ("cleanup", {"dry_run": True}))]
        (backups / name).unlink()
        results.append(run_job("download", {"name": name}))
    finally:
        reset_settings_cache()
    for result in results:
        _no_secret("a job result", json.dumps(result, default=str))


# -- confirmation ------------------------------------------------------------------------------------------------

@pytest.fixture
def other_database(seeded):
    """A database of the same schema under another name, holding different data."""
    name, url = new_database()
    run_sql(url, "DELETE FROM tags; UPDATE items SET qty = -1; INSERT INTO y VALUES ('other')")
    yield name, url
    drop_database(name)


def test_restore_over_another_database_asks_on_a_terminal_and_no_changes_nothing(seeded, other_database):
    name, url = other_database
    before = snapshot(url)
    code, output = on_terminal(["restore", str(seeded.backup), "--local", "--database-url", url], cli_env(), "n")
    assert code == 10, output
    assert f"this backup was taken from database '{seeded.name}', not '{name}'" in output
    assert "Error: restore cancelled; nothing was changed" in output and "Traceback" not in output
    assert_same(before, snapshot(url))


def test_restore_over_another_database_answered_yes_restores(seeded, other_database):
    _, url = other_database
    code, output = on_terminal(["restore", str(seeded.backup), "--local", "--database-url", url], cli_env(), "y")
    assert code == 0, output
    assert "Restore completed" in output
    assert_same(seeded.before, snapshot(url))  # the same schema, now the backup's data


@pytest.mark.parametrize("command", ["restore", "restore-s3"])
def test_restore_without_a_terminal_and_without_yes_refuses(command, seeded, other_database, tmp_path):
    _, url = other_database
    before = snapshot(url)
    target = str(seeded.backup) if command == "restore" else seeded.backup.name
    env = cli_env(BACKUP_DIR=str(tmp_path), S3_BUCKET_NAME="unused-bucket", S3_ENDPOINT_URL="http://127.0.0.1:9")
    proc = cli(command, target, "--local", "--database-url", url, env=env, stdin=subprocess.DEVNULL)
    line = assert_clean_error(proc, 10)
    assert "no terminal" in line and "--yes" in proc.stderr.splitlines()[1]
    assert_same(before, snapshot(url))
