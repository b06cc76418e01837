"""The parts of a parallel backup: what each holds (PartSpec), and how one is written (write_part), in any process.

A part is a run of whole tables, one page range of a table too big for one part, or a range of large objects. It
is written as one gzip member by a process that joins the coordinator's exported snapshot, so every part reads
exactly the same database; specs and results are plain JSON, so a Celery worker on another host can write one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..archive import document
from ..archive.encryption import EncryptingSink
from ..archive.writer import GzipStream, Sink
from ..errors import BackupError
from ..pg.connection import connection
from ..pg.largeobjects import list_large_objects, read_chunks
from ..pg.snapshot import END, iter_batches, join_snapshot

TABLE, RANGE, OBJECTS = "table", "range", "objects"
# A part's hidden file next to the backup while it is assembled: never a backup name; swept when stale (backup.py).
PART_FILE_PREFIX = ".backup_tasks-part-"


@dataclass
class Unit:
    kind: str  # TABLE: a whole table (its opening, rows, close); RANGE: rows of a split table; OBJECTS: LO chunks
    key: str
    statement: str | None = None  # the SELECT of its rows (TABLE, RANGE)
    opening: str | None = None  # TABLE: the table object's opening (archive/document.table_open), as text
    oids: tuple[int, int | None] | None = None  # OBJECTS: large objects with first <= oid < stop
    small: bool = False  # read in one round trip (pg/snapshot.is_small)
    relation: str | None = None  # TABLE, RANGE: the table's quoted name, locked as the part starts (join_snapshot)


@dataclass
class PartSpec:
    index: int
    units: list[Unit]
    estimate: int  # bytes the part reads (pg_table_size of its tables, or its share of a split one)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartSpec:
        units = [Unit(**{**u, "oids": tuple(u["oids"]) if u.get("oids") else None}) for u in data["units"]]
        return cls(data["index"], units, data["estimate"])

    def describe(self) -> str:
        keys = [u.key for u in self.units]
        kind = "rows of " if self.units and self.units[0].kind == RANGE else ""
        return f"part {self.index + 1} ({kind}{', '.join(keys[:3])}{' …' if len(keys) > 3 else ''})"


@dataclass
class PartTask:
    """What every part of one backup shares."""

    database_url: str
    snapshot: str
    compress_level: int
    batch_bytes: int
    # An encrypted backup's parts are age-encrypted to this one-backup public key (archive/encryption.PartKey).
    seal_to: str | None = None


@dataclass
class PartResult:
    index: int
    output: str  # where the member was written (a path, an object key)
    rows: list[int] = field(default_factory=list)  # per unit
    uncompressed: list[int] = field(default_factory=list)  # per unit
    compressed: int = 0
    seconds: float = 0.0
    object_bytes: int = 0  # the large objects' own bytes (their chunks' data)
    writer: str | None = None  # who wrote it (host:pid:token), when a board handed it out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartResult:
        return cls(**data)


ProgressTick = Callable[[int, int], None]  # (rows, uncompressed bytes) written since the last call


def write_part(spec: PartSpec, task: PartTask, sink: Sink, output: str,
               tick: ProgressTick | None = None) -> PartResult:
    """Write the part as one gzip member into `sink`, reading in the coordinator's snapshot. Raises BackupError;
    the caller removes the output of a part that failed."""
    started = time.monotonic()
    stream = GzipStream(EncryptingSink(sink, [task.seal_to]) if task.seal_to else sink, task.compress_level)
    result = PartResult(spec.index, output)
    try:
        with connection(task.database_url, application="backup_tasks_part") as conn:
            join_snapshot(conn, task.snapshot, list(dict.fromkeys(u.relation for u in spec.units if u.relation)))
            _write_units(conn, spec, task, stream, result, tick or (lambda rows, size: None))
        result.compressed, _ = stream.finish()
    except BaseException:
        stream.abort()
        raise
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _write_units(conn, spec: PartSpec, task: PartTask, stream: GzipStream, result: PartResult,
                 tick: ProgressTick) -> None:
    selects = [u for u in spec.units if u.kind in (TABLE, RANGE)]
    counts = {id(u): [0, 0] for u in spec.units}  # rows, bytes

    def emit(unit: Unit, data: bytes, rows: int) -> None:
        stream.write(data)
        counts[id(unit)][0] += rows
        counts[id(unit)][1] += len(data)
        tick(rows, len(data))

    current = None
    for i, batch, sizer in iter_batches(conn, [u.statement for u in selects], task.batch_bytes,
                                        [u.small for u in selects]):
        unit = selects[i]
        if unit is not current:
            current = unit
            if unit.opening is not None:
                emit(unit, unit.opening.encode(), 0)
        if batch is END:
            if unit.kind == TABLE:
                emit(unit, document.table_close(counts[id(unit)][0]), 0)
            continue
        data = document.rows(batch, after_rows=counts[id(unit)][0] > 0)
        sizer.observe(len(batch), len(data))
        emit(unit, data, len(batch))
    for unit in spec.units:
        if unit.kind == OBJECTS:
            result.object_bytes += _write_objects(conn, unit, task, lambda data, rows, u=unit: emit(u, data, rows),
                                                  counts[id(unit)])
    result.rows = [counts[id(u)][0] for u in spec.units]
    result.uncompressed = [counts[id(u)][1] for u in spec.units]


def _write_objects(conn, unit: Unit, task: PartTask, emit: Callable[[bytes, int], None], count: list[int]) -> int:
    first, stop = unit.oids
    data_bytes = 0
    with conn.cursor() as cur:
        objects = list_large_objects(cur, first, stop)
        for batch in read_chunks(cur, objects, task.batch_bytes):
            emit(document.rows(batch, after_rows=count[0] > 0), len(batch))
            data_bytes += sum((len(row[3]) - 2) // 2 for row in batch)
    return data_bytes


def part_failure(spec: PartSpec, exc: BaseException) -> BackupError:
    """The error that fails the whole backup, naming the part."""
    if isinstance(exc, BackupError):
        return type(exc)(f"{spec.describe()} failed: {exc.message}", exc.hint, transient=exc.transient)
    return BackupError(f"{spec.describe()} failed: {type(exc).__name__}: {exc}",
                       hint="See the worker's log; no backup file was kept.")
