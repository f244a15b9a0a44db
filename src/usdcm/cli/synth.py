"""``usdcm synth``: write a synthetic ultrasound PACS export, the demo data and test fixture.

Owns the command's options and its one-line summary; the export itself is
:func:`usdcm.synth.write_export`. Prints counts only, never a (fake) identifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors


def synth_command(
    out: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the export into; created if missing, and must be empty.",
            file_okay=False,
            dir_okay=True,
            writable=True,
        ),
    ],
    patients: Annotated[
        int, typer.Option(help="Number of patients (one study each, 1-2 series of 1-3 images).")
    ] = 20,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed writes byte-identical files.")
    ] = 0,
    abnormal_fraction: Annotated[
        float, typer.Option(help="Fraction of studies whose images show a lesion (0 to 1).")
    ] = 0.5,
    difficulty: Annotated[
        float, typer.Option(help="Lesion faintness: 0 is obvious, 1 is barely visible.")
    ] = 0.3,
    frames: Annotated[
        int, typer.Option(help="Typical cine length in frames (each cine varies by up to 2).")
    ] = 8,
) -> None:
    """Write a synthetic ultrasound PACS export to OUT, with fake PHI and a labels.csv.

    Mixes many kinds of US image with a DICOMDIR and junk files that ingest must skip.
    """
    with user_errors():
        from usdcm.synth import write_export

        summary = write_export(
            out,
            patients=patients,
            seed=seed,
            abnormal_fraction=abnormal_fraction,
            difficulty=difficulty,
            frames=frames,
        )
    other = summary.n_files - len(summary.image_paths)
    typer.echo(
        f"wrote {summary.n_patients} patients, {summary.n_studies} studies "
        f"({summary.n_abnormal_studies} abnormal), {len(summary.image_paths)} ultrasound images "
        f"and {other} other files ({summary.n_files} files) to {summary.root}"
    )
