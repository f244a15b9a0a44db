"""Run a per-file function over many files in worker processes, robustly.

Owns the process pool. A file whose decoder kills its worker process (a segfault in a C
codec, the OOM killer) is retried alone and then reported as a crash; it never stops the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _run_batch(function: Callable[[T], R], batch: Sequence[T]) -> list[R]:
    return [function(item) for item in batch]


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
) -> Iterator[tuple[T, R]]:
    """Yield ``(item, function(item))`` for every item, in completion order.

    ``workers <= 1`` runs in this process. Otherwise at most ``2 * workers`` batches are in
    flight, so memory stays flat however many files there are. ``function`` must catch its
    own per-file errors; an item whose worker process dies yields ``on_crash(item)``.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for item in items:
            yield item, function(item)
        return
    remaining: Sequence[T] = items
    suspects: list[T] = []
    while remaining:
        not_started: list[T] = []
        yield from _pool_map(
            function,
            _batches(remaining, batch_size),
            workers,
            initializer,
            initargs,
            suspects.extend,
            not_started.extend,
        )
        remaining = not_started
    for item in suspects:  # each alone in a fresh pool, to find the one that kills workers
        results = list(_pool_map(function, [[item]], 1, initializer, initargs, _ignore, _ignore))
        yield (item, results[0][1]) if results else (item, on_crash(item))


def _ignore(_batch: Sequence[Any]) -> None:
    return None


def _pool_map(
    function: Callable[[T], R],
    batches: Iterable[Sequence[T]],
    workers: int,
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    on_broken: Callable[[Sequence[T]], None],
    on_not_started: Callable[[Sequence[T]], None],
) -> Iterator[tuple[T, R]]:
    batch_iter = iter(batches)
    with ProcessPoolExecutor(
        max_workers=workers, initializer=initializer, initargs=initargs
    ) as pool:
        in_flight: dict[Future[list[R]], Sequence[T]] = {}
        broken = False

        def submit_next() -> bool:
            nonlocal broken
            batch = next(batch_iter, None)
            if batch is None:
                return False
            try:
                in_flight[pool.submit(_run_batch, function, batch)] = batch
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
