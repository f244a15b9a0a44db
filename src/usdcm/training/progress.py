"""What a training run tells a progress display: one phase per epoch, one step per batch.

Owns the :class:`TrainingProgress` protocol (the same shape as ingest's
``ProgressReporter``) and the silent default. The CLI implements it with rich and passes it
to :func:`usdcm.training.run.train`; the library never imports the CLI or a display library.
"""

from __future__ import annotations

from typing import Protocol


class TrainingProgress(Protocol):
    """A progress display: ``phase`` starts a bar of ``total`` steps, ``advance`` moves it."""

    def phase(self, name: str, total: int) -> None: ...

    def advance(self, count: int = 1) -> None: ...


class NoProgress:
    """Shows nothing: the default, and what every rank but 0 uses.

    >>> NoProgress().phase("epoch 1", 10)
    """

    def phase(self, name: str, total: int) -> None:
        """Ignore the start of a phase."""

    def advance(self, count: int = 1) -> None:
        """Ignore progress."""
