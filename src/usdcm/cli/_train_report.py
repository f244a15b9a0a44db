"""The table ``usdcm train`` prints when a run ends: one row per epoch, the best marked."""

from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from usdcm.training.run import TrainResult


def _fmt(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def print_summary(
    result: TrainResult, console: Console | None = None, *, estimated_seconds: float | None = None
) -> None:
    """Print the epochs of ``result`` and where its checkpoints are.

    ``estimated_seconds`` is the plan's estimate of the training time, shown beside the
    time it took.
    """
    console = console or Console()
    table = Table(title=f"usdcm train: {result.run_dir}")
    for column in ("epoch", "train loss", "val loss", "val AUC", "val bal. acc.", "lr", "s"):
        table.add_column(column, justify="right")
    for record in result.epochs:
        table.add_row(
            f"{record.epoch + 1}{' *' if record.best else ''}",
            _fmt(record.train_loss),
            _fmt(record.val_loss),
            _fmt(record.val_auc),
            _fmt(record.val_balanced_accuracy),
            f"{record.lr:.2e}",
            f"{record.seconds:.1f}",
        )
    console.print(table)
    split_counts = ", ".join(f"{name} {count}" for name, count in result.n_images.items())
    stop = " (stopped early)" if result.stopped_early else ""
    if result.stopped_at_time_limit:
        stop = " (stopped at the time limit, optim.time_limit_s)"
    planned = (
        "" if estimated_seconds is None else f" (the plan estimated {estimated_seconds:.0f} s)"
    )
    console.print(
        f"images: {split_counts}; device {result.device}; cache "
        f"{result.cache_bytes / 1e6:.1f} MB; {result.seconds:.1f} s{planned}{stop}"
    )
    console.print(
        f"best epoch {result.best_epoch + 1}, validation AUC {_fmt(result.best_auc)}: "
        f"{result.run_dir / 'best.pt'}"
    )
