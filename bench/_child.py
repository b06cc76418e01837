"""One measured operation of the benchmark, in a fresh interpreter (run by bench/run.py, not by hand).

    python bench/_child.py OP 'JSON arguments'

OP is backup | restore | diff | celery. The last line printed on stdout is a JSON object with the operation's own
duration (the library call only, without interpreter start-up and imports), the import time, and this process's
peak resident set size (VmHWM from /proc/self/status, read just before exiting: the high-water mark of this
process's own address space, so nothing of the parent that spawned it is counted).

With "profile": PATH in the arguments, every thread (main, prefetch/producer threads, isal's compressor threads)
gets its own cProfile profiler; a summary is written to PATH as JSON and the raw stats to PATH + ".<thread>.pstats".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from procfs import status_kb  # bench/ is this script's directory

REPO = Path(__file__).resolve().parent.parent
# bench/run.py points BENCH_ENGINE_DIR at a copy of backup_tasks/ taken when the run started, so that every
# measurement of a run uses the same code while others edit the working tree.
ENGINE_DIR = os.environ.get("BENCH_ENGINE_DIR") or str(REPO)
sys.path.insert(0, ENGINE_DIR)


# ------------------------------------------------------------------------------------------------ profiling
class ThreadProfiles:
    """cProfile in every thread: cProfile only sees the thread that enabled it, and the engine's work is
    spread over a prefetch/producer thread and isal's compression threads."""

    def __init__(self) -> None:
        import cProfile

        self._cprofile = cProfile
        self.done: list[tuple[str, object, float]] = []
        self._lock = threading.Lock()
        self._orig = threading.Thread._bootstrap_inner
        profiles = self

        def bootstrap_inner(thread):  # runs in the new thread
            prof = cProfile.Profile()
            started = time.perf_counter()
            prof.enable()
            try:
                profiles._orig(thread)
            finally:
                prof.disable()
                with profiles._lock:
                    profiles.done.append((thread.name, prof, time.perf_counter() - started))

        threading.Thread._bootstrap_inner = bootstrap_inner
        self.main = cProfile.Profile()

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.main.enable()
        return self

    def __exit__(self, *exc):
        self.main.disable()
        with self._lock:
            self.done.insert(0, ("MainThread", self.main, time.perf_counter() - self._t0))
        threading.Thread._bootstrap_inner = self._orig
        return False

    def summary(self, path: str, top: int = 15) -> dict:
        import pstats

        rows = []
        threads = []
        for n, (name, prof, wall) in enumerate(self.done):
            stats = pstats.Stats(prof)
            safe = "".join(c if c.isalnum() else "_" for c in name)[:40]
            stats.dump_stats(f"{path}.{n:02d}_{safe}.pstats")
            threads.append({"thread": name, "wall_s": round(wall, 3)})
            for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
                rows.append({"thread": name, "function": _label(file, line, func), "calls": nc,
                             "self_s": tt, "cum_s": ct})
        by_self = sorted(rows, key=lambda r: r["self_s"], reverse=True)[:top]
        main_cum = sorted((r for r in rows if r["thread"] == "MainThread"), key=lambda r: r["cum_s"],
                          reverse=True)[:top]
        # Thread work by thread kind (isal starts one thread per compression worker plus a writer thread).
        return {"threads": threads, "top_self": by_self, "top_cum_main": main_cum}


def _label(file: str, line: int, func: str) -> str:
    if file == "~":
        return func  # a built-in, e.g. {method 'acquire' of '_thread.lock' objects}
    p = Path(file)
    parts = p.parts
    for anchor in ("backup_tasks", "isal", "psycopg2", "orjson", "pydantic", "threading.py", "queue.py"):
        if anchor in parts:
            rel = "/".join(parts[parts.index(anchor):])
            return f"{rel}:{line}({func})"
    return f"{p.name}:{line}({func})"


# ------------------------------------------------------------------------------------------------ operations
def _celery(args: dict) -> dict:
    """Create jobs through a Celery worker; overhead = client round trip - the job's own duration_s.

    Uses a worker that answers a ping; with start_worker, and none answering, starts a temporary one (prefork, one
    process) that consumes only a private queue, so it takes no one else's jobs, and stops it afterwards."""
    import importlib
    import signal
    import socket
    import subprocess

    try:
        mod = importlib.import_module("backup_tasks.celery_app")
    except Exception as exc:  # noqa: BLE001 - the module may not exist yet
        return {"skipped": f"backup_tasks.celery_app is not importable ({type(exc).__name__}: {exc})"}
    from celery import Celery

    app = getattr(mod, "app", None) or getattr(mod, "celery_app", None)
    if not isinstance(app, Celery):
        app = next((v for v in vars(mod).values() if isinstance(v, Celery)), None)
    if app is None:
        return {"skipped": "backup_tasks.celery_app defines no Celery app"}

    def ping(timeout: float) -> list:
        return app.control.ping(timeout=timeout) or []

    try:
        replies = ping(float(args.get("ping_timeout", 2.0)))
    except Exception as exc:  # noqa: BLE001 - no broker
        return {"skipped": f"broker not reachable ({type(exc).__name__}: {exc})"}
    try:
        app.loader.import_default_modules()
    except Exception:  # noqa: BLE001
        pass
    names = sorted(n for n in app.tasks if not n.startswith("celery."))
    wanted = args.get("task")
    if wanted:
        candidates = [wanted]
    else:
        candidates = [n for n in names if n.rsplit(".", 1)[-1] in ("create", "create_backup", "backup_create")]
        candidates = candidates or [n for n in names if "create" in n.lower()]
    if len(candidates) != 1:
        return {"skipped": f"cannot tell which task creates a backup among {names} (pass --celery-task NAME)"}
    task = candidates[0]

    out: dict = {"task": task, "runs": []}
    worker = None
    queue = None
    try:
        if replies:
            out["worker"] = "running: " + ", ".join(sorted(list(r)[0] for r in replies))
        elif args.get("start_worker"):
            queue = f"bench-{os.getpid()}"
            node = f"{queue}@{socket.gethostname()}"
            env = dict(os.environ, BACKUP_DIR=args["out"])
            log = open(Path(args["out"]) / "worker.log", "w")
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "backup_tasks.celery_app", "worker", "-Q", queue, "-n", node,
                 "-c", "1", "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
                cwd=ENGINE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and worker.poll() is None:
                if any(node in r for r in ping(1.0)):
                    break
            else:
                log.flush()
                tail = (Path(args["out"]) / "worker.log").read_text()[-800:]
                return {**out, "skipped": f"the temporary worker did not answer within 60 s: {tail}"}
            out["worker"] = f"temporary worker {node} (prefork, 1 process, private queue {queue})"
        else:
            return {"skipped": "no Celery worker answered a ping (start one with `make worker`)"}

        for _ in range(int(args.get("jobs", 2))):
            t0 = time.perf_counter()
            result = app.send_task(task, kwargs={"database_url": args["url"]}, queue=queue)
            value = result.get(timeout=float(args.get("timeout", 1800)), propagate=False)
            round_trip = time.perf_counter() - t0
            run = {"round_trip_s": round_trip, "state": result.state}
            out["runs"].append(run)
            if result.state != "SUCCESS" or not isinstance(value, dict):
                out["skipped"] = f"the job did not succeed: state {result.state}: {str(value)[:300]}"
                return out
            duration = value.get("duration_s")
            run.update(job_duration_s=duration, path=value.get("path"), total_rows=value.get("total_rows"))
            _remove_backup(value.get("path"))
            if not isinstance(duration, (int, float)):
                out["skipped"] = f"the job's result carries no duration_s: keys {sorted(value)[:20]}"
                return out
            run["overhead_s"] = round_trip - duration
        # The first job of a fresh worker process pays its lazy imports; a long-running worker does not.
        last = out["runs"][-1]
        out.update(round_trip_s=last["round_trip_s"], job_duration_s=last["job_duration_s"],
                   overhead_s=last["overhead_s"], first_overhead_s=out["runs"][0]["overhead_s"])
        return out
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)  # the worker and its pool process, all started here
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()


def _remove_backup(path: str | None) -> None:
    """The job's backup file (and checksum sidecar): the benchmark's, not the worker owner's, to keep."""
    if not path:
        return
    p = Path(path)
    if not p.is_absolute():
        p = REPO / p
    if p.is_file() and p.name.endswith(".backup.gz"):
        from backup_tasks.checksum import sidecar_path

        p.unlink()
        sidecar_path(p).unlink(missing_ok=True)


def main() -> int:
    op = sys.argv[1]
    args = json.loads(sys.argv[2])
    t_imp = time.perf_counter()
    from backup_tasks.core import calculate_diff, restore_backup, run_backup
    from backup_tasks.settings import get_settings

    import_s = time.perf_counter() - t_imp
    import backup_tasks

    profiles = ThreadProfiles() if args.get("profile") else None
    info: dict = {"op": op, "import_s": import_s, "pid": os.getpid(), "engine_file": backup_tasks.__file__}
    t0 = time.perf_counter()
    if profiles:
        profiles.__enter__()
    try:
        if op == "backup":
            r = run_backup(Path(args["out"]), database_url=args["url"])
            info["result"] = {"path": r.path, "total_rows": r.total_rows, "compressed_bytes": r.compressed_bytes,
                              "uncompressed_bytes": r.uncompressed_bytes, "tables": len(r.tables),
                              "duration_s": r.duration_s,
                              "compression_level": get_settings().BACKUP_COMPRESSION_LEVEL}
        elif op == "restore":
            r = restore_backup(Path(args["path"]), show_diff=False, database_url=args["url"])
            info["result"] = {"restored_rows": r.restored_rows, "restored_tables": r.restored_tables,
                              "sequences_restored": r.sequences_restored, "duration_s": r.duration_s}
        elif op == "diff":
            d = calculate_diff(Path(args["path"]), database_url=args["url"], detailed=True)
            changed = {k: [t.to_insert, t.to_delete, t.to_change] for k, t in d.tables.items()
                       if t.diff or t.to_insert or t.to_delete or t.to_change}
            info["result"] = {"total_backup_rows": d.total_backup_rows, "total_current_rows": d.total_current_rows,
                              "tables": len(d.tables), "tables_with_changes": changed}
        elif op == "celery":
            info["result"] = _celery(args)
        else:
            raise SystemExit(f"unknown op {op}")
    finally:
        if profiles:
            profiles.__exit__(None, None, None)
    info["seconds"] = time.perf_counter() - t0
    info["vmhwm_kb"] = status_kb("self", "VmHWM")  # before the profile summary, which allocates
    if profiles:
        info["profile"] = profiles.summary(args["profile"], int(args.get("top", 15)))
    print(json.dumps(info, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
