"""Running the operations of one dataset: groups in alternating order, each run measured after a CHECKPOINT
on a quiet machine, the target brought to the state a restore or diff expects, the oracle after restores."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import datasets, measure, ours, reference
from .context import DatasetRun
from .operations import Operation
from .oracle_check import Oracle
from .pg import HarnessError
from .quiet import Quiet

GROUPS = ("backup", "diff", "restore", "check")


@dataclass
class Runner:
    run: DatasetRun
    quiet: Quiet
    oracle: Oracle
    log: Callable[[str], None]
    timeout_s: float | None = None        # --timeout; else derived from the reference's times
    on_queued_timeout: Callable[[], None] | None = None  # restarts the worker, which still runs the job

    def __post_init__(self) -> None:
        self.results: dict[str, list[dict]] = {}
        self.oracle_verdicts: dict[str, dict] = {}
        self._reference_s: list[float] = []

    # --- groups -------------------------------------------------------------------------------------------
    def run_groups(self, ops: list[Operation], reps: int) -> None:
        for group in GROUPS:
            todo = [op for op in ops if op.group == group]
            if not todo:
                continue
            if group == "diff":
                self.ensure_changed()
            self.run_group(todo, 1 if group == "check" else reps)

    def run_group(self, ops: list[Operation], reps: int) -> None:
        """reps rounds over ops, forward then backward (ABBA): no operation always runs on another's warm-up."""
        for rep in range(reps):
            for op in (ops if rep % 2 == 0 else ops[::-1]):
                missing = self._missing_input(op)
                r = {"rep": rep, "ok": False, "error": missing} if missing else self.measure(op, rep, reps)
                self.results.setdefault(op.key, []).append(r)
                if op.oracle and rep == reps - 1 and r["ok"]:
                    self.check_oracle(op)

    def _missing_input(self, op: Operation) -> str | None:
        if op.input and op.input not in self.run.files:
            return f"no input: {op.input} produced no file"
        return None

    # --- one measurement ----------------------------------------------------------------------------------
    def measure(self, op: Operation, rep: int, reps: int) -> dict:
        if op.group in ("restore", "check"):
            self.ensure_changed()
        if op.before:
            op.before(self.run)
        cmd = op.build(self.run)
        settled = self.settle()
        r = measure.run(cmd, self.run.watch(op.queued), self.timeout())
        r.update(settled, rep=rep)
        r["ok"] = r["rc"] == 0 and not r.get("timed_out")
        if not r["ok"]:
            r["error"] = _failure(r)
        self.after(op, r)
        self.log(f"  {self.run.ds.label} rep {rep + 1}/{reps} {op.label:<52} {_line(r)}")
        if r.get("timed_out") and op.queued and self.on_queued_timeout:
            self.on_queued_timeout()
        r["stdout"] = r["stdout"][-2000:]
        return r

    def settle(self) -> dict:
        """A CHECKPOINT (no run pays for the previous one's dirty buffers), then a quiet machine."""
        self.run.pg.checkpoint()
        return self.quiet.wait()

    def timeout(self) -> float:
        """--timeout, else 10 x the slowest reference run so far (at least 120 s), else an hour: a hang is
        reported with a py-spy dump, not waited for."""
        if self.timeout_s:
            return self.timeout_s
        return max(120.0, 10 * max(self._reference_s)) if self._reference_s else 3600.0

    def after(self, op: Operation, r: dict) -> None:
        """What a finished run leaves for the next ones: its file, its size, the target's state."""
        run = self.run
        if op.side == "reference" and r["ok"]:
            self._reference_s.append(r["wall_s"])
        if op.group == "backup" and r["ok"]:
            path = reference.dump_path(run, op.key) if op.side == "reference" else \
                ours.saved_to(r["stdout"], run.backup_dir)
            if path is None or not path.exists():
                r.update(ok=False, error=f"no backup file found (output: {r['stdout'][-300:]!r})")
                return
            run.files[op.key] = path
            r["output_bytes"] = reference.output_bytes(path)
        elif op.group == "diff" and r["ok"]:
            r["changes"] = ours.diff_changes(r["stdout"])
        elif op.group in ("restore", "check"):
            run.target_state = "restored" if r["ok"] else "unknown"

    # --- the target's state -------------------------------------------------------------------------------
    def ensure_changed(self) -> None:
        """The target holds the backup's rows with ~1 % changed since: the state every measured restore and
        the changed diff start from (untimed: a restore from pg_dump's file when the target is not equal)."""
        run = self.run
        if run.target_state == "changed":
            return
        if run.target_state != "restored":
            dump = run.files.get("pg_dump_fc")
            if dump is None:
                raise HarnessError("pg_dump -Fc produced no file to fill the target with")
            r = measure.run(reference.truncate_and_restore(run))
            if r["rc"] != 0:
                raise HarnessError(f"filling the target failed: {r['stderr'][-1000:]}")
        datasets.change_target(run.pg, run.ds)
        run.target_state = "changed"

    def check_oracle(self, op: Operation) -> None:
        self.log(f"  oracle after {op.label}: comparing {self.run.ds.target} with {self.run.ds.db}")
        verdict = self.oracle.compare(self.run.target_url)
        self.oracle_verdicts[op.key] = verdict
        self.log(f"  oracle: {verdict['verdict']} ({verdict['seconds']} s)"
                 + (f": {verdict['detail'][:300]}" if verdict["detail"] else ""))


def _failure(r: dict) -> str:
    if r.get("timed_out"):
        return f"timed out after {r['timed_out']:g} s (killed; where it was: py_spy_dump in the JSON)"
    lines = (r["stderr"] or r["stdout"]).strip().splitlines() or [f"exit {r['rc']}"]
    return f"exit {r['rc']}: {lines[-1][:300]}"


def _line(r: dict) -> str:
    if not r["ok"]:
        return "FAILED: " + r["error"].splitlines()[0]
    text = f"{r['wall_s']:7.2f} s  rss {r['client_peak_rss_mb']:6.1f} MB"
    if "worker" in r:
        text += f"  worker {r['worker']['peak_process_rss_mb']:6.1f} MB"
    if "output_bytes" in r:
        text += f"  {r['output_bytes'] / 2**20:8.1f} MB out"
    cpu = r["client_cpu_s"] + (r.get("worker") or {}).get("cpu_s", 0)
    text += f"  cpu ours {cpu:.1f} s, server {r['server_cpu_s'] if r['server_cpu_s'] is not None else '-'} s"
    before = r.get("busy_cores_before")
    return text + (f"  [busy {before:.1f}/{r['machine_busy_cores']:.1f}]" if before is not None else "")


def scratch(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
