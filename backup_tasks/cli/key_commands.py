"""keygen: a new age identity for encrypted backups (in this process: a secret key never travels to a worker)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ..archive.encryption import generate_identity, identity_file_text, write_identity_file
from ..errors import StorageError, UsageError
from . import cli


@cli.command("keygen")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the identity here (mode 0600; an existing file is never replaced). Default: stdout.")
def keygen_cmd(output: Path | None) -> None:
    """Make an age identity (secret key) and print its public key.

    Put the public key in BACKUP_AGE_RECIPIENTS where backups are made, and the identity file where they are
    restored (BACKUP_AGE_IDENTITY_FILE). The file is the same format as age-keygen's: `age -d -i FILE` reads it.
    Losing it loses every backup encrypted to it only."""
    secret, public = generate_identity()
    text = identity_file_text(secret, public, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    if output is None:
        click.echo(text, nl=False)
        click.echo(f"Public key: {public}", err=True)
        return
    try:
        write_identity_file(output, text)
    except FileExistsError:
        raise UsageError(f"{output} already exists; refusing to overwrite an identity",
                         hint="Replacing an identity loses the backups encrypted to it: choose another --output."
                         ) from None
    except OSError as exc:
        raise StorageError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"Public key: {public}")
    click.echo(f"Identity written to {output} (mode 0600). Keep a copy offline: without it the backups encrypted "
               "to this key cannot be restored.", err=True)
