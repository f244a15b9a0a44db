"""``usdcm ingest``: a DICOM export folder -> manifest.csv, excluded.csv and NIfTI images."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli._progress import RichProgress


class CompressChoice(StrEnum):
    """``--compress`` as typer lists it; :class:`usdcm.ingest.convert.Compression` is the
    library's enum (kept out of this module so that ``--help`` imports nothing heavy)."""

    none = "none"
    fast = "fast"
    best = "best"


def ingest_command(
    source: Annotated[
        Path, typer.Argument(help="Folder of the DICOM export (nested, any file names).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder for the manifest and images.")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV with a 'label' column and one key column named after a DICOM keyword "
            "(PatientID, AccessionNumber, StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID)."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="Worker processes; 0 means one per CPU core.")
    ] = 0,
    modality: Annotated[
        list[str] | None,
        typer.Option(help="Modality to select; repeat for several. Default: US."),
    ] = None,
    keep_color: Annotated[
        bool, typer.Option(help="Keep RGB (for Doppler) instead of one grayscale channel.")
    ] = False,
    max_pixel_bytes: Annotated[
        int,
        typer.Option(min=1, help="Refuse files whose declared pixel data is larger (bytes)."),
    ] = 2 * 1024**3,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="HMAC secret for pseudonyms; default DIR/.usdcm/secret (created)."),
    ] = None,
    scheduler: Annotated[
        str,
        typer.Option(
            help="Where to scan and convert: 'process' (this machine's worker processes), "
            "'local' (a Dask LocalCluster of --workers processes) or a Dask scheduler "
            "address, tcp://host:8786, whose workers see SOURCE and --out at the same paths."
        ),
    ] = "process",
    compress: Annotated[
        CompressChoice,
        typer.Option(
            help="NIfTI compression: 'fast' (gzip by ISA-L, .nii.gz), 'best' (gzip level 9, "
            "smallest and slowest, .nii.gz) or 'none' (.nii, fastest and largest). A re-run "
            "with another choice converts the images again."
        ),
    ] = CompressChoice.fast,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Scan an export, keep the ultrasound images, and write NIfTI images plus a manifest.

    Every file under SOURCE ends up in manifest.csv or in excluded.csv with its reason.
    Re-running converts only new or changed files.

    Example: usdcm ingest /pacs-export --out data/ --labels labels.csv

    On a Dask cluster: usdcm ingest /shared/export --out /shared/data --scheduler tcp://host:8786
    """
    with user_errors():
        from usdcm.ingest import IngestOptions, ingest
        from usdcm.ingest.convert import Compression
        from usdcm.parallel import check_scheduler

        options = IngestOptions(
            labels=labels,
            workers=workers or None,
            modalities=frozenset(m.upper() for m in (modality or ["US"])),
            keep_color=keep_color,
            max_pixel_bytes=max_pixel_bytes,
            secret_path=secret_file,
            scheduler=check_scheduler(scheduler),
            compress=Compression(compress.value),
        )
        with RichProgress(disable=quiet) as progress:
            result = ingest(source, out, options, progress)
        reasons = ", ".join(f"{code} {n}" for code, n in result.excluded_by_code.items())
        typer.echo(
            f"{result.n_files} files: {result.n_images} images in {result.manifest_path}, "
            f"{result.n_excluded} excluded ({reasons or 'none'}) in {result.excluded_path}; "
            f"{result.n_converted} converted, {result.n_reused} reused."
        )
        if result.n_without_region:
            typer.echo(
                f"{result.n_without_region} of {result.n_images} images had no ultrasound "
                "region to crop to: their whole frame was kept, with any text burned into it."
            )
