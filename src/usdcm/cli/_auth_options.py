"""DICOMweb credential options shared by ``usdcm pull`` and ``usdcm send``, declared once.

Credentials come from a file or the environment (usdcm.network.auth), never from the
command line itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TokenFileOption = Annotated[
    Path | None,
    typer.Option(exists=True, dir_okay=False, readable=True, help="File holding a bearer token."),
]
BasicFileOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        readable=True,
        help="File holding user:password for HTTP basic auth.",
    ),
]
