"""Run a per-file function over many files in worker processes, robustly.

Owns the general-purpose process pool and the per-file time limit, used by ingest (header
scan, conversion) and predict (header scan, decoding). Knows nothing of DICOM or of any
stage, and imports nothing of usdcm but its errors. A file whose decoder kills its worker
process (a segfault in a C codec, the OOM killer) is retried alone and then reported as a
crash; a file that runs past the time limit is reported as a timeout; neither stops the run.

The same map runs on a Dask cluster (dask.distributed) when given a :class:`DaskCluster`
from :func:`open_scheduler` (``--scheduler local`` or ``tcp://host:port``), with the same
batches, per-file time limit, crash isolation and results; the process pool stays the
default, and then nothing of Dask is imported.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import IO, Any, NamedTuple, TypeVar

from usdcm.errors import SchedulerError

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
    cluster: DaskCluster | None = None,
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

    With a ``cluster`` (see :func:`open_scheduler`) the batches run on its Dask workers
    instead, ``workers`` is ignored, and the cluster's threads set how many are in flight.
    """
    limit = DEFAULT_FILE_TIMEOUT_S if timeout_s is None else timeout_s
    timed_out = on_timeout or on_crash
    if cluster is not None:
        yield from cluster.map(
            function, items, batch_size, initializer, initargs, limit, on_crash, timed_out
        )
        return

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


# --- Dask: the same map on a dask.distributed cluster -------------------------------------

PROCESS_POOL = "process"
"""``--scheduler`` value of the default: this machine's process pool, no Dask."""
LOCAL_CLUSTER = "local"
"""``--scheduler`` value that starts a Dask ``LocalCluster`` of ``workers`` processes."""
CONNECT_TIMEOUT_S = 30.0
"""Seconds to reach a Dask scheduler, and for it to have a first worker."""
NO_WORKERS_TIMEOUT_S = 120.0
"""Seconds a run waits while its Dask cluster has no worker before it stops."""
_POLL_S = 2.0


def check_scheduler(scheduler: str | None) -> str:
    """``scheduler`` as given to ``--scheduler``, checked: ``process``, ``local`` or an
    address such as ``tcp://host:8786``; raises :class:`SchedulerError` for anything else.

    >>> check_scheduler(None), check_scheduler("LOCAL"), check_scheduler("tcp://10.0.0.5:8786")
    ('process', 'local', 'tcp://10.0.0.5:8786')
    """
    value = (scheduler or PROCESS_POOL).strip()
    if value.lower() in (PROCESS_POOL, LOCAL_CLUSTER):
        return value.lower()
    scheme, sep, rest = value.partition("://")
    host, colon, port = rest.rpartition(":")
    if sep and scheme.isidentifier() and host and colon and port.isdigit():
        return value
    message = (
        f"--scheduler {value!r} is not understood; give `process` (the default), `local` "
        "(a Dask LocalCluster on this machine) or a Dask scheduler address such as "
        "tcp://host:8786."
    )
    raise SchedulerError(message)


def _lacking(readable: list[str], writable: list[str], marker: str) -> str | None:
    """On a worker: the first folder it cannot use, or ``None``."""
    for folder in readable:
        if not os.path.isdir(folder) or not os.access(folder, os.R_OK | os.X_OK):
            return folder
    for folder in writable:
        if not os.path.exists(os.path.join(folder, marker)) or not os.access(folder, os.W_OK):
            return folder
    return None


class DaskCluster:
    """A connected ``distributed.Client``, and the ``LocalCluster`` it started, if any.

    Made by :func:`open_scheduler`; :func:`map_files` runs on it when given it.
    """

    def __init__(self, client: Any, address: str, local: Any = None) -> None:
        self.client = client
        self.address = address
        self._local = local

    def threads(self) -> int:
        """How many tasks the cluster's workers run at once, all together."""
        return max(1, sum(int(n) for n in self.client.nthreads().values()))

    def check_shared(
        self, readable: Sequence[str | os.PathLike[str]], writable: Sequence[str | os.PathLike[str]]
    ) -> None:
        """Raise :class:`SchedulerError` (one line) unless every worker sees ``readable``
        folders and can write to ``writable`` ones, at the same paths as here.

        Each writable folder gets a marker file with a random name for the check, so a
        folder of the same name on another machine does not pass for a shared one.
        """
        marker = f".usdcm-shared-{os.urandom(8).hex()}"
        paths = [os.fspath(folder) for folder in writable]
        for folder in paths:
            with open(os.path.join(folder, marker), "w"):
                pass
        try:
            lacking = self.client.run(_lacking, [os.fspath(f) for f in readable], paths, marker)
        finally:
            for folder in paths:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, marker))
        for worker, folder in sorted(lacking.items()):
            if folder is not None:
                message = (
                    f"Dask worker {worker} cannot see {folder}; SOURCE and DIR must be on a "
                    "filesystem every worker shares, at the same path as on this machine."
                )
                raise SchedulerError(message)

    def _lost(self, err: BaseException) -> SchedulerError:
        message = (
            f"Lost the Dask cluster at {self.address} in the middle of the run "
            f"({type(err).__name__}); run the same command again: finished work is kept."
        )
        return SchedulerError(message)

    def _wait_any(self, in_flight: dict[Any, Any]) -> set[Any]:
        """The finished futures among ``in_flight``, once there is one; raises
        :class:`SchedulerError` when the cluster is gone or has no worker for long."""
        from distributed import wait

        idle_since: float | None = None
        while True:
            try:
                done, _ = wait(  # type: ignore[no-untyped-call]
                    list(in_flight), timeout=_POLL_S, return_when="FIRST_COMPLETED"
                )
            except TimeoutError:
                done = set()
            except Exception as err:  # cancelled futures: the scheduler went away
                raise self._lost(err) from err
            if done:
                return set(done)
            try:
                has_workers = bool(self.client.nthreads())
            except Exception as err:  # the scheduler cannot be asked any more
                raise self._lost(err) from err
            now = time.monotonic()
            idle_since = None if has_workers else (idle_since or now)
            if idle_since is not None and now - idle_since > NO_WORKERS_TIMEOUT_S:
                message = (
                    f"The Dask cluster at {self.address} has had no worker for "
                    f"{NO_WORKERS_TIMEOUT_S:g} s; start workers, then run the same command "
                    "again: finished work is kept."
                )
                raise SchedulerError(message)

    def _submit(
        self,
        function: Callable[[T], R],
        batch: Sequence[T],
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        timeout_s: float | None,
    ) -> Any:
        return self.client.submit(
            _run_dask_batch, function, list(batch), initializer, initargs, timeout_s, pure=False
        )

    def map(
        self,
        function: Callable[[T], R],
        items: Sequence[T],
        batch_size: int,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        timeout_s: float | None,
        on_crash: Callable[[T], R],
        timed_out: Callable[[T], R],
    ) -> Iterator[tuple[T, R]]:
        """:func:`map_files` on this cluster: batches as Dask futures, in completion order.

        A batch whose worker died (``KilledWorker``) is retried one item at a time, as the
        process pool retries a broken pool's batches; an item that kills its worker alone is
        a crash, or a timeout once its time limit had passed.
        """
        from distributed import KilledWorker

        def finish(item: T, result: R | _TimedOut) -> tuple[T, R]:
            return (item, timed_out(item)) if isinstance(result, _TimedOut) else (item, result)

        batch_iter = _batches(items, batch_size)
        in_flight: dict[Any, Sequence[T]] = {}
        suspects: list[T] = []

        def submit_next() -> None:
            batch = next(batch_iter, None)
            if batch is not None:
                in_flight[self._submit(function, batch, initializer, initargs, timeout_s)] = batch

        for _ in range(2 * self.threads()):
            submit_next()
        while in_flight:
            for future in self._wait_any(in_flight):
                batch = in_flight.pop(future)
                try:
                    results = future.result()
                except KilledWorker:
                    suspects.extend(batch)
                    submit_next()
                    continue
                finally:
                    future.release()
                for item, result in zip(batch, results, strict=True):
                    yield finish(item, result)
                submit_next()
        for item in suspects:  # each alone, to find the one that kills its worker
            started = time.monotonic()
            future = self._submit(function, [item], initializer, initargs, timeout_s)
            self._wait_any({future: None})
            try:
                yield finish(item, future.result()[0])
            except KilledWorker:
                if timeout_s and time.monotonic() - started >= timeout_s:
                    yield item, timed_out(item)
                else:
                    yield item, on_crash(item)
            finally:
                future.release()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self._local is not None:
            with contextlib.suppress(Exception):
                self._local.close()


@contextlib.contextmanager
def open_scheduler(
    scheduler: str | None,
    *,
    workers: int,
    readable: Sequence[str | os.PathLike[str]] = (),
    writable: Sequence[str | os.PathLike[str]] = (),
) -> Iterator[DaskCluster | None]:
    """The Dask cluster ``scheduler`` names, connected and checked, or ``None`` for the
    process pool (the default: then nothing of Dask is imported).

    ``local`` starts a ``LocalCluster`` of ``workers`` single-threaded worker processes
    (a worker that dies fails its tasks at once, as a broken process pool does; its nanny
    starts a new one); an address connects to a running scheduler. Every worker must see
    the ``readable`` folders and be able to write the ``writable`` ones
    (:meth:`DaskCluster.check_shared`). Raises :class:`SchedulerError` with one line when
    the scheduler cannot be reached or a worker lacks a folder. Closed on exit.
    """
    value = check_scheduler(scheduler)
    if value == PROCESS_POOL:
        yield None
        return
    # Dask logs a lost connection with its own tracebacks; the run says it in one line.
    import distributed  # noqa: F401 (sets up its loggers, whose levels are kept here)

    loggers = [logging.getLogger("distributed")] + [
        logger
        for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("distributed.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with _connected(value, workers) as cluster:
            cluster.check_shared(readable, writable)
            yield cluster
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _connected(value: str, workers: int) -> Iterator[DaskCluster]:
    """A client of the cluster ``value`` names, once it has a worker; closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    local: Any = None
    try:
        if value == LOCAL_CLUSTER:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                local = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=max(1, workers),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            client = Client(local, timeout=CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
            address = LOCAL_CLUSTER
        else:
            client = Client(value, timeout=CONNECT_TIMEOUT_S)  # type: ignore[no-untyped-call]
            address = value
        cluster = DaskCluster(client, address, local)
    except (OSError, TimeoutError, RuntimeError) as err:
        if local is not None:
            local.close()
        if value == LOCAL_CLUSTER:
            message = (
                f"Cannot start a Dask LocalCluster ({type(err).__name__}: {err}); a script "
                "that starts one needs its code under `if __name__ == '__main__':`."
            )
        else:
            message = (
                f"Cannot reach the Dask scheduler at {value} ({type(err).__name__}); start "
                "it (`dask scheduler`) or check the address."
            )
        raise SchedulerError(message) from err
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError as err:
            message = (
                f"The Dask scheduler at {value} has no worker after {CONNECT_TIMEOUT_S:g} s; "
                "start workers (`dask worker ADDRESS`) and run again."
            )
            raise SchedulerError(message) from err
        yield cluster
    finally:
        cluster.close()


_TIMEOUT_CLASSES: dict[float, type[FileTimeout]] = {}


def _timeout_class(seconds: float) -> type[FileTimeout]:
    """A :class:`FileTimeout` that takes no argument, to be raised in another thread."""
    if seconds not in _TIMEOUT_CLASSES:

        def init(self: FileTimeout) -> None:
            FileTimeout.__init__(self, seconds)

        _TIMEOUT_CLASSES[seconds] = type("FileTimeout", (FileTimeout,), {"__init__": init})
    return _TIMEOUT_CLASSES[seconds]


@contextlib.contextmanager
def thread_time_limit(seconds: float | None) -> Iterator[None]:
    """:func:`time_limit` for a thread that is not the main one (a Dask worker's).

    Raises :class:`FileTimeout` in this thread once ``seconds`` have passed, by an
    asynchronous exception: like the alarm, it interrupts Python code, not a C function
    that never returns. A worker still in this block :data:`HARD_KILL_GRACE_S` later is
    ended by force, and Dask reports its task as ``KilledWorker``.
    """
    if not seconds or seconds <= 0:
        yield
        return
    import ctypes

    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(_timeout_class(seconds))
                )

    def kill() -> None:
        with lock:
            if not state["done"]:
                os._exit(70)

    soft = threading.Timer(seconds, fire)
    hard = threading.Timer(seconds + HARD_KILL_GRACE_S, kill)
    soft.daemon = hard.daemon = True
    soft.start()
    hard.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            if state["fired"]:  # a pending exception not yet raised must not escape later
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
        soft.cancel()
        hard.cancel()


def _run_dask_batch(
    function: Callable[[T], R],
    batch: Sequence[T],
    initializer: Callable[..., Any] | None,
    initargs: tuple[Any, ...],
    timeout_s: float | None,
) -> list[R | _TimedOut]:
    """A Dask task: :func:`_run_batch` in a worker thread, with :func:`thread_time_limit`."""
    if initializer is not None:
        initializer(*initargs)
    results: list[R | _TimedOut] = []
    for item in batch:
        try:
            with thread_time_limit(timeout_s):
                result = function(item)
        except FileTimeout as timeout:
            results.append(_TimedOut(timeout.seconds))
            continue
        results.append(result)
    return results
