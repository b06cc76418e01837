"""The one place where failures become output and exit codes."""

from __future__ import annotations

import sys

import click

from ..errors import BackupError, ExitCode


def print_error(message: str, hint: str | None) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"Hint: {hint}", err=True)


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
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(int(ExitCode.INTERRUPTED))
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    else:
        sys.exit(0)
