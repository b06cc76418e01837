"""One command as a process tree, measured as a user experiences it.

- time: wall clock from before the process is started to its exit (start-up, imports and exit included);
- peak RSS: max over the run of the summed RSS of the process and all its descendants, sampled every 10 ms
  (not getrusage's ru_maxrss: Linux folds the spawning parent's RSS at fork time into a child's maxrss, so it
  would count the harness; not one process's VmHWM: the diff and pg_dump -j work in child processes);
- for a queued job, also each worker pool process's peak (with its own children): the job runs there; as RSS
  (the target's measure) and as PSS, sampled every PSS_EVERY-th time: RSS counts a page shared by two processes
  in both (the libraries the diff's row reader maps as its pool process does, the pool process's pages still
  shared with the worker's main process since the fork), PSS splits it, which is closer to what a container's
  memory limit charges;
- CPU seconds: of the client tree (wait4's rusage, reaped descendants included), of the worker (utime + stime
  of its processes, before and after), and of the PostgreSQL backends serving the watched databases (found
  among the postmaster's children by the database name in their process title; sampled, since a backend exits
  with its connection: the CPU of its last < 10 ms may be missed).
A command still running after `timeout` is dumped with py-spy (when installed) and killed with its group.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from procfs import (
    CLK_TCK,
    children,
    cmdline,
    cpu_ticks,
    process_tree,
    pss_kb,
    rss_kb,
    tree_rss_kb,
)

from .quiet import busy_cores_between, cpu_jiffies

PERIOD_S = 0.01
PSS_EVERY = 5  # samples: a pool tree's PSS every 50 ms (smaps_rollup walks page tables; RSS is one read)


@dataclass
class Command:
    argv: list[str]
    env: dict
    cwd: str | None = None


@dataclass
class Watch:
    """What to watch besides the command's own tree."""
    worker_pid: int | None = None          # a Celery worker's main process; its children are the pool
    postmaster_pid: int | None = None
    databases: tuple[str, ...] = ()        # backends connected to these are counted as server work


@dataclass
class Sampler:
    root: int
    watch: Watch
    client_peak_kb: int = 0
    pool_peak_kb: dict = field(default_factory=dict)   # pool pid -> peak of its tree
    pool_peak_pss_kb: dict = field(default_factory=dict)  # pool pid -> peak PSS of its tree
    samples: int = 0
    pool_total_peak_kb: int = 0
    pool_idle_kb: int = 0                              # largest pool process before the command: imports only
    backend_first: dict = field(default_factory=dict)  # backend pid -> ticks when first seen (0 if born later)
    backend_last: dict = field(default_factory=dict)

    def baseline(self) -> None:
        """Backends alive before the command starts count only what they do from now on; the pool processes'
        RSS before the command shows what an idle worker process already holds."""
        if self.watch.worker_pid:
            self.pool_idle_kb = max((tree_rss_kb(c) for c in children(self.watch.worker_pid)), default=0)
        for pid in self._backends():
            ticks = cpu_ticks(pid, with_children=False)
            if ticks is not None:
                self.backend_first[pid] = self.backend_last[pid] = ticks

    def _backends(self) -> list[int]:
        pm, names = self.watch.postmaster_pid, self.watch.databases
        if not pm or not names:
            return []
        found = []
        for pid in children(pm):
            if pid in self.backend_last:
                found.append(pid)
                continue
            title = f" {cmdline(pid)} "
            if any(f" {name} " in title for name in names):
                found.append(pid)
        return found

    def sample(self) -> None:
        self.client_peak_kb = max(self.client_peak_kb, sum(rss_kb(p) for p in process_tree(self.root)))
        if self.watch.worker_pid:
            total = 0
            with_pss = self.samples % PSS_EVERY == 0
            for child in children(self.watch.worker_pid):
                kb = tree_rss_kb(child)
                total += kb
                self.pool_peak_kb[child] = max(self.pool_peak_kb.get(child, 0), kb)
                if with_pss:
                    pss = sum(pss_kb(p) for p in process_tree(child))
                    self.pool_peak_pss_kb[child] = max(self.pool_peak_pss_kb.get(child, 0), pss)
            self.pool_total_peak_kb = max(self.pool_total_peak_kb, total)
            self.samples += 1
        for pid in self._backends():
            ticks = cpu_ticks(pid, with_children=False)
            if ticks is not None:
                self.backend_first.setdefault(pid, 0)
                self.backend_last[pid] = ticks

    def server_cpu_s(self) -> float:
        return sum(self.backend_last[p] - self.backend_first[p] for p in self.backend_last) / CLK_TCK


def worker_ticks(worker_pid: int | None) -> int | None:
    """CPU of a worker: every process of its tree, each with the children it reaped (a pool process replaced
    during the run is then in its parent's figures)."""
    if not worker_pid:
        return None
    return sum(cpu_ticks(p) or 0 for p in process_tree(worker_pid))


def pyspy_dump(pids: list[int]) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "(py-spy is not installed: `.venv/bin/pip install py-spy` shows where a hung command was)"
    out = []
    for pid in pids:
        try:
            out.append(subprocess.run([spy, "dump", "--pid", str(pid)], check=False, capture_output=True, text=True,
                                      timeout=30).stdout)
        except (OSError, subprocess.SubprocessError) as exc:
            out.append(f"py-spy dump of {pid} failed: {exc}")
    return "\n".join(out)


def _sample_loop(sampler: Sampler, done: threading.Event) -> None:
    while not done.is_set():
        sampler.sample()
        done.wait(PERIOD_S)


def _on_timeout(proc: subprocess.Popen, watch: Watch, hung: dict, timeout: float) -> None:
    pids = process_tree(proc.pid) + (process_tree(watch.worker_pid)[1:] if watch.worker_pid else [])
    hung["py_spy_dump"] = pyspy_dump(pids)
    hung["timed_out"] = timeout
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started: all ours, in its own group
    except ProcessLookupError:
        pass


def run(cmd: Command, watch: Watch | None = None, timeout: float | None = None) -> dict:
    """Run cmd to its end and return its measurements (see the module's docstring) and its output."""
    watch = watch or Watch()
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    wticks0 = worker_ticks(watch.worker_pid)
    sampler = Sampler(0, watch)
    sampler.baseline()
    jiffies0 = cpu_jiffies()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd.argv, stdout=out, stderr=err, env=cmd.env, cwd=cmd.cwd, start_new_session=True)
    sampler.root = proc.pid
    done, hung = threading.Event(), {}
    thread = threading.Thread(target=_sample_loop, args=(sampler, done), daemon=True)
    thread.start()
    killer = threading.Timer(timeout, _on_timeout, (proc, watch, hung, timeout)) if timeout else None
    if killer:
        killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if killer:
        killer.cancel()
    done.set()
    thread.join()
    sampler.sample()  # the backends' last figures, now that the client has finished with them
    return _result(cmd, proc, status, usage, wall, sampler, watch, wticks0, jiffies0, out, err, hung)


def _result(cmd, proc, status, usage, wall, sampler, watch, wticks0, jiffies0, out, err, hung) -> dict:
    wticks1 = worker_ticks(watch.worker_pid)
    out.seek(0)
    err.seek(0)
    stdout, stderr = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    out.close()
    err.close()
    r = {
        "argv": cmd.argv,
        "wall_s": round(wall, 3),
        "rc": os.waitstatus_to_exitcode(status),
        "client_cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
        "client_peak_rss_mb": round(sampler.client_peak_kb / 1024, 1),
        "server_cpu_s": round(sampler.server_cpu_s(), 3) if watch.postmaster_pid else None,
        "server_backends": len(sampler.backend_last),
        "machine_busy_cores": busy_cores_between(jiffies0, cpu_jiffies()),
        "stdout": stdout,
        "stderr": stderr[-4000:],
        **hung,
    }
    if watch.worker_pid:
        r["worker"] = {
            "cpu_s": round(((wticks1 or 0) - (wticks0 or 0)) / CLK_TCK, 3),
            "peak_process_rss_mb": round(max(sampler.pool_peak_kb.values(), default=0) / 1024, 1),
            "peak_process_pss_mb": round(max(sampler.pool_peak_pss_kb.values(), default=0) / 1024, 1),
            "peak_pool_rss_mb": round(sampler.pool_total_peak_kb / 1024, 1),
            "idle_process_rss_mb": round(sampler.pool_idle_kb / 1024, 1),
            "processes": len(sampler.pool_peak_kb),
        }
    return r
