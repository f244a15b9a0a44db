"""Run a per-file function over many files in worker processes, robustly.

Owns the general-purpose process pool and the per-file time limit, used by ingest (header
scan, conversion) and predict (header scan, decoding). Knows nothing of DICOM or of any
stage, and imports nothing of usdcm. A file whose decoder kills its worker
process (a segfault in a C codec, the OOM killer) is retried alone and then reported as a
crash; a file that runs past the time limit is reported as a timeout; neither stops the run.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import IO, Any, NamedTuple, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Seconds one file may take in a worker before it is given up as a timeout.
DEFAULT_FILE_TIMEOUT_S = 120.0
#: Seconds past the time limit after which a worker stuck in C code (where the timeout
#: signal cannot interrupt it) is ended by force; its file is then retried alone.
HARD_KILL_GRACE_S = 30.0

_DEVNULL: list[IO[str]] = []


class FileTimeout(BaseException):
    """Raised inside a worker when one file runs past its time limit.

    A ``BaseException``, so that a per-file ``except Exception`` in the worker function does
    not mistake it for a damaged file; catch it by name to report a timeout yourself.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"processing the file took longer than the limit of {seconds:g} s")
        self.seconds = seconds


class _TimedOut(NamedTuple):
    """What a worker returns for an item that raised :class:`FileTimeout`."""

    seconds: float


@contextlib.contextmanager
def time_limit(seconds: float | None, *, hard: bool) -> Iterator[None]:
    """Raise :class:`FileTimeout` in this (main) thread once ``seconds`` have passed.

    The alarm interrupts Python code, not a C function that never returns to Python; with
    ``hard=True`` (worker processes only) the process also exits by force
    :data:`HARD_KILL_GRACE_S` later. Without a limit, or outside the main thread, does
    nothing.
    """
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(_signum: int, _frame: FrameType | None) -> None:
        raise FileTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if hard:
        if not _DEVNULL:
            _DEVNULL.append(open(os.devnull, "w"))  # noqa: SIM115 (kept open for the process)
        faulthandler.dump_traceback_later(seconds + HARD_KILL_GRACE_S, exit=True, file=_DEVNULL[0])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if hard:
            faulthandler.cancel_dump_traceback_later()
        signal.signal(signal.SIGALRM, previous)


def _run_batch(
    function: Callable[[T], R], batch: Sequence[T], timeout_s: float | None
) -> list[R | _TimedOut]:
    results: list[R | _TimedOut] = []
    for item in batch:
        try:
            with time_limit(timeout_s, hard=True):
                result = function(item)
        except FileTimeout as timeout:
            results.append(_TimedOut(timeout.seconds))
            continue
        results.append(result)
    return results


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def map_files(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int,
    batch_size: int = 8,
    initializer: Callable[..., Any] | None = None,
    initargs: tuple[Any, ...] = (),
    on_crash: Callable[[T], R],
    on_timeout: Callable[[T], R] | None = None,
    timeout_s: float | None = None,
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, function(item))`` for every item, in completion order.

    ``workers <= 1`` runs in this process. Otherwise at most ``2 * workers`` batches are in
    flight, so memory stays flat however many files there are. ``function`` must catch its
    own per-file errors; an item whose worker process dies yields ``on_crash(item)``.

    Each item may take ``timeout_s`` seconds (default :data:`DEFAULT_FILE_TIMEOUT_S`;
    ``0`` for no limit). An item past it yields ``on_timeout(item)`` (``on_crash(item)``
    when not given), unless ``function`` catches :class:`FileTimeout` itself. A worker stuck
    in C code is ended :data:`HARD_KILL_GRACE_S` later and its item retried alone; if the
    retry runs past the limit again, the item is a timeout.
    """
    limit = DEFAULT_FILE_TIMEOUT_S if timeout_s is None else timeout_s
    timed_out = on_timeout or on_crash

    def finish(item: T, result: R | _TimedOut) -> tuple[T, R]:
        return (item, timed_out(item)) if isinstance(result, _TimedOut) else (item, result)

    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            try:
                with time_limit(limit, hard=False):
                    result = function(item)
            except FileTimeout:
                yield item, timed_out(item)
                continue
            yield item, result
        return
    remaining: Sequence[T] = items
    suspects: list[T] = []
    while remaining:
        not_started: list[T] = []
        for item, outcome in _pool_map(
            function,
            _batches(remaining, batch_size),
            workers,
            initializer,
            initargs,
            limit,
            suspects.extend,
            not_started.extend,
        ):
            yield finish(item, outcome)
        remaining = not_started
    for item in suspects:  # each alone in a fresh pool, to find the one that kills workers
        started = time.monotonic()
        results = list(
            _pool_map(function, [[item]], 1, initializer, initargs, limit, _ignore, _ignore)
        )
        if results:
            yield finish(item, results[0][1])
        elif limit and time.monotonic() - started >= limit:
            yield item, timed_out(item)  # ended by force after its time limit
        else:
            yield item, on_crash(item)


def _ignore(_batch: Sequence[Any]) -> None:
    return None


def _pool_map(
    function: Callable[[T], R],
    batches: Iterable[Sequence[T]],
    workers: int,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    timeout_s: float | None,
    on_broken: Callable[[Sequence[T]], None],
    on_not_started: Callable[[Sequence[T]], None],
) -> Iterator[tuple[T, R | _TimedOut]]:
    batch_iter = iter(batches)
    with ProcessPoolExecutor(
        max_workers=workers, initializer=initializer, initargs=initargs
    ) as pool:
        in_flight: dict[Future[list[R | _TimedOut]], Sequence[T]] = {}
        broken = False

        def submit_next() -> bool:
            nonlocal broken
            batch = next(batch_iter, None)
            if batch is None:
                return False
            try:
                in_flight[pool.submit(_run_batch, function, batch, timeout_s)] = batch
            except BrokenProcessPool:
                broken = True
                on_not_started(batch)
                return False
            return True

        for _ in range(2 * workers):
            if not submit_next():
                break
        while in_flight:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                batch = in_flight.pop(future)
                try:
                    results = future.result()
                except BrokenProcessPool:
                    broken = True
                    on_broken(batch)
                    continue
                yield from zip(batch, results, strict=True)
                if not broken:
                    submit_next()
        for batch in batch_iter:  # left when the pool broke
            on_not_started(batch)
