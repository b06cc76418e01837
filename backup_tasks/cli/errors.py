"""The one place where failures become output and exit codes."""

from __future__ import annotations

import sys

import click

from ..errors import BackupError, ExitCode


def _one_line(text: str) -> str:
    """Control characters escaped: a message quoting a hostile name (`backup….gz\\n…`) stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def print_error(message: str, hint: str | None) -> None:
    click.secho(f"Error: {_one_line(message)}", fg="red", err=True)
    if hint:
        click.echo(f"Hint: {_one_line(hint)}", err=True)


def run_main(group: click.Group) -> None:
    try:
        group.main(standalone_mode=False, prog_name="backupctl")
    except BackupError as exc:
        print_error(exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    except click.exceptions.Abort:
        print_error("aborted", None)
        sys.exit(int(ExitCode.ABORTED))
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MemoryError:
        # Last line of defence, so that even this is an answer and not a traceback: the reader bounds what a
        # hostile file makes it hold (BACKUP_MAX_LINE_BYTES), but a process under a tight limit can still run out.
        print_error("out of memory", "Run with more memory, or lower BACKUP_MAX_LINE_BYTES to refuse huge rows sooner.")
        sys.exit(int(ExitCode.ERROR))
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    else:
        sys.exit(0)
