"""A backup written by several processes at once, in one snapshot, as the one document one process writes.

The coordinator (run_parallel_backup, in the job that was asked for the backup) opens the snapshot like a single
backup, plans the parts (core/parts.py), exports the snapshot and keeps its transaction open until every part is
done. Parts are written in any order by a PartRunner (a local process pool here; Celery workers in tasks.py),
each as one gzip member. As they finish, the coordinator appends them to the backup in plan order, with the small
pieces between them (a split table's opening, the separators between its ranges, its row_count, the document's
head and tail) compressed as members of their own: a gzip file of several members is one stream to every reader
(RFC 1952), and the decompressed bytes are the document a single process writes, byte for byte.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from isal import igzip

from .. import dsn, errors
from ..archive import document
from ..archive.encryption import PartKey
from ..archive.reader import LARGE_OBJECT_COLUMNS, LARGE_OBJECTS
from ..archive.writer import Sink
from ..errors import BackupError
from ..memory import pin_mmap_threshold
from ..models import BackupResult, TableReport
from ..pg.catalog import Table
from ..pg.connection import connection, keep_alive
from ..pg.snapshot import SnapshotInfo, export_snapshot, is_small, open_backup_snapshot, select_rows
from ..progress import Progress, ProgressFn, Throttle
from .backup import DEFAULT_OUTPUT_DIR, backup_metadata, manifest_of, metadata_document, table_header
from .destination import Destination, LocalDestination, begin_sealed, stored_digest, writing
from .options import EngineOptions
from .parts import OBJECTS, RANGE, TABLE, PartResult, PartSpec, PartTask, Unit, part_failure, write_part

MiB = 1 << 20
MIN_TID_RANGE_SERVER = 140000  # TID Range Scans: PostgreSQL 14; before, a page range is a sequential scan
OBJECTS_PER_PART = 2000


# --- the plan ---------------------------------------------------------------------------------------------

@dataclass
class Split:
    """A table too big for one part: its opening and close are the coordinator's, its rows come in ranges."""

    table: int
    key: str
    opening: bytes
    parts: list[int] = field(default_factory=list)


@dataclass
class Plan:
    parts: list[PartSpec]
    # Document order: ("glue", bytes) | ("part", index) | ("split", Split) | ("objects", [indices], after_tables)
    layout: list[tuple]


def plan_backup(cur, snap: SnapshotInfo, metadata: dict[str, Any], options: EngineOptions,
                server_version_num: int) -> Plan:
    """Whole tables grouped into parts of about split_min_bytes / 2, a table over split_min_bytes cut into page
    ranges of about that size (its TOAST counted: a table whose bytes are mostly in TOAST has few pages), large
    objects in ranges of oids. Everything in the file's order."""
    target = max(options.split_min_bytes // 2, 1)
    can_split = server_version_num >= MIN_TID_RANGE_SERVER
    parts: list[PartSpec] = []
    layout: list[tuple] = [("glue", document.head(metadata))]
    group: list[Unit] = []
    size = 0

    def close_group() -> None:
        nonlocal group, size
        if group:
            parts.append(PartSpec(len(parts), group, size))
            layout.append(("part", parts[-1].index))
            group, size = [], 0

    for index, table in enumerate(snap.catalog.tables):
        opening = document.table_open(table.key, table_header(table), first=index == 0)
        relation = table.ident.as_string(cur)
        if can_split and not table.filter and table.data_bytes > options.split_min_bytes and table.heap_pages > 1:
            close_group()
            split = Split(index, table.key, opening)
            for pages, share in _page_ranges(table, target):
                split.parts.append(len(parts))
                statement = select_rows(table, pages=pages).as_string(cur)
                parts.append(PartSpec(len(parts), [Unit(RANGE, table.key, statement, relation=relation)], share))
            layout.append(("split", split))
            continue
        group.append(Unit(TABLE, table.key, select_rows(table).as_string(cur), opening.decode(),
                          small=is_small(table, options.batch_bytes), relation=relation))
        size += table.data_bytes
        if size >= target:
            close_group()
    close_group()
    _plan_objects(snap, parts, layout)
    return Plan(parts, layout)


def _page_ranges(table: Table, target: int) -> Iterator[tuple[tuple[int, int | None], int]]:
    count = min(table.heap_pages, max(2, math.ceil(table.data_bytes / target)))
    step = math.ceil(table.heap_pages / count)
    share = table.data_bytes // count
    for first in range(0, table.heap_pages, step):
        stop = first + step
        yield (first, stop if stop < table.heap_pages else None), share  # the last range: to the end


def _plan_objects(snap: SnapshotInfo, parts: list[PartSpec], layout: list[tuple]) -> None:
    objects = snap.large_objects
    if not objects:
        layout.append(("glue", document.tail(False)))
        return
    indices = []
    for start in range(0, len(objects), OBJECTS_PER_PART):
        stop = objects[start + OBJECTS_PER_PART].oid if start + OBJECTS_PER_PART < len(objects) else None
        unit = Unit(OBJECTS, LARGE_OBJECTS, oids=(objects[start].oid if start else 0, stop))
        indices.append(len(parts))
        parts.append(PartSpec(len(parts), [unit], 0))
    layout.append(("objects", indices, bool(snap.catalog.tables)))


# --- assembling the file ------------------------------------------------------------------------------------

class Assembly:
    """Appends the parts to the backup in plan order as they arrive (in any order), with the glue between them
    as small members of its own. Counts each table's rows and bytes as the single writer does."""

    def __init__(self, plan: Plan, sink: Sink, compress_level: int, read_part: Callable[[str], Iterator[bytes]],
                 remove_part: Callable[[str], None]):
        self.plan, self.sink, self.level = plan, sink, compress_level
        self._read, self._remove = read_part, remove_part
        self.results: dict[int, PartResult] = {}
        self._next = 0  # the first layout item not yet written
        self.uncompressed = 0
        self.compressed = 0
        self.tables: list[TableReport] = []
        self.objects_chunks = 0
        self._sha = hashlib.sha256()

    def add(self, result: PartResult) -> None:
        self.results[result.index] = result
        while self._next < len(self.plan.layout) and self._ready(self.plan.layout[self._next]):
            self._write(self.plan.layout[self._next])
            self._next += 1

    @property
    def complete(self) -> bool:
        return self._next == len(self.plan.layout)

    def _ready(self, item: tuple) -> bool:
        kind = item[0]
        if kind == "glue":
            return True
        if kind == "part":
            return item[1] in self.results
        indices = item[1].parts if kind == "split" else item[1]
        return all(i in self.results for i in indices)

    def _write(self, item: tuple) -> None:
        kind = item[0]
        if kind == "glue":
            self._glue(item[1])
        elif kind == "part":
            result = self.results[item[1]]
            self._member(result)
            spec = self.plan.parts[item[1]]
            for unit, rows, size in zip(spec.units, result.rows, result.uncompressed, strict=True):
                # As the single writer counts a table's bytes: from after its opening to its close.
                opening = len(unit.opening.encode()) if unit.opening else 0
                self.tables.append(TableReport(name=unit.key, rows=rows, bytes=size - opening))
        elif kind == "split":
            split = item[1]
            rows, size = self._ranges(document.ROW_SEPARATOR, split.opening, split.parts)
            self.tables.append(TableReport(name=split.key, rows=rows, bytes=size))
        else:
            header = {"columns": LARGE_OBJECT_COLUMNS}
            self.objects_chunks, _ = self._ranges(document.ROW_SEPARATOR,
                                                  document.large_objects_open(header, after_tables=item[2]), item[1])
            self._glue(document.tail(True))

    def _ranges(self, separator: bytes, opening: bytes, indices: list[int]) -> tuple[int, int]:
        """A table (or the large objects' section) whose rows come in several parts: opening, the parts with a
        separator between two that hold rows, the close with the total row count."""
        self._glue(opening)
        before = self.uncompressed
        rows = 0
        for i in indices:
            result = self.results[i]
            if result.rows[0]:
                if rows:
                    self._glue(separator)
                rows += result.rows[0]
            self._member(result)
        self._glue(document.table_close(rows))
        return rows, self.uncompressed - before

    def _glue(self, data: bytes) -> None:
        if data:
            self._out(igzip.compress(data, compresslevel=self.level))
            self.uncompressed += len(data)

    def _member(self, result: PartResult) -> None:
        for chunk in self._read(result.output):
            self._out(chunk)
        self.uncompressed += sum(result.uncompressed)
        self._remove(result.output)

    def _out(self, data: bytes) -> None:
        self.sink.write(data)
        self._sha.update(data)
        self.compressed += len(data)

    def finish(self) -> tuple[int, str]:
        assert self.complete, "parts are missing"
        self.sink.finish()
        return self.compressed, self._sha.hexdigest()

    def abort(self) -> None:
        self.sink.abort()


# --- running the parts ------------------------------------------------------------------------------------

class PartStore(Protocol):
    """Where parts are written (core/destination.py: LocalPartStore, S3PartStore); picklable, for pool processes."""

    def open(self, job: str, part: str) -> tuple[Sink, str]: ...

    def read(self, output: str) -> Iterator[bytes]: ...

    def remove(self, output: str) -> None: ...

    def remove_all(self, job: str) -> None: ...


class PartRunner(Protocol):
    """Runs every part (any order, concurrently), calling on_done(result) in the caller's thread as each
    finishes and keepalive() about every second; raises the first failure (naming the part) after stopping the
    others. Removes the outputs of parts that did not reach on_done."""

    def run(self, parts: list[PartSpec], task: PartTask, on_done: Callable[[PartResult], None],
            keepalive: Callable[[], None], progress: Callable[[int, int], None]) -> None: ...

    def read(self, output: str) -> Iterator[bytes]: ...

    def remove(self, output: str) -> None: ...


def run_parallel_backup(output_dir: Path | None = None, *, database_url: str, runner: PartRunner,
                        progress: ProgressFn | None = None, options: EngineOptions = EngineOptions(),
                        destination: Destination | None = None) -> BackupResult:
    """Back up with the parts written by `runner`; the same document (and result) as run_backup."""
    pin_mmap_threshold()
    destination = destination or LocalDestination(Path(output_dir) if output_dir is not None else DEFAULT_OUTPUT_DIR)
    started = time.monotonic()
    destination.prepare()
    report = Throttle(progress)
    with connection(database_url) as conn:
        snap = open_backup_snapshot(conn, options.lock_timeout_s)
        metadata = backup_metadata(snap, dsn.parse(database_url).host)
        cur = conn.cursor()
        plan = plan_backup(cur, snap, metadata_document(metadata), options, conn.server_version)
        part_key = PartKey() if options.keys.encrypts else None
        task = PartTask(database_url, export_snapshot(cur), options.compress_level, options.batch_bytes,
                        seal_to=part_key.recipient if part_key else None)
        with writing(destination):
            # Encrypted, the assembled stream is one age stream (the parts stay plain gzip in their part store, which
            # is the job's own temporary space): the file stays one standard age file.
            sink = begin_sealed(destination, snap.taken_at, snap.migration_version, options.keys)
            read = (lambda output: part_key.open(runner.read(output), "a part")) if part_key else runner.read
            assembly = Assembly(plan, sink, options.compress_level, read, runner.remove)
            done = _Counter(report, sum(t.estimated_rows for t in snap.catalog.tables) or None)
            try:
                runner.run(plan.parts, task, assembly.add, lambda: keep_alive(conn), done.add)
                compressed, digest = stored_digest(sink, assembly.finish())
            except BaseException:
                assembly.abort()
                raise
            result = _result(snap, metadata, plan, assembly, compressed, digest).model_copy(
                update={"recipients": list(options.keys.recipients)})
            name, where = destination.publish(digest, manifest_of(result, metadata))
    report.flush()
    return result.model_copy(update={"name": name, "path": where,
                                     "duration_s": round(time.monotonic() - started, 3)})


def _result(snap: SnapshotInfo, metadata, plan: Plan, assembly: Assembly, compressed: int,
            digest: str) -> BackupResult:
    writers = {r.writer.rsplit(":", 1)[0] for r in assembly.results.values() if r.writer}
    return BackupResult(
        path="", name="", timestamp=snap.taken_at, migration_version=snap.migration_version,
        database_name=snap.database, tables=assembly.tables, total_rows=sum(t.rows for t in assembly.tables),
        uncompressed_bytes=assembly.uncompressed, compressed_bytes=compressed, sha256=digest, duration_s=0.0,
        large_objects=len(snap.large_objects),
        large_object_bytes=sum(r.object_bytes for r in assembly.results.values()),
        not_included=metadata.not_included, parts=len(plan.parts), part_writers=len(writers) or None,
    )


class _Counter:
    """The whole job's progress: the sum of every part's."""

    def __init__(self, report: Throttle, total: int | None):
        self.report, self.total, self.rows, self.bytes = report, total, 0, 0

    def add(self, rows: int, size: int) -> None:
        self.rows += rows
        self.bytes += size
        self.report(Progress("backup", None, self.rows, self.total, self.bytes))


class ProcessRunner:
    """Parts written by a pool of local processes (`backupctl create --local --jobs N`), each into `store` (hidden
    files next to the backup, or temporary S3 objects); the coordinator's process only assembles."""

    def __init__(self, processes: int, store: PartStore, token: str):
        self.processes, self.store, self.token = processes, store, token

    def run(self, parts, task, on_done, keepalive, progress) -> None:
        ctx = multiprocessing.get_context("spawn")  # the parent holds a database connection: never fork it
        ticks = ctx.Queue()
        order = sorted(parts, key=lambda p: -p.estimate)  # the biggest first: the last to finish is small
        pool = ctx.Pool(min(self.processes, len(parts)) or 1, initializer=_child_init, initargs=(ticks,))
        try:
            jobs = [(s.to_dict(), task, self.store, self.token) for s in order]
            for outcome in _results(pool.imap_unordered(_child_part, jobs), keepalive, ticks, progress):
                if "error" in outcome:
                    raise errors.from_dict(outcome["error"])
                on_done(PartResult.from_dict(outcome["result"]))
            pool.close()
        except BaseException:
            pool.terminate()
            self.store.remove_all(self.token)
            raise
        finally:
            pool.join()

    def read(self, output: str) -> Iterator[bytes]:
        return self.store.read(output)

    def remove(self, output: str) -> None:
        self.store.remove(output)


def _results(pending, keepalive, ticks, progress) -> Iterator[dict]:
    while True:
        try:
            yield pending.next(timeout=0.5)
        except multiprocessing.TimeoutError:
            keepalive()
        except StopIteration:
            return
        finally:
            _drain(ticks, progress)


def _drain(ticks, progress) -> None:
    while True:
        try:
            rows, size = ticks.get_nowait()
        except queue.Empty:
            return
        progress(rows, size)


_ticks = None


def _child_init(ticks) -> None:
    global _ticks
    _ticks = ticks


def _child_part(args: tuple) -> dict:
    """In a pool process: write one part; failures come back as data (an exception's hint would not survive
    pickling)."""
    spec_data, task, store, token = args
    spec = PartSpec.from_dict(spec_data)
    pending = [0, 0, time.monotonic()]

    def tick(rows: int, size: int) -> None:
        pending[0] += rows
        pending[1] += size
        if time.monotonic() - pending[2] > 0.25:
            _ticks.put((pending[0], pending[1]))
            pending[:] = [0, 0, time.monotonic()]

    sink, output = store.open(token, f"{spec.index:05d}")
    try:
        result = write_part(spec, task, sink, output, tick)
    except BaseException as exc:  # noqa: BLE001 - reported to the coordinator, which fails the backup
        store.remove(output)
        return {"error": part_failure(spec, exc).to_dict()}
    if pending[0] or pending[1]:
        _ticks.put((pending[0], pending[1]))
    return {"result": result.to_dict()}


__all__ = ["Assembly", "BackupError", "ProcessRunner", "plan_backup", "run_parallel_backup"]
