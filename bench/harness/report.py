"""The printed table, the verdict line and the JSON document of a run."""

from __future__ import annotations

import json
from pathlib import Path

from .evaluate import cpu_per_gb, summaries
from .operations import OPERATIONS
from .targets import TARGETS, describe, row_reference

MiB = 2**20
SKEWED_SHARE = 0.6  # issue 15: the skewed dataset's largest table holds at least this share of the data
HEAD = ["operation", "median s", "x ref", "out MB", "x size", "rss MB", "worker MB rss/pss", "cpu s ours/pg",
        "targets", "met?"]


def _f(v, spec=".2f") -> str:
    return "" if v is None else format(v, spec)


def _mb(n) -> str:
    """Sizes from 0.02 MB (many small tables, compressed) to GB: two significant figures at least."""
    if not n:
        return ""
    mb = n / MiB
    return format(mb, ".0f" if mb >= 100 else ".1f" if mb >= 1 else ".3f")


def dataset_line(res: dict) -> str:
    f = res["facts"]
    built = "reused" if f.get("built_s") is None else f"built in {f['built_s']:.0f} s"
    oracle = ", ".join(f"{k} {v['verdict']}" for k, v in res["oracle"].items()) or "not run"
    extra = f"; rows of {f['row_mb']:g} MB each (a single row's own size is outside the memory bound)" \
        if "row_mb" in f else ""
    if res["kind"] == "skewed" and f["largest_share"] < SKEWED_SHARE:
        extra += f"; WARNING: the largest table holds less than {SKEWED_SHARE:.0%} (issue 15): more mixed rows"
    return (f"{res['label']} ({res['db']}): {f['tables']} tables, ~{f['rows_estimate']:,} rows, "
            f"{f['data_bytes'] / MiB:,.0f} MB of table data, largest table {f['largest_table']} "
            f"{f['largest_share']:.0%}; {built}{extra}; oracle: {oracle}")


def _row(res: dict, op, s: dict, verdicts: list[dict]) -> list[str]:
    label = f"{res['label']}: {op.label}"
    mine = [v for v in verdicts if v["op"] == op.key and v["dataset"] == res["label"]]
    wanted = " ".join(dict.fromkeys(describe(t) for t in TARGETS if t.op == op.key and res["kind"] in t.kinds))
    if op.key in res["skipped"]:
        return [label, "n/a", "", "", "", "", "", "", wanted, res["skipped"][op.key]]
    x = s.get(op.key)
    if x is None:
        return []
    if not x["ok"]:
        return [label, "FAILED", "", "", "", "", "", "", wanted, "NO: " + (x["errors"][0] or "").splitlines()[0]]
    ref = s.get(row_reference(op) or "")
    ratio = x["time_s"] / ref["time_s"] if ref and ref.get("time_s") else None
    size = x["output_bytes"] / ref["output_bytes"] if ref and x["output_bytes"] and ref.get("output_bytes") else None
    cpu = f"{(x['cpu_client_s'] or 0) + (x['cpu_worker_s'] or 0):.1f}/{_f(x['cpu_server_s'], '.1f') or '-'}"
    return [label, _f(x["time_s"]), _f(ratio), _mb(x["output_bytes"]), _f(size),
            _f(x["rss_mb"], ".0f"), _worker_mb(x), cpu,
            wanted or ("(reference)" if op.side == "reference" else ""), _met(mine)]


def _worker_mb(x: dict) -> str:
    """The worker's peak RSS (the targets' measure), and its PSS (shared pages split) after a slash."""
    if x["worker_rss_mb"] is None:
        return ""
    return _f(x["worker_rss_mb"], ".0f") + (f"/{x['worker_pss_mb']:.0f}" if x.get("worker_pss_mb") else "")


def _met(verdicts: list[dict]) -> str:
    if not verdicts:
        return ""
    failed = [f"{v['metric']} {v['value'] if v['value'] is not None else v['note']}" for v in verdicts
              if v["met"] is False]
    if failed:
        return "NO (" + "; ".join(failed) + ")"
    return "n/a" if all(v["met"] is None for v in verdicts) else "yes"


def rows(results: list[dict], verdicts: list[dict], floors: dict[str, dict] | None = None) -> list[list[str]]:
    """floors: evaluate.cpu_floors per dataset label (main.finish computes them once, for the JSON too)."""
    out = []
    for res in results:
        s = summaries(res)
        out += [r for r in (_row(res, op, s, verdicts) for op in OPERATIONS) if r]
        for key, v in cpu_per_gb(res, s).items():
            out.append([f"{res['label']}: CPU-s per GB, {key}", "", "", "", "", "", "",
                        f"{v['ours_cpu_s_per_gb']:.1f}/{v['server_cpu_s_per_gb']:.1f}", "(informational)", ""])
        for key, v in (floors or {}).get(res["label"], {}).items():
            out.append([f"{res['label']}: CPU floor on {v['cores']} cores, {key}", "", _f(v["floor_ratio"]), "", "",
                        "", "", "", f"(informational: its CPU-s / {v['cores']}; target <={v['limit']}x)", ""])
    for v in (v for v in verdicts if v["metric"] in ("time_per_row", "rss_growth")):
        out.append([f"{v['dataset']}: {v['op']} {v['metric']}", "", _f(v["value"], ".3f"), "", "", "", "", "",
                    f"<={v['limit']}x", "yes" if v["met"] else ("n/a" if v["met"] is None else "NO")])
    return out


def table(rows_: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows_ + [HEAD]) for i in range(len(HEAD))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(HEAD, widths)), "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows_]
    return "\n".join(line.rstrip() for line in lines)


def verdict(verdicts: list[dict]) -> str:
    unmet = [f"{v['dataset']} {v['op']} {v['metric']}" for v in verdicts if v["met"] is False]
    missing = sorted({v["note"] for v in verdicts if v["met"] is None and v["note"]})
    if unmet:
        return f"TARGETS NOT MET ({len(unmet)} of {len(verdicts)}): " + "; ".join(unmet)
    if missing:
        n = sum(1 for v in verdicts if v["met"] is None)
        return f"TARGETS MET, BUT {n} NOT MEASURABLE HERE: " + "; ".join(missing)
    return "ALL TARGETS MET"


def write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(path)
