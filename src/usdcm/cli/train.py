"""``usdcm train``: a manifest -> a run folder with checkpoints, metrics and a log."""

from __future__ import annotations

import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors


class DeviceChoice(StrEnum):
    """Where to train; auto picks cuda, then mps, then cpu."""

    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


def _default_run_dir(manifest: Path) -> Path:
    return Path("runs") / manifest.resolve().parent.name


def train_command(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv written by `usdcm ingest`.")],
    config: Annotated[
        Path | None,
        typer.Option(help="YAML config (see configs/); default: the built-in defaults."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder; default runs/<data folder>.")
    ] = None,
    device: Annotated[DeviceChoice | None, typer.Option(help="Overrides runtime.device.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides optim.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Overrides runtime.seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN/last.pt.")] = False,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="Processes (GPUs) to train on; >1 launches torchrun (DDP)."),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    record_command: Annotated[
        str | None,
        typer.Option(hidden=True, help="The user's command line (set for torchrun workers)."),
    ] = None,
) -> None:
    """Train a classifier on an ingested manifest, reproducibly, on GPU when there is one.

    Example: usdcm train data/manifest.csv --config configs/resnet18.yaml --out runs/r18
    """
    with user_errors():
        run_dir = out or _default_run_dir(manifest)
        command = record_command or shlex.join(["usdcm", *sys.argv[1:]])
        if nproc > 1:
            from usdcm.training.distributed import launch

            argv = [arg for arg in sys.argv[1:] if not arg.startswith("--nproc=")]
            argv = _strip_nproc_value(argv)
            if "--out" not in argv and "-o" not in argv:
                argv += ["--out", str(run_dir)]
            argv = _strip_record_command(argv) + ["--record-command", command]
            raise typer.Exit(launch(nproc, argv))

        from usdcm.cli._progress import RichProgress
        from usdcm.cli._train_report import print_summary
        from usdcm.config import load_config
        from usdcm.training.run import train

        overrides: dict[str, object] = {}
        if device is not None:
            overrides["runtime.device"] = device.value
        if epochs is not None:
            overrides["optim.epochs"] = epochs
        if seed is not None:
            overrides["runtime.seed"] = seed
        resolved = load_config(config, overrides)
        with RichProgress(disable=quiet) as progress:
            result = train(
                manifest, resolved, run_dir, resume=resume, progress=progress, command=command
            )
        if result.is_main:
            print_summary(result)


def _strip_nproc_value(argv: list[str]) -> list[str]:
    """Drop a ``--nproc N`` pair (the ``--nproc=N`` form is dropped by the caller)."""
    cleaned: list[str] = []
    skip = False
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--nproc" and index + 1 < len(argv):
            skip = True
            continue
        cleaned.append(arg)
    return cleaned


def _strip_record_command(argv: list[str]) -> list[str]:
    """Drop a ``--record-command VALUE`` pair or ``--record-command=VALUE``."""
    cleaned: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--record-command":
            skip = True
            continue
        if not arg.startswith("--record-command="):
            cleaned.append(arg)
    return cleaned
