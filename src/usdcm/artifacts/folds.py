"""``folds.json``: the folds of a cross-validated run, and how far each one got.

Owns the file's name, its schema version and reading and writing it (atomically), and the
name of each fold's run folder (``RUN/fold-<k>/``). Written by
:mod:`usdcm.training.folds` before the first fold trains (every fold ``pending``) and again
after each fold ends (``done``, with its best validation AUC); read by training to resume
and by inference to build the ensemble. A run folder holding ``folds.json`` is a
cross-validated run. Holds counts, hashes and AUCs only, never a key or a UID. Never
decides a fold: :mod:`usdcm.data.splits` does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from usdcm.artifacts._json import read_json_object
from usdcm.artifacts._schema import SCHEMA_KEY, check_schema_version
from usdcm.atomic import atomic_write_text
from usdcm.errors import FoldsFileError

FOLDS_JSON = "folds.json"
SCHEMA_VERSION = 1
STATUSES = ("pending", "done")

_FIX = "train the folds again with `usdcm train --folds K`"


def fold_dir(run: Path, fold: int) -> Path:
    """The run folder of fold ``fold`` (1-based) of the cross-validated run ``run``.

    >>> fold_dir(Path("runs/cv"), 2).as_posix()
    'runs/cv/fold-2'
    """
    return run / f"fold-{fold}"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class FoldRecord:
    """One fold: its number, whether it finished, and what its best checkpoint scored.

    >>> FoldRecord(1, "done", best_epoch=3, val_auc=0.91, n_train=40, n_val=20).val_auc
    0.91
    >>> FoldRecord(0, "done")
    Traceback (most recent call last):
    ...
    usdcm.errors.FoldsFileError: fold 0 with status 'done'; ...
    """

    fold: int
    status: str = "pending"
    best_epoch: int | None = None
    val_auc: float | None = None
    n_train: int = 0
    n_val: int = 0
    checkpoint_sha256: str = ""

    def __post_init__(self) -> None:
        if self.fold < 1 or self.status not in STATUSES:
            message = (
                f"fold {self.fold} with status {self.status!r}; folds are numbered from 1 "
                f"and have a status among {', '.join(STATUSES)}."
            )
            raise FoldsFileError(message)

    @property
    def done(self) -> bool:
        """Whether the fold's training ended (its ``best.pt`` is final)."""
        return self.status == "done"


@dataclass(frozen=True)
class FoldsFile:
    """The content of ``folds.json``.

    Parameters
    ----------
    k : int
        Number of folds.
    manifest_sha256 : str
        The manifest every fold trains on.
    assignment_sha256 : str
        A hash of the fold assignment (image_id -> fold), so that a resumed run can tell
        that it would train the same folds.
    folds : tuple of FoldRecord
        One per fold, in order ``1 .. k``.
    oof_auc : float or None
        AUC of the out-of-fold predictions (image level), once every fold is done.
    """

    k: int
    manifest_sha256: str
    assignment_sha256: str
    folds: tuple[FoldRecord, ...] = field(default_factory=tuple)
    oof_auc: float | None = None

    def __post_init__(self) -> None:
        if self.k < 2 or [record.fold for record in self.folds] != list(range(1, self.k + 1)):
            message = (
                f"folds.json describes {self.k} folds as {[r.fold for r in self.folds]}; "
                "it needs 2 or more, listed 1 .. k."
            )
            raise FoldsFileError(message)

    @property
    def complete(self) -> bool:
        """Whether every fold is done."""
        return all(record.done for record in self.folds)

    def with_fold(self, record: FoldRecord) -> FoldsFile:
        """This file with fold ``record.fold`` replaced by ``record``."""
        folds = tuple(record if r.fold == record.fold else r for r in self.folds)
        return replace(self, folds=folds)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, ``schema_version`` first; a NaN AUC is written as null."""
        return {
            SCHEMA_KEY: SCHEMA_VERSION,
            "k": self.k,
            "manifest_sha256": self.manifest_sha256,
            "assignment_sha256": self.assignment_sha256,
            "oof_auc": _finite(self.oof_auc),
            "folds": [
                {
                    "fold": r.fold,
                    "run": fold_dir(Path(), r.fold).as_posix(),
                    "status": r.status,
                    "best_epoch": r.best_epoch,
                    "val_auc": _finite(r.val_auc),
                    "n_train": r.n_train,
                    "n_val": r.n_val,
                    "checkpoint_sha256": r.checkpoint_sha256,
                }
                for r in self.folds
            ],
        }

    def write(self, path: Path) -> None:
        """Write ``path`` atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def read(cls, path: Path) -> FoldsFile:
        """Read ``path``, checking its schema version and its shape.

        Raises
        ------
        SchemaVersionError
            A file of another version, or without one.
        FoldsFileError
            A missing, unreadable or malformed file.
        """
        loaded = read_json_object(
            path,
            name="folds file",
            error=FoldsFileError,
            fix=_FIX,
            missing=f"The cross-validated run's {path} is missing; {_FIX}.",
        )
        check_schema_version(
            loaded.get(SCHEMA_KEY), SCHEMA_VERSION, artifact="folds", source=path, fix=_FIX
        )
        try:
            oof_auc = loaded.get("oof_auc")
            return cls(
                k=int(loaded["k"]),
                manifest_sha256=str(loaded["manifest_sha256"]),
                assignment_sha256=str(loaded["assignment_sha256"]),
                oof_auc=None if oof_auc is None else float(oof_auc),
                folds=tuple(
                    FoldRecord(
                        fold=int(r["fold"]),
                        status=str(r["status"]),
                        best_epoch=None if r.get("best_epoch") is None else int(r["best_epoch"]),
                        val_auc=None if r.get("val_auc") is None else float(r["val_auc"]),
                        n_train=int(r.get("n_train", 0)),
                        n_val=int(r.get("n_val", 0)),
                        checkpoint_sha256=str(r.get("checkpoint_sha256", "")),
                    )
                    for r in loaded["folds"]
                ),
            )
        except (KeyError, TypeError, ValueError, FoldsFileError) as err:
            message = f"The folds file {path} is malformed ({err}); {_FIX}."
            raise FoldsFileError(message) from err
