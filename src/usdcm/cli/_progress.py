"""A rich progress bar that implements ingest's ``ProgressReporter`` and training's
``TrainingProgress`` (both ``phase`` and ``advance``).

One bar per phase, with the time elapsed and an ETA. Given the run's number of epochs, it
adds a ``run`` bar over all of them (its ETA is the whole run's), which follows the
training's phases named ``epoch N``. The display starts with the first phase, so a process
that never reports (a torchrun worker other than rank 0) shows nothing.
"""

from __future__ import annotations

import re
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_EPOCH = re.compile(r"epoch (\d+)$")


class RichProgress:
    """One bar per phase, on stderr, so stdout stays clean for summaries.

    Parameters
    ----------
    disable
        Show nothing.
    epochs
        Epochs the run will train (all folds together); when given, a ``run`` bar counts
        the steps of every epoch and shows the ETA of the whole run. An epoch's steps are
        known when its phase starts; the run's total assumes every epoch has as many.
    console
        Where to draw (tests pass a recording console); default stderr.
    """

    def __init__(
        self, *, disable: bool = False, epochs: int | None = None, console: Console | None = None
    ) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            disable=disable,
        )
        self._task: TaskID | None = None
        self._run: TaskID | None = None
        self._epochs = epochs
        self._epochs_started = 0
        self._started = False

    def __enter__(self) -> RichProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._started:
            self._progress.stop()
            self._started = False

    def phase(self, name: str, total: int) -> None:
        if not self._started:
            self._progress.start()
            self._started = True
        if self._task is not None:
            self._progress.update(self._task, visible=self._progress.console.is_terminal)
        match = _EPOCH.match(name)
        if match and self._epochs:
            self._start_epoch(int(match.group(1)), total)
        self._task = self._progress.add_task(name, total=total)

    def _start_epoch(self, number: int, steps: int) -> None:
        """Count an epoch into the run bar (created at the first, skipping resumed epochs)."""
        epochs = self._epochs or 0
        if self._run is None:
            self._epochs_started = number - 1  # a resumed run starts after its done epochs
            self._run = self._progress.add_task(
                "run", total=steps * epochs, completed=steps * self._epochs_started
            )
        self._epochs_started += 1
        if self._epochs_started > epochs:  # more epochs than announced: grow the total
            self._progress.update(self._run, total=steps * self._epochs_started)

    @property
    def run_task(self) -> TaskID | None:
        """The ``run`` bar's task (None until the first epoch, or without ``epochs``)."""
        return self._run

    @property
    def progress(self) -> Progress:
        """The rich display (for tests)."""
        return self._progress

    def advance(self, count: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)
        if self._run is not None:
            self._progress.advance(self._run, count)
