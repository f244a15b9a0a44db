"""``usdcm train``: a manifest -> a run folder with checkpoints, metrics and a log."""

from __future__ import annotations

import os
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usdcm.artifacts.plan import PLAN_JSON
from usdcm.cli._errors import user_errors

if TYPE_CHECKING:
    from usdcm.config import TrainConfig


class DeviceChoice(StrEnum):
    """Where to train; auto picks cuda, then mps, then cpu."""

    auto = "auto"
    cuda = "cuda"
    mps = "mps"
    cpu = "cpu"


TIME_BUDGET_HELP = (
    "Time the training may take, e.g. 20m, 1h30m or 900s; the plan picks the largest "
    "model, input and epochs that fit. Default 20m."
)


def _default_run_dir(manifest: Path) -> Path:
    return Path("runs") / manifest.resolve().parent.name


def train_command(
    manifest: Annotated[Path, typer.Argument(help="manifest.csv written by `usdcm ingest`.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML config (see configs/) whose keys override the plan's choices; "
            "default: the plan alone."
        ),
    ] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", help=TIME_BUDGET_HELP)] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder; default runs/<data folder>.")
    ] = None,
    device: Annotated[DeviceChoice | None, typer.Option(help="Overrides runtime.device.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Overrides optim.epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Overrides runtime.seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from RUN/last.pt.")] = False,
    folds: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=20,
            help="Overrides split.folds: K > 1 trains K cross-validation folds into "
            "RUN/fold-<k>/ and uses their ensemble; --resume skips finished folds.",
        ),
    ] = None,
    nproc: Annotated[
        int,
        typer.Option(min=1, help="Processes (GPUs) to train on; >1 launches torchrun (DDP)."),
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    record_command: Annotated[
        str | None,
        typer.Option(hidden=True, help="The user's command line (set for torchrun workers)."),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(hidden=True, help="The launcher's plan.json (set for torchrun workers)."),
    ] = None,
) -> None:
    """Train a classifier on an ingested manifest, reproducibly, on GPU when there is one.

    First it makes a plan (see `usdcm plan`): from the manifest, the device
    and a short timing probe it chooses the model, weights, input size, batch
    size, epochs and recipe that fit --time-budget, prints them with the rule
    behind each and writes RUN/plan.json. A flag (--epochs, --seed, --device,
    --folds) wins over a --config file, which wins over the plan. --resume
    trains on with the run's config.

    Example: usdcm train data/manifest.csv --time-budget 30m --out runs/r1
    """
    with user_errors():
        run_dir = out or _default_run_dir(manifest)
        command = record_command or shlex.join(["usdcm", *sys.argv[1:]])
        flags: dict[str, Any] = {"device": device, "epochs": epochs, "seed": seed, "folds": folds}
        if nproc > 1:
            from usdcm.training.distributed import launch

            argv = [arg for arg in sys.argv[1:] if not arg.startswith("--nproc=")]
            argv = _strip_nproc_value(argv)
            if "--out" not in argv and "-o" not in argv:
                argv += ["--out", str(run_dir)]
            argv = _strip_record_command(argv) + ["--record-command", command]
            if plan_file is None:  # plan once, here; every worker trains with that plan
                _, planned = _plan_or_resume(
                    manifest, run_dir, resume, time_budget, config, nproc, flags
                )
                if planned is not None:  # a resumed run's workers read RUN/plan.json
                    argv += ["--plan-file", str(run_dir / PLAN_JSON)]
            raise typer.Exit(launch(nproc, argv))

        from usdcm.cli._progress import RichProgress
        from usdcm.cli._train_report import print_summary
        from usdcm.training.run import train

        estimate: float | None = None
        if plan_file is not None:
            from usdcm.artifacts.plan import PlanRecord
            from usdcm.plan import plan_from_record

            resolved = plan_from_record(PlanRecord.read(plan_file)).config
        else:
            resolved, estimate = _plan_or_resume(
                manifest, run_dir, resume, time_budget, config, 1, flags
            )
        if resolved.split.folds > 1:
            _train_folds(manifest, resolved, run_dir, resume=resume, quiet=quiet, command=command)
            return
        with RichProgress(disable=quiet, epochs=resolved.optim.epochs) as progress:
            result = train(
                manifest, resolved, run_dir, resume=resume, progress=progress, command=command
            )
        if result.is_main:
            print_summary(result, estimated_seconds=estimate)


def _plan_or_resume(
    manifest: Path,
    run_dir: Path,
    resume: bool,
    time_budget: str | None,
    config: Path | None,
    processes: int,
    flags: dict[str, Any],
) -> tuple[TrainConfig, float | None]:
    """The config to train with, and the plan's time estimate when a new plan was made.

    A new plan is printed and written to RUN/plan.json. With --resume the run keeps its
    config: RUN/plan.json's (or RUN/config.yaml's, for a run trained before plans), with the
    --config file's keys and the flags over it.
    """
    import yaml

    from usdcm.artifacts.plan import PlanRecord
    from usdcm.cli.plan import flag_overrides, make_cli_plan, print_plan
    from usdcm.plan import override_config

    if resume:
        source = run_dir / PLAN_JSON
        if source.is_file():
            base = PlanRecord.read(source).config
        elif (run_dir / "config.yaml").is_file():
            source = run_dir / "config.yaml"
            base = yaml.safe_load(source.read_text(encoding="utf-8"))
        else:
            base = None
        if base is not None:
            overrides, _sources = flag_overrides(**flags)
            if os.environ.get("RANK", "0") == "0":
                typer.echo(f"resuming with the config in {source}")
            return override_config(base, config_path=config, overrides=overrides), None
    plan = make_cli_plan(
        manifest, time_budget=time_budget, config=config, processes=processes, **flags
    )
    print_plan(plan.to_record())
    plan.write(run_dir)
    return plan.config, plan.estimated_seconds


def _train_folds(
    manifest: Path, config: TrainConfig, run_dir: Path, *, resume: bool, quiet: bool, command: str
) -> None:
    """Train the cross-validation folds and print each fold's best AUC and the OOF AUC."""
    from usdcm.cli._progress import RichProgress
    from usdcm.training.folds import train_folds

    epochs = config.optim.epochs * config.split.folds
    with RichProgress(disable=quiet, epochs=epochs) as progress:
        result = train_folds(
            manifest, config, run_dir, resume=resume, progress=progress, command=command
        )
    if not result.is_main:
        return
    for entry in result.record.folds:
        auc = "n/a" if entry.val_auc is None else f"{entry.val_auc:.4f}"
        typer.echo(
            f"fold {entry.fold}: best validation AUC {auc} ({run_dir / f'fold-{entry.fold}'})"
        )
    oof = "n/a" if result.record.oof_auc is None else f"{result.record.oof_auc:.4f}"
    typer.echo(
        f"out-of-fold AUC {oof}: {result.oof_path}; `usdcm evaluate {run_dir}` uses the ensemble"
    )


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
