"""How commands report failure: one clear line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

import typer

from usdcm.errors import UsdcmError

EXIT_USER_ERROR = 2


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Run a command body, turning ``UsdcmError`` (and a full disk) into a clean exit."""
    try:
        yield
    except UsdcmError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"cannot write {err.filename}" if err.filename else "a write failed"
        message = f"error: the disk is full: {where} ({os.strerror(err.errno)}); free space."
        typer.secho(message, err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        raise typer.Exit(130) from None
