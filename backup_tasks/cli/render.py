"""Job results (JSON dicts) rendered as the seed's reports. Same output whether the job ran here or on a worker."""

from __future__ import annotations

from typing import Any

import click


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.2f} TB"


def timestamp(value: str | None) -> str:
    """ISO timestamps as the seed prints them: 2025-11-01T12:34:56.789Z."""
    if not value:
        return "unknown"
    text = value.replace("+00:00", "Z")
    if "." in text:
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        return f"{head}.{digits[:3].ljust(3, '0')}Z"
    return text if text.endswith("Z") else text + "Z"


def render_create(r: dict[str, Any]) -> None:
    click.echo(f"Migration version: {r.get('migration_version') or '(none)'}")
    for t in r["tables"]:
        click.echo(f"- {t['name']}: {t['rows']} rows ({human_size(t['bytes'])})")
    click.echo(f"Total: {len(r['tables'])} tables, {r['total_rows']} rows")
    if r.get("large_objects"):
        click.echo(f"Large objects: {r['large_objects']} ({human_size(r.get('large_object_bytes') or 0)})")
    for item in r.get("not_included") or []:
        click.echo(f"Not included: {item['kind']} {item['name']} ({item['reason']})")
    click.echo(f"Backup size: {human_size(r['uncompressed_bytes'])} → {human_size(r['compressed_bytes'])} (compressed)")
    click.echo(f"Saved to: {r['path']}")
    if r.get("upload"):
        up = r["upload"]
        click.echo(f"Uploaded to: {up.get('location') or up.get('key') or up.get('name')}")


def _diff_line(name: str, t: dict[str, Any]) -> str:
    line = f"  {name}: {t['current_rows']} → {t['backup_rows']} ({t['diff']:+d})"
    if t.get("to_insert") is not None:
        changes = [f"{label} {t[key]}" for key, label in
                   (("to_insert", "insert"), ("to_delete", "delete"), ("to_change", "change")) if t.get(key)]
        line += f"  [{', '.join(changes)}]" if changes else "  [no row changes]"
    if not t.get("in_backup", True):
        line += "  (not in backup: will be emptied)"
    return line


def render_diff_tables(d: dict[str, Any]) -> None:
    for name, t in d["tables"].items():
        click.echo(_diff_line(name, t))


def render_diff(d: dict[str, Any]) -> None:
    click.echo(f"Backup created at: {timestamp(d.get('backup_timestamp'))}")
    cur, bak = d.get("current_migration_version"), d.get("backup_migration_version")
    if cur != bak:
        click.echo(f"Migration version: {cur or '(none)'} (database) → {bak or '(none)'} (backup)")
    click.echo("")
    click.echo("Table Diff Summary:")
    render_diff_tables(d)
    click.echo("")
    click.echo(f"Total: {d['total_current_rows']} rows → {d['total_backup_rows']} rows ({d['total_diff']:+d})")


def render_restore(r: dict[str, Any]) -> None:
    click.echo("Starting restore transaction...")
    for name in r.get("truncated", []):
        click.echo(f"Truncating table: {name}")
    click.echo(f"Adjusting migration version: {r.get('migration_version_before') or '(none)'} → "
               f"{r.get('migration_version_after') or '(none)'}")
    for t in r.get("tables", []):
        click.echo(f"Restoring table: {t['name']} ({t['rows']} rows)")
    if r.get("sequences_restored"):
        click.echo(f"Restoring sequences: {r['sequences_restored']}")
    click.echo("Committing transaction...")
    click.echo("")
    click.echo(r["message"])


def render_verify(v: dict[str, Any]) -> None:
    click.echo(f"{v['name']}: OK")
    click.echo(f"  created at: {timestamp(v.get('timestamp'))}")
    click.echo(f"  migration version: {v.get('migration_version') or '(none)'}")
    click.echo(f"  format version: {v.get('format_version')}")
    click.echo(f"  tables: {v['tables']}, rows: {v['rows']}, uncompressed: {human_size(v['uncompressed_bytes'])}")
    checksum = {"ok": "matches the recorded SHA-256", "missing": "no SHA-256 recorded (sidecar missing)"}
    click.echo(f"  checksum: {checksum.get(v.get('checksum'), v.get('checksum'))}")
