"""A progress bar on stderr (only when stderr is a terminal), fed by Progress events from a local or remote job."""

from __future__ import annotations

import sys

from ..progress import Progress
from ..units import format_bytes


def progress_detail(event: Progress) -> str:
    """The text beside the bar. A phase message ("rebuilding 3 indexes", "committing") says what happens after
    the rows, while the counts stand still; otherwise the table and the counts."""
    if event.message:
        return event.message
    return f"{event.table or ''} {event.rows_done:,} rows {format_bytes(event.bytes_done, 1)}".strip()


class ProgressBar:
    """Callable ProgressFn drawing one rich progress bar; silent when stderr is not a terminal."""

    def __init__(self, force: bool | None = None):
        self._enabled = sys.stderr.isatty() if force is None else force
        self._progress = None
        self._task = None

    def __call__(self, event: Progress) -> None:
        if not self._enabled:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                # The process's own stderr, bound now: pg/copy_in.py swaps sys.stderr during a COPY to catch
                # psycopg2's printout, and the bar refreshes from its own thread meanwhile.
                console=Console(file=sys.__stderr__ or sys.stderr),
                transient=True,
                redirect_stdout=False,  # rich would swap sys.stdout/stderr for the whole job; output goes
                redirect_stderr=False,  # straight to the terminal instead (the bar is on its own stream)
            )
            self._progress.start()
            self._task = self._progress.add_task(event.phase, total=None, detail="")
        if event.bytes_total:
            total, done = event.bytes_total, event.bytes_done
        elif event.rows_total:
            total, done = event.rows_total, event.rows_done
        else:
            total, done = None, 0
        self._progress.update(self._task, description=event.phase, total=total, completed=done,
                              detail=progress_detail(event))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
