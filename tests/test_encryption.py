"""Issue 18: client-side encryption with age.

Backups are gzip then age (archive/encryption.py), named `.backup.gz.age`; the checksum and the manifest describe
the ciphertext; readers decrypt as they stream. Interoperability is checked with the real `age` binary both ways,
fidelity with the independent oracle (tests/oracle.py), and every refusal (wrong or missing identity, truncated or
tampered ciphertext) leaves the database exactly as it was, with one error line, a hint and exit 12 (or 4).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backup_tasks.archive.encryption import MAGIC, Keys, parse_recipients
from backup_tasks.core import create_backup, restore_backup
from backup_tasks.core.destination import LocalPartStore
from backup_tasks.core.options import EngineOptions
from backup_tasks.core.parallel import ProcessRunner, run_parallel_backup
from backup_tasks.errors import ConfigError, DecryptionError, ExitCode
from backup_tasks.names import is_backup_name, is_encrypted_name, parse_sidecar
from tests.audit import run_writes_audited
from tests.conftest import run_sql
from tests.oracle import assert_same, snapshot
from tests.test_torture_roundtrip import CHANGES, torture_sections

pytest_plugins = ["tests.s3_server"]
BACKUPCTL = str(Path(sys.executable).parent / "backupctl")
AGE, AGE_KEYGEN = shutil.which("age"), shutil.which("age-keygen")
pytestmark = pytest.mark.skipif(not (AGE and AGE_KEYGEN), reason="needs the age CLI (Debian package `age`)")
_AGE_VARS = ("BACKUP_AGE_RECIPIENTS", "BACKUP_AGE_RECIPIENTS_FILE", "BACKUP_AGE_IDENTITY_FILE")


def keygen(path: Path) -> tuple[str, str]:
    """(secret line, public key) of a new identity made by the reference `age-keygen`."""
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run([AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True).stdout.strip()
    secret = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    return secret, public


@pytest.fixture
def keys(tmp_path) -> dict:
    key, other = tmp_path / "key.txt", tmp_path / "other.txt"
    secret, public = keygen(key)
    other_secret, other_public = keygen(other)
    return {"file": key, "secret": secret, "public": public, "other_file": other, "other_public": other_public,
            "other_secret": other_secret}


@pytest.fixture
def shop(make_db) -> str:
    _, url = make_db()
    run_sql(url, """
        CREATE TABLE items (id int PRIMARY KEY, v text, blob bytea);
        INSERT INTO items SELECT i, md5(i::text), decode(md5(i::text), 'hex') FROM generate_series(1, 50000) i;
        CREATE TABLE notes (id serial PRIMARY KEY, v text); INSERT INTO notes (v) VALUES ('a'), ('b');
        ANALYZE;
    """)
    return url


def cli_env(url: str, backup_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _AGE_VARS}
    env.update({"DATABASE_URL": url, "BACKUP_DIR": str(backup_dir), "PYTHONDONTWRITEBYTECODE": "1", **extra})
    return env


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BACKUPCTL, *args], env=env, capture_output=True, text=True, timeout=300)


def only_backup(backup_dir: Path) -> Path:
    (path,) = [p for p in backup_dir.iterdir() if is_backup_name(p.name)]
    return path


def assert_refused(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith(("Error:", "Hint:"))]
    assert [line.split(":")[0] for line in lines] == ["Error", "Hint"], result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


# --- names, settings ---------------------------------------------------------------------------------------

def test_encrypted_names_are_backup_names_and_carry_their_sidecars():
    name = "backup_20261201_020000_2.backup.gz.age"
    assert is_backup_name(name) and is_encrypted_name(name)
    assert not is_encrypted_name("backup_20261201_020000.backup.gz")
    assert parse_sidecar(name + ".manifest.json") == (name, "manifest")
    assert not is_backup_name("backup_20261201_020000.backup.gz.age.age")


def test_a_recipient_that_is_not_a_public_key_is_refused_without_echoing_a_secret(keys):
    assert parse_recipients(f"{keys['public']}, {keys['other_public']}\n# comment", "X") == (
        keys["public"], keys["other_public"])
    with pytest.raises(ConfigError) as raised:
        parse_recipients(keys["secret"], "BACKUP_AGE_RECIPIENTS")
    assert keys["secret"] not in raised.value.message and keys["secret"][20:] not in str(raised.value.hint)


# --- round trips ---------------------------------------------------------------------------------------------

def test_torture_schema_round_trip_encrypted_is_oracle_equal(make_db, backup_dir, keys):
    _, url = make_db()
    schema, data = torture_sections()
    run_sql(url, schema)
    run_sql(url, data)
    before = snapshot(url)
    options = EngineOptions(keys=Keys(recipients=(keys["public"], keys["other_public"]), identity_file=keys["file"]))
    path = create_backup(backup_dir, database_url=url, options=options)
    assert path.name.endswith(".backup.gz.age")
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and b'"metadata"' not in raw
    # The checksum and the manifest describe the stored (encrypted) bytes, and the manifest names the recipients.
    assert path.with_name(path.name + ".sha256").read_text().split()[0] == hashlib.sha256(raw).hexdigest()
    manifest = json.loads(path.with_name(path.name + ".manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(raw).hexdigest() and manifest["compressed_bytes"] == len(raw)
    assert manifest["recipients"] == [keys["public"], keys["other_public"]]
    run_sql(url, CHANGES)
    assert snapshot(url) != before
    # Either recipient's identity decrypts it.
    other = EngineOptions(keys=Keys(identity_file=keys["other_file"]))
    restore_backup(path, database_url=url, show_diff=False, options=other)
    assert_same(before, snapshot(url))


@pytest.mark.parametrize("jobs", ["1", "3"])
def test_cli_round_trip_and_the_age_cli_reads_our_file(shop, backup_dir, keys, jobs):
    """create (one process, and the parallel backup: one age stream over the assembled members) with no secret
    key present; `age -d -i key | gunzip` yields the JSON document; restore --yes brings the rows back."""
    before = snapshot(shop)
    env = cli_env(shop, backup_dir, BACKUP_AGE_RECIPIENTS=keys["public"], BACKUP_SPLIT_MIN_BYTES=str(1 << 20))
    made = ctl(env, "create", "--local", "--jobs", jobs)
    assert made.returncode == 0, made.stderr
    assert f"Encrypted with age to 1 recipient: {keys['public']}" in made.stdout
    path = only_backup(backup_dir)
    assert path.name.endswith(".backup.gz.age")
    plain = subprocess.run(f"{AGE} -d -i {keys['file']} {path} | gunzip", shell=True, capture_output=True,
                           check=True).stdout
    doc = json.loads(plain)
    assert doc["metadata"]["database_name"] == shop.rsplit("/", 1)[1]
    assert {k: len(v["data"]) for k, v in doc["tables"].items()} == {"items": 50000, "notes": 2}
    assert ctl(env, "list", "--local").stdout.count(path.name) == 1  # listed without any identity
    run_sql(shop, "DELETE FROM items WHERE id % 3 = 0; UPDATE notes SET v = 'x'")
    restored = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["file"])}, "restore", path.name, "--yes", "--local")
    assert restored.returncode == 0, restored.stderr
    assert_same(before, snapshot(shop))


def test_a_file_encrypted_by_the_age_cli_from_our_plain_backup_restores(shop, backup_dir, keys):
    before = snapshot(shop)
    env = cli_env(shop, backup_dir)
    assert ctl(env, "create", "--local").returncode == 0
    plain = only_backup(backup_dir)
    encrypted = plain.with_name(plain.name + ".age")
    subprocess.run([AGE, "-r", keys["public"], "-o", str(encrypted), str(plain)], check=True)
    for p in backup_dir.iterdir():
        if p != encrypted:
            p.unlink()
    run_sql(shop, "DELETE FROM items WHERE id > 100")
    env["BACKUP_AGE_IDENTITY_FILE"] = str(keys["file"])
    verified = ctl(env, "verify", encrypted.name, "--local")
    assert verified.returncode == 0 and "rows: 50002" in verified.stdout, verified.stderr
    assert "encryption: age, every chunk authenticated" in verified.stdout
    restored = ctl(env, "restore", encrypted.name, "--yes", "--local")
    assert restored.returncode == 0, restored.stderr
    assert_same(before, snapshot(shop))


# --- refusals: database untouched -------------------------------------------------------------------------

@pytest.fixture
def encrypted_backup(shop, backup_dir, keys) -> tuple[str, Path, dict]:
    env = cli_env(shop, backup_dir, BACKUP_AGE_RECIPIENTS=keys["public"])
    assert ctl(env, "create", "--local").returncode == 0
    run_sql(shop, "DELETE FROM items WHERE id % 2 = 0")  # a restore would change this: any change shows
    return shop, only_backup(backup_dir), env


def test_a_wrong_or_missing_identity_is_refused_with_the_recipients_named(encrypted_backup, keys):
    url, path, env = encrypted_backup
    before = snapshot(url)
    wrong = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["other_file"])}, "restore", path.name, "--yes",
                "--local")
    assert_refused(wrong, ExitCode.DECRYPTION, "no identity of BACKUP_AGE_IDENTITY_FILE can decrypt it",
                   f"encrypted for: {keys['public']}", f"holds: {keys['other_public']}")
    missing = ctl(env, "diff", path.name, "--local")
    assert_refused(missing, ExitCode.DECRYPTION, "no identity is configured", keys["public"])
    absent = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["file"]) + ".gone"}, "verify", path.name, "--local")
    assert_refused(absent, ExitCode.DECRYPTION, "identity file not found")
    assert_same(before, snapshot(url))


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
@pytest.mark.parametrize("sidecar", [True, False])
def test_damaged_ciphertext_is_refused_and_the_database_untouched(encrypted_backup, keys, damage, sidecar):
    """With its checksum recorded the damage is found before decrypting (exit 4); without one, age's
    authentication refuses the chunk (exit 12), inside the restore transaction, which rolls back."""
    url, path, env = encrypted_backup
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        del data[len(data) - 70000:]
    else:
        data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if not sidecar:
        path.with_name(path.name + ".sha256").unlink()
        path.with_name(path.name + ".manifest.json").unlink()
    before = snapshot(url)
    env = {**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["file"])}
    result = ctl(env, "restore", path.name, "--yes", "--local")
    if sidecar:
        assert_refused(result, ExitCode.INVALID_BACKUP, "SHA-256")
    else:
        assert_refused(result, ExitCode.DECRYPTION, "fails age authentication")
    assert_same(before, snapshot(url))
    if not sidecar:
        assert_refused(ctl(env, "verify", path.name, "--local"), ExitCode.DECRYPTION, "truncated or altered")


def test_the_engine_raises_decryption_error_for_a_foreign_identity(encrypted_backup, keys):
    url, path, _ = encrypted_backup
    with pytest.raises(DecryptionError) as raised:
        restore_backup(path, database_url=url, options=EngineOptions(keys=Keys(identity_file=keys["other_file"])))
    assert raised.value.exit_code == ExitCode.DECRYPTION


# --- keygen ------------------------------------------------------------------------------------------------

def test_keygen_writes_a_private_identity_the_age_cli_reads_and_never_overwrites(tmp_path, backup_dir, shop):
    out = tmp_path / "id.txt"
    env = cli_env(shop, backup_dir)
    made = ctl(env, "keygen", "--output", str(out))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    public = subprocess.run([AGE_KEYGEN, "-y", str(out)], capture_output=True, text=True, check=True).stdout.strip()
    assert made.stdout.strip() == f"Public key: {public}"
    assert "AGE-SECRET-KEY" not in made.stdout + made.stderr
    content = out.read_text()
    again = ctl(env, "keygen", "--output", str(out))
    assert_refused(again, ExitCode.USAGE, "refusing to overwrite")
    assert out.read_text() == content
    # The public key it printed encrypts backups the file decrypts.
    cipher = subprocess.run([AGE, "-r", public], input=b"hello", capture_output=True, check=True).stdout
    assert subprocess.run([AGE, "-d", "-i", str(out)], input=cipher, capture_output=True).stdout == b"hello"


def test_an_identity_file_with_a_bad_line_is_refused_without_quoting_it(encrypted_backup, tmp_path):
    _, path, env = encrypted_backup
    bad = tmp_path / "bad.txt"
    bad.write_text("AGE-SECRET-KEY-1NOTAVALIDKEYBUTASECRETLOOKINGLINE\n")
    result = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(bad)}, "restore", path.name, "--yes", "--local")
    assert_refused(result, ExitCode.DECRYPTION, "not an age identity")
    assert "NOTAVALIDKEY" not in result.stderr + result.stdout


# --- S3, listing, retention, and plaintext never on disk ---------------------------------------------------



def audited(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    return run_writes_audited(list(args), env)


@pytest.mark.s3
def test_s3_cycle_encrypted_and_no_plaintext_on_disk(shop, s3_bucket, s3_client, keys, tmp_path):
    """create --upload, list, list-s3 --long, cleanup --dry-run and check without any secret key; restore-s3
    with it. Every file either process opens for writing holds ciphertext (or is a sidecar of it)."""
    backup_dir = Path(os.environ["BACKUP_DIR"])
    env = cli_env(shop, backup_dir, BACKUP_AGE_RECIPIENTS=keys["public"], TMPDIR=str(tmp_path))
    before = snapshot(shop)
    made, written = audited(env, "create", "--local", "--upload")
    assert made.returncode == 0, made.stderr
    path = only_backup(backup_dir)
    local_writes = [Path(w) for w in written if w.startswith((str(backup_dir), str(tmp_path)))]
    assert local_writes and all(".backup.gz.age" in w.name for w in local_writes), local_writes
    assert path.read_bytes().startswith(MAGIC)
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"backups/{path.name}")
    stored = body["Body"].read()
    assert stored.startswith(MAGIC) and body["Metadata"]["sha256"] == hashlib.sha256(stored).hexdigest()
    listing = ctl(env, "list-s3", "--long", "--local")
    assert listing.returncode == 0 and path.name in listing.stdout, listing.stderr
    assert ctl(env, "list", "--local").returncode == 0
    assert ctl(env, "cleanup", "--dry-run", "--target", "all", "--local").returncode == 0
    checked = ctl(env, "check", "--max-age", "1h", "--local")
    assert checked.returncode == 0, checked.stderr
    run_sql(shop, "DELETE FROM items WHERE id % 5 = 0")
    env["BACKUP_AGE_IDENTITY_FILE"] = str(keys["file"])
    restored, written = audited(env, "restore-s3", path.name, "--yes", "--local")
    assert restored.returncode == 0, restored.stderr
    downloads = [Path(w) for w in written if w.startswith((str(backup_dir), str(tmp_path)))]
    assert downloads and all(".backup.gz.age" in w.name for w in downloads), downloads
    assert_same(before, snapshot(shop))
    # download + verify of the encrypted object, checksum verified on the way down.
    path.unlink()
    got = ctl(env, "download", path.name, "--local")
    assert got.returncode == 0, got.stderr
    assert ctl(env, "verify", path.name, "--local").returncode == 0


def test_gzip_of_a_decrypted_file_is_one_standard_stream(encrypted_backup, keys):
    _, path, _ = encrypted_backup
    plain = subprocess.run([AGE, "-d", "-i", str(keys["file"]), str(path)], capture_output=True, check=True).stdout
    with gzip.open(io.BytesIO(plain)) as f:
        assert f.readline().startswith(b'{"metadata":')


# --- the parallel backup: its parts are never plaintext in their store --------------------------------------

PART_HEADS: list[bytes] = []


class SpyPartStore(LocalPartStore):
    """Remembers the first bytes of every part the coordinator reads back (in the coordinator's process)."""

    def read(self, output: str):
        first = True
        for chunk in super().read(output):
            if first:
                PART_HEADS.append(bytes(chunk[: len(MAGIC)]))
                first = False
            yield chunk


def test_parallel_backup_parts_are_encrypted_in_their_store_and_the_file_is_one_age_stream(shop, backup_dir, keys):
    PART_HEADS.clear()
    before = snapshot(shop)
    options = EngineOptions(split_min_bytes=256 << 10, keys=Keys(recipients=(keys["public"],)))
    result = run_parallel_backup(backup_dir, database_url=shop, runner=ProcessRunner(2, SpyPartStore(backup_dir), "t"),
                                 options=options)
    assert result.parts > 2 and len(PART_HEADS) == result.parts
    assert set(PART_HEADS) == {MAGIC}  # every part was age ciphertext at rest
    path = Path(result.path)
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    plain = subprocess.run([AGE, "-d", "-i", str(keys["file"]), str(path)], capture_output=True, check=True).stdout
    assert {k: len(v["data"]) for k, v in json.loads(gzip.decompress(plain))["tables"].items()} == {
        "items": 50000, "notes": 2}
    run_sql(shop, "DELETE FROM items WHERE id % 4 = 0")
    restore_backup(path, database_url=shop, show_diff=False,
                   options=EngineOptions(keys=Keys(identity_file=keys["file"])))
    assert_same(before, snapshot(shop))


@pytest.mark.s3
def test_parallel_backup_streamed_to_s3_encrypted_leaves_nothing_on_disk(shop, s3_bucket, s3_client, keys, tmp_path):
    backup_dir = Path(os.environ["BACKUP_DIR"])
    env = cli_env(shop, backup_dir, BACKUP_AGE_RECIPIENTS=keys["public"], TMPDIR=str(tmp_path),
                  BACKUP_SPLIT_MIN_BYTES=str(1 << 20))
    before = snapshot(shop)
    made, written = audited(env, "create", "--local", "--to", "s3", "--jobs", "3")
    assert made.returncode == 0, made.stderr
    assert [w for w in written if w.startswith((str(backup_dir), str(tmp_path)))] == []
    keys_stored = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    (name,) = [k.removeprefix("backups/") for k in keys_stored if k.endswith(".backup.gz.age")]
    assert keys_stored == [f"backups/{name}", f"backups/{name}.manifest.json"]  # no part object left
    body = s3_client.get_object(Bucket=s3_bucket, Key=f"backups/{name}")
    data = body["Body"].read()
    assert data.startswith(MAGIC) and body["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    run_sql(shop, "DELETE FROM items WHERE id % 3 = 0")
    restored = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["file"])}, "restore-s3", name, "--yes", "--local")
    assert restored.returncode == 0, restored.stderr
    assert_same(before, snapshot(shop))


def test_retention_and_check_treat_encrypted_backups_as_backups(encrypted_backup, backup_dir):
    """cleanup deletes an old encrypted backup with its sidecars and keeps the newest; check sees the new one.
    No identity is configured: neither decrypts."""
    from backup_tasks.checksum import write_sidecar

    _, newest, env = encrypted_backup
    old = backup_dir / "backup_20200101_000000.backup.gz.age"
    old.write_bytes(MAGIC + os.urandom(1000))
    write_sidecar(old, hashlib.sha256(old.read_bytes()).hexdigest())
    planned = ctl(env, "cleanup", "--dry-run", "--local")
    assert planned.returncode == 0 and old.name in planned.stdout, planned.stdout + planned.stderr
    done = ctl(env, "cleanup", "--local")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in backup_dir.iterdir()) == sorted(
        [newest.name, newest.name + ".sha256", newest.name + ".manifest.json"])
    checked = ctl(env, "check", "--max-age", "1h", "--local")
    assert checked.returncode == 0 and newest.name in checked.stdout, checked.stdout + checked.stderr


def test_an_age_file_under_a_plain_backup_name_is_listed_as_encrypted(encrypted_backup, backup_dir):
    from backup_tasks.archive.header import AGE_MAGIC

    assert AGE_MAGIC == MAGIC
    _, path, env = encrypted_backup
    plain_name = backup_dir / "backup_20200101_000000.backup.gz"
    plain_name.write_bytes(path.read_bytes())
    listed = ctl(env, "list", "--local")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if plain_name.name + " " in line)
    assert "unreadable: age-encrypted" in line, listed.stdout


# --- restore drills (issue 16) on encrypted backups --------------------------------------------------------------

def test_an_encrypted_backup_drills_ok_with_the_identity_and_fails_with_exit_12_without(shop, make_db, backup_dir,
                                                                                        keys):
    from tests.test_drill import report_of

    _, scratch = make_db()
    run_sql(scratch, "CREATE TABLE items (id int PRIMARY KEY, v text, blob bytea);"
                     "CREATE TABLE notes (id serial PRIMARY KEY, v text);")
    env = cli_env(shop, backup_dir, BACKUP_AGE_RECIPIENTS=keys["public"], DRILL_DATABASE_URL=scratch)
    assert ctl(env, "create", "--local").returncode == 0
    backup = only_backup(backup_dir)
    empty = snapshot(scratch)
    refused = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["other_file"])}, "drill", "--local")
    assert refused.returncode == ExitCode.DECRYPTION, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr and keys["public"] in refused.stderr
    assert_same(empty, snapshot(scratch))  # nothing restored
    done = ctl({**env, "BACKUP_AGE_IDENTITY_FILE": str(keys["file"])}, "drill", "--local")
    assert done.returncode == 0 and ": OK" in done.stdout, done.stdout + done.stderr
    assert report_of(backup)["ok"] is True
    assert_same(snapshot(shop), snapshot(scratch))
