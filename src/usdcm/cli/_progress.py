"""A rich progress bar that implements ingest's ``ProgressReporter`` and training's
``TrainingProgress`` (both ``phase`` and ``advance``).

The display starts with the first phase, so a process that never reports (a torchrun worker
other than rank 0) shows nothing.
"""

from __future__ import annotations

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


class RichProgress:
    """One bar per phase, on stderr, so stdout stays clean for summaries."""

    def __init__(self, *, disable: bool = False) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=disable,
        )
        self._task: TaskID | None = None
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
        self._task = self._progress.add_task(name, total=total)

    def advance(self, count: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, count)
