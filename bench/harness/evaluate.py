"""From runs to figures: each operation's summary over its repetitions, each target's verdict, the growth
between scales, CPU-seconds per GB."""

from __future__ import annotations

import statistics

from .operations import OPERATIONS
from .targets import GROWTH, TARGETS, Target

GiB = 2**30


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> dict:
    """Medians of times, sizes and CPU; maxima of peaks (memory is not noisy the way time is: the worst run
    is the figure a memory limit must hold for)."""
    ok = [r for r in runs if r.get("ok")]
    worker = [r["worker"] for r in ok if "worker" in r]
    cpu_total = [r["client_cpu_s"] + (r.get("worker") or {}).get("cpu_s", 0) + (r.get("server_cpu_s") or 0)
                 for r in ok]
    return {
        "runs": len(runs), "ok": len(ok), "errors": [r.get("error") for r in runs if not r.get("ok")],
        "time_s": _median([r["wall_s"] for r in ok]), "all_time_s": [r["wall_s"] for r in ok],
        "output_bytes": _median([r.get("output_bytes") for r in ok]),
        "rss_mb": max((r["client_peak_rss_mb"] for r in ok), default=None),
        "worker_rss_mb": max((w["peak_process_rss_mb"] for w in worker), default=None),
        "worker_pss_mb": max((w.get("peak_process_pss_mb") or 0 for w in worker), default=None),
        "worker_pool_rss_mb": max((w["peak_pool_rss_mb"] for w in worker), default=None),
        "cpu_client_s": _median([r["client_cpu_s"] for r in ok]),
        "cpu_worker_s": _median([w["cpu_s"] for w in worker]),
        "cpu_server_s": _median([r.get("server_cpu_s") for r in ok]),
        "cpu_total_s": _median(cpu_total),
        "busy_before": [r.get("busy_cores_before") for r in runs],
        "changes": next((r["changes"] for r in reversed(ok) if "changes" in r), None),
    }


def summaries(res: dict) -> dict[str, dict]:
    return {key: summarise(runs) for key, runs in res["runs"].items()}


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def target_value(t: Target, res: dict, s: dict[str, dict]):
    op, ref = s.get(t.op) or {}, s.get(t.ref) or {}
    if t.metric == "oracle":
        return (res["oracle"].get(t.op) or {}).get("verdict")
    if t.metric == "changes":
        changes = op.get("changes")
        return None if changes is None else ("some" if changes else "none")
    return {
        "time": lambda: _ratio(op.get("time_s"), ref.get("time_s")),
        "size": lambda: _ratio(op.get("output_bytes"), ref.get("output_bytes")),
        "rss": lambda: op.get("rss_mb"),
        "worker_rss": lambda: op.get("worker_rss_mb"),
        "rss_ratio": lambda: _ratio(op.get("rss_mb"), ref.get("rss_mb")),
        "cpu_work": lambda: _ratio(op.get("cpu_total_s"), ref.get("cpu_total_s")),
        "extra_s": lambda: None if None in (op.get("time_s"), ref.get("time_s")) else op["time_s"] - ref["time_s"],
    }[t.metric]()


def evaluate(t: Target, res: dict, s: dict[str, dict]) -> dict:
    """met: True / False / None (not measurable here: the operation is not in this engine)."""
    out = {"dataset": res["label"], "issue": t.issue, "op": t.op, "metric": t.metric, "limit": t.limit,
           "ref": t.ref, "value": None, "met": None, "note": ""}
    for key in (t.op, t.ref):
        if key and key in res["skipped"]:
            out["note"] = res["skipped"][key]
            return out
    value = target_value(t, res, s)
    out["value"] = round(value, 3) if isinstance(value, float) else value
    if value is None:
        failed = [k for k in (t.op, t.ref) if k and not (s.get(k) or {}).get("ok")]
        out.update(met=False, note="did not run successfully: " + ", ".join(failed or [t.op]))
    elif t.metric in ("oracle", "changes"):
        out["met"] = value == t.limit
    else:
        out["met"] = value <= t.limit
    return out


def _selected(t: Target, res: dict) -> bool:
    """A target of this dataset whose operations were chosen (all of them, unless --only)."""
    chosen = set(res["runs"]) | set(res["skipped"])
    return res["kind"] in t.kinds and t.op in chosen and (t.ref is None or t.ref in chosen)


def evaluate_all(results: list[dict]) -> list[dict]:
    verdicts = []
    for res in results:
        s = summaries(res)
        verdicts += [evaluate(t, res, s) for t in TARGETS if _selected(t, res)]
    return verdicts + growth(results)


def growth(results: list[dict]) -> list[dict]:
    """Largest pgbench scale against the smallest: time per row and peak RSS (issue 6: linear and flat)."""
    pg = sorted((r for r in results if r["kind"] == "pgbench"), key=lambda r: r["scale"])
    if len(pg) < 2:
        return []
    lo, hi = pg[0], pg[-1]
    rows_lo, rows_hi = lo["facts"]["rows_estimate"], hi["facts"]["rows_estimate"]
    out = []
    for op, t_limit, rss_limit in GROWTH:
        a, b = summarise(lo["runs"].get(op, [])), summarise(hi["runs"].get(op, []))
        per_row = _ratio(_ratio(b["time_s"], rows_hi), _ratio(a["time_s"], rows_lo))
        rss = _ratio(b["rss_mb"], a["rss_mb"])
        label = f"growth s{lo['scale']}->s{hi['scale']}"
        for metric, value, limit in (("time_per_row", per_row, t_limit), ("rss_growth", rss, rss_limit)):
            out.append({"dataset": label, "issue": 6, "op": op, "metric": metric, "limit": limit, "ref": None,
                        "value": round(value, 3) if value is not None else None,
                        "met": None if value is None and op in lo["skipped"] else
                        (value is not None and value <= limit), "note": ""})
    return out


def cpu_per_gb(res: dict, s: dict[str, dict]) -> dict:
    """Issue 15: CPU-seconds per GB of table data, ours (client + worker) and the server's, per --jobs N."""
    gb = res["facts"]["data_bytes"] / GiB
    out = {}
    for key in ("create_jobs1", "create_jobs2", "create_jobs4", "create_queued", "pg_dump_fc"):
        x = s.get(key)
        if x and x["ok"] and gb:
            ours = (x["cpu_client_s"] or 0) + (x["cpu_worker_s"] or 0)
            out[key] = {"ours_cpu_s_per_gb": round(ours / gb, 2),
                        "server_cpu_s_per_gb": round((x["cpu_server_s"] or 0) / gb, 2)}
    return out


def cpu_floors(res: dict, s: dict[str, dict], cores: int) -> dict:
    """For each time target of ours: the ratio it could reach at best on `cores` cores, were the run's CPU-seconds
    (client + worker + server) spread over every core with none idle: cpu_total / cores / the reference's time.
    A limit below the floor cannot be met on this machine without less work; a missed limit well above it says the
    gap is waiting (round trips, one busy core) rather than work. CPU-seconds grow when processes contend for the
    cores (caches, switches), so the floor is of this run's work, not of the work alone."""
    ours = {op.key for op in OPERATIONS if op.side == "ours"}
    out = {}
    for t in TARGETS:
        if t.metric != "time" or res["kind"] not in t.kinds or t.op not in ours:
            continue
        x, ref = s.get(t.op) or {}, s.get(t.ref) or {}
        if x.get("ok") and x.get("cpu_total_s") and ref.get("time_s"):
            floor = x["cpu_total_s"] / cores
            out[f"{t.op} / {t.ref}"] = {"floor_s": round(floor, 3), "floor_ratio": round(floor / ref["time_s"], 3),
                                       "limit": t.limit, "cores": cores}
    return out
