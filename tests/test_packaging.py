"""The wheel, installed as a user installs it, runs every process of a deployment (issue 20).

Once per module: the wheel is built (`pip wheel --no-deps`) from a copy of the repository, as the Dockerfile's
first stage builds it, and installed with requirements.lock as constraints into a fresh virtual environment in
a temporary directory outside the checkout. Every command then runs from another empty temporary directory,
with no PYTHONPATH and none of the developer's settings, so nothing can come from the checkout: the version
agrees everywhere, the lock pins everything installed, Beat builds its schedule from BACKUP_CRON, and the
worker, Beat and Flower entry points start against the local Redis (a claimed database, see celery_worker).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import tomllib
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery import Celery
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import backup_tasks
import beat_schedule
from backup_tasks import processes
from backup_tasks.celery_app import BackupScheduler, load_beat_schedule_module, make_app
from backup_tasks.errors import ConfigError
from tests.celery_worker import REDIS_HOST, REDIS_PORT, SCRUBBED, free_port, redis_db, wait_for  # noqa: F401 - a fixture
from tests.conftest import run_sql

# The tests that use the installed environment (built once per module: about 30 s with pip's cache).
slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
ENTRY_POINTS = {"backupctl": "backup_tasks.cli:main", "backup-tasks-worker": "backup_tasks.processes:worker",
                "backup-tasks-beat": "backup_tasks.processes:beat",
                "backup-tasks-flower": "backup_tasks.processes:flower",
                "backup-tasks-metrics": "backup_tasks.processes:metrics"}
# Top-level entries that are no source of the wheel, kept out of the copy it is built from (as .dockerignore keeps
# them out of the image's build context): a stale build/ would put old files into the wheel, the rest is large.
NOT_SOURCE = {".git", ".venv", "build", "dist", ".pytest_cache", "backups", ".bench", ".demo", "bench", ".env"}

# Installed into every virtual environment by venv itself, not by the wheel's requirements.
VENV_OWN = {"pip", "setuptools", "wheel"}
CRON, TZ = "17 3 * * 1", "Europe/Berlin"


def not_source(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == ROOT
    return {n for n in names if (top and (n in NOT_SOURCE or n.endswith(".egg-info")))
            or n == "__pycache__" or n.endswith(".pyc")}


@dataclass
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # an empty directory: the working directory of every command
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=self.workdir, env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def python(self, code: str, *args: str, env: dict[str, str] | None = None) -> dict:
        """Run `code` in the installed environment; it prints one JSON document, returned here."""
        result = self.run(self.bin("python"), "-c", code, *args, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that points into the checkout or configures the app."""
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUBBED and k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
           and not k.startswith(("CELERY_", "DATABASE_", "BACKUP_", "S3_", "FLOWER_", "AWS_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def installed(redis_db) -> Installed:  # noqa: F811 - the fixture imported above
    base = Path(tempfile.mkdtemp(prefix="backup_tasks-wheel-"))
    try:
        assert not base.resolve().is_relative_to(ROOT), f"{base} is inside the checkout"
        shutil.copytree(ROOT, base / "src", ignore=not_source)
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir",
                                str(base / "dist"), str(base / "src")], capture_output=True, text=True, timeout=300)
        assert build.returncode == 0, build.stderr
        (wheel,) = (base / "dist").glob("backup_tasks-*.whl")
        subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
        workdir = base / "elsewhere"
        workdir.mkdir()
        broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
        env = clean_env(CELERY_BROKER_URL=broker, CELERY_RESULT_BACKEND=broker)
        # The venv's own pip, as a user would; the lock as constraints, as make install and the image use it.
        install = subprocess.run([str(base / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet",
                                  "--constraint", str(LOCK), str(wheel)], cwd=workdir, env=env,
                                 capture_output=True, text=True, timeout=600)
        assert install.returncode == 0, install.stderr
        yield Installed(wheel, base / "venv", workdir, env)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def lock_pins() -> dict[str, set[str]]:
    """requirements.lock as {name: versions}; a name pinned twice has markers (e.g. per Python version)."""
    pins: dict[str, set[str]] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.match(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if m:
            pins.setdefault(canonicalize_name(m.group(1)), set()).add(m.group(2))
    return pins


# ------------------------------------------------------------------------------------------------ no install


def test_entry_points_are_celery_with_the_defaults_of_worker_and_make_beat(monkeypatch):
    """What ./worker and `make beat` ran before issue 20, now in one place; user arguments come last (they win)."""
    monkeypatch.setenv("WORKER_CONCURRENCY", "5")
    assert processes.celery_argv("worker", ["-Q", "q"]) == [
        "celery", "-A", "backup_tasks.celery_app", "worker", "-E", "--loglevel=INFO", "--concurrency=5",
        "-n", "celery@%h", "-Q", "q"]
    monkeypatch.setenv("WORKER_CONCURRENCY", "")  # empty counts as unset, as ${WORKER_CONCURRENCY:-2} did
    assert "--concurrency=2" in processes.celery_argv("worker")
    assert processes.celery_argv("beat") == ["celery", "-A", "backup_tasks.celery_app", "beat", "--loglevel=INFO"]
    assert processes.celery_argv("flower", ["--port=1"]) == ["celery", "-A", "backup_tasks.celery_app", "flower",
                                                              "--port=1"]


def test_the_lock_satisfies_every_requirement_of_pyproject():
    """A dependency added to pyproject.toml without `make lock` would be installed unpinned (constraints pin
    only what they list), and a narrowed range would make pip refuse the lock."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = lock_pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is required by pyproject.toml but not in requirements.lock: make lock"
        assert all(req.specifier.contains(v, prereleases=True) for v in pins[name]), (
            f"requirements.lock pins {req.name} {sorted(pins[name])}, outside {text!r}: make lock")
    assert "backup-tasks" not in pins, "the lock pins the project itself; pip could not install a new version"


def test_beat_without_beat_schedule_stops_with_a_config_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "beat_schedule", None)  # what an install without the module looks like
    with pytest.raises(ConfigError, match="beat_schedule is not installed") as raised:
        load_beat_schedule_module()
    assert "wheel" in raised.value.hint
    app = make_app()
    try:
        with pytest.raises(SystemExit) as stopped:
            BackupScheduler(app=app, schedule_filename=str(tmp_path / "schedule"))
    finally:
        app.close()
    assert stopped.value.code == int(raised.value.exit_code) != 0
    assert "Error: the module beat_schedule is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the wheel


@slow
def test_the_wheel_carries_beat_schedule_and_the_entry_points(installed):
    with zipfile.ZipFile(installed.wheel) as whl:
        names = set(whl.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = dict(re.findall(r"^(\S+) = (\S+)$", whl.read(entry_points).decode(), re.M))
    assert "beat_schedule.py" in names, "beat_schedule.py is not in the wheel: Beat cannot start from it"
    assert {"backup_tasks/__init__.py", "backup_tasks/celery_app.py", "backup_tasks/processes.py"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "scripts/"))], "the wheel ships test code"
    assert scripts == ENTRY_POINTS


@slow
def test_the_version_is_one_everywhere(installed, make_db, tmp_path):
    """__version__ of the checkout = the wheel's version = `backupctl --version` = a backup's tool_version."""
    version = backup_tasks.__version__
    assert installed.wheel.name.startswith(f"backup_tasks-{version}-")
    shown = installed.run(installed.bin("backupctl"), "--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"backupctl, version {version}", shown

    found = installed.python(
        "import json, importlib.metadata as md, backup_tasks, beat_schedule; print(json.dumps({"
        "'metadata': md.version('backup_tasks'), 'version': backup_tasks.__version__, "
        "'package': backup_tasks.__file__, 'beat_schedule': beat_schedule.__file__}))")
    assert found["metadata"] == found["version"] == version
    site = installed.venv.resolve()
    for module in ("package", "beat_schedule"):
        assert Path(found[module]).resolve().is_relative_to(site), f"{module} imported from {found[module]}"

    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    out = tmp_path / "backups"
    made = installed.run(installed.bin("backupctl"), "create", "--local", "--output-dir", str(out),
                         env={**installed.env, "DATABASE_URL": url, "BACKUP_DIR": str(out)})
    assert made.returncode == 0, made.stderr
    (archive,) = out.glob("*.backup.gz")
    with gzip.open(archive) as f:
        assert json.load(f)["metadata"]["tool_version"] == version


@slow
def test_the_lock_pins_every_installed_distribution(installed):
    listed = installed.run(installed.bin("python"), "-m", "pip", "list", "--format=json")
    assert listed.returncode == 0, listed.stderr
    got = {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed.stdout)}
    pins = lock_pins()
    assert got.pop("backup-tasks") == backup_tasks.__version__
    unpinned = sorted(n for n in got if n not in pins and n not in VENV_OWN)
    assert not unpinned, f"installed but not in requirements.lock (run `make lock`): {unpinned}"
    off = {n: (v, sorted(pins[n])) for n, v in got.items() if n in pins and v not in pins[n]}
    assert not off, f"installed versions differ from requirements.lock: {off}"
    for name in ("celery", "kombu", "redis", "psycopg2-binary", "boto3", "flower", "pydantic"):
        assert name in got, f"{name} is not installed from the wheel's requirements"


# ------------------------------------------------------------------------------------------------ Beat

SCHEDULE_PROBE = """
import json, sys
from backup_tasks.celery_app import BackupScheduler, app
from backup_tasks.settings import get_settings
import beat_schedule

built = beat_schedule.build_beat_schedule(get_settings())
scheduler = BackupScheduler(app=app, schedule_filename=sys.argv[1])  # setup_schedule runs here (lazy=False)
entry = scheduler.schedule["scheduled-backup"]
print(json.dumps({
    "built": {name: [e["task"], e["kwargs"]["cron"], e["kwargs"]["timezone"]] for name, e in built.items()},
    "conf": sorted(app.conf.beat_schedule), "timezone": str(app.conf.timezone),
    "entry": {"task": entry.task, "minute": sorted(entry.schedule.minute), "hour": sorted(entry.schedule.hour),
              "day_of_week": sorted(entry.schedule.day_of_week), "cron": entry.kwargs["cron"]},
}))
scheduler.close()
"""


@slow
def test_beat_schedule_comes_from_backup_cron(installed, tmp_path):
    found = installed.python(SCHEDULE_PROBE, str(tmp_path / "beat-schedule"),
                             env={**installed.env, "BACKUP_CRON": CRON, "BACKUP_TIMEZONE": TZ})
    assert found["built"] == {"scheduled-backup": ["backup_tasks.scheduled_backup", CRON, TZ]}
    assert found["conf"] == ["scheduled-backup"] and found["timezone"] == TZ
    assert found["entry"] == {"task": "backup_tasks.scheduled_backup", "minute": [17], "hour": [3],
                              "day_of_week": [1], "cron": CRON}


# ------------------------------------------------------------------------------------------------ processes


class Process:
    """An entry point of the installed environment in its own process group, output to a log file."""

    def __init__(self, installed: Installed, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=installed.workdir, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        def seen() -> bool:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()}"
            return text in self.output()

        try:
            wait_for(seen, timeout, what=repr(text))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None

    def stop(self) -> int:
        """SIGTERM (Celery's warm shutdown), the exit code; SIGKILL for whatever is left of the group."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode


@slow
@pytest.mark.celery
def test_worker_entry_point_answers_a_ping_and_runs_the_scheduled_backup(installed, redis_db, make_db,  # noqa: F811
                                                                        tmp_path):
    """`backup-tasks-worker` with no options but a queue: the defaults of ./worker (node celery@<host>,
    WORKER_CONCURRENCY, task events), extra arguments passed through, and Beat's job run end to end."""
    _, url = make_db()
    run_sql(url, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50);")
    backups = tmp_path / "backups"
    backups.mkdir()
    queue = f"packaging-{uuid.uuid4().hex[:8]}"
    node = f"celery@{socket.gethostname()}"
    env = {**installed.env, "DATABASE_URL": url, "BACKUP_DIR": str(backups), "WORKER_CONCURRENCY": "1"}
    worker = Process(installed, [installed.bin("backup-tasks-worker"), "-Q", queue], env, tmp_path / "worker.log")
    client = Celery("packaging-test", broker=installed.env["CELERY_BROKER_URL"],
                    backend=installed.env["CELERY_RESULT_BACKEND"])
    try:
        worker.wait_for_output(f"{node} ready.")
        # The documented health check, with the installed `celery` and the app from the wheel.
        ping = installed.run(installed.bin("celery"), "-A", "backup_tasks.celery_app", "inspect", "ping",
                             "--destination", node, "--timeout", "10")
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr

        inspect = client.control.inspect(destination=[node], timeout=10)
        stats = inspect.stats()[node]
        assert stats["pool"]["max-concurrency"] == 1  # WORKER_CONCURRENCY
        # -Q passed through; and the node's own queue (worker_direct), where a parallel backup's helpers go.
        assert sorted(q["name"] for q in inspect.active_queues()[node]) == sorted([queue, f"{node}.dq2"])
        assert re.search(r"task events: ON", worker.output()), "the worker runs without -E"

        # Beat's job as Beat sends it, minus the slot: the worker computes it with the installed beat_schedule.
        result = client.send_task("backup_tasks.scheduled_backup", kwargs={"cron": CRON, "timezone": TZ},
                                  queue=queue).get(timeout=60)
        expected = beat_schedule.slot_id(beat_schedule.previous_due(CRON, datetime.now(UTC), TZ))
        assert result["slot"] == expected and result["skipped"] is False
        archive = backups / result["create"]["name"]
        with gzip.open(archive) as f:
            assert json.load(f)["metadata"]["tool_version"] == backup_tasks.__version__
    finally:
        client.close()
        code = worker.stop()
    assert code == 0, f"the worker did not stop cleanly (exit {code}):\n{worker.output()}"
    assert "Warm shutdown" in worker.output()


@slow
@pytest.mark.celery
def test_beat_entry_point_schedules_the_backup_from_backup_cron(installed, tmp_path):
    env = {**installed.env, "BACKUP_CRON": CRON, "BACKUP_TIMEZONE": TZ}
    beat = Process(installed, [installed.bin("backup-tasks-beat"), "--schedule", str(tmp_path / "beat-schedule")],
                   env, tmp_path / "beat.log")
    try:
        # Logged at INFO by BackupScheduler: the entry point's --loglevel=INFO and the installed beat_schedule.
        beat.wait_for_output(f"beat: scheduled-backup runs backup_tasks.scheduled_backup on cron '{CRON}' ({TZ})")
    finally:
        code = beat.stop()
    assert code == 0, f"beat did not stop cleanly (exit {code}):\n{beat.output()}"


@slow
@pytest.mark.celery
@pytest.mark.parametrize("command", [["backup-tasks-flower"], ["celery", "-A", "backup_tasks.celery_app", "flower"]],
                         ids=["entry-point", "celery-flower"])
def test_flower_answers_on_loopback(installed, tmp_path, command):
    port = free_port()
    argv = [installed.bin(command[0]), *command[1:]]
    # FLOWER_PORT from the environment and no address: the settings' loopback default, as the README says.
    flower = Process(installed, argv, {**installed.env, "FLOWER_PORT": str(port)}, tmp_path / "flower.log")

    def healthy() -> bytes:
        assert flower.proc.poll() is None, flower.output()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
                return response.read()
        except OSError:
            return b""

    try:
        assert wait_for(healthy, 60, interval=0.2, what="Flower's /healthcheck") == b"OK"
        assert f"Visit me at http://127.0.0.1:{port}" in flower.output()
    finally:
        flower.stop()
