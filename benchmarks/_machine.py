"""Shared by the benchmark scripts: a one-line description of the machine, peak RSS, the
machine's own 1 -> 2 process ceiling and a background load.

Not a benchmark itself (its name starts with an underscore, so ``make bench`` skips it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def _gpu() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        return f"{torch.cuda.device_count()} GPU(s): {', '.join(sorted(names))}"
    return "no GPU"


def describe(*, gpu: bool = False) -> str:
    """E.g. ``x86_64, 2 cores, 24 GiB, Python 3.11.7, torch 2.13.0 (no GPU)``."""
    memory = _memory_gib()
    parts = [
        platform.machine() or platform.processor(),
        f"{os.cpu_count()} cores",
        f"{memory:.0f} GiB" if memory else "memory unknown",
        f"Python {platform.python_version()}",
    ]
    if gpu:
        import torch

        parts.append(f"torch {torch.__version__} ({_gpu()})")
    return ", ".join(parts)


def maxrss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(who).ru_maxrss
    return value / 2**20 if sys.platform == "darwin" else value / 2**10


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB since its last ``exec`` (``VmHWM``).

    Unlike ``ru_maxrss``, which Linux carries across ``fork`` and ``exec``, so that a child
    started from a big parent reports at least the parent's size at the fork.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return maxrss_mib()


def _spin(seconds: float) -> None:
    """Keep one core busy with pure Python for ``seconds`` (a background load)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def _python_loop(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _numpy_loop(n: int) -> float:
    values = np.linspace(0.0, 1.0, 2_000_000)  # 16 MB: beyond one core's cache
    for _ in range(n):
        values = values * 1.0001 + 1.0
    return float(values[0])


def parallel_ceiling(repeats: int = 3) -> dict[str, float]:
    """How much faster 2 processes finish 2 copies of a CPU-bound loop than 1 process does,
    on this machine now: the ceiling of any 1 -> 2 worker scaling here.

    ``python``: a pure-Python loop (no memory traffic); ``numpy``: array passes over 16 MB
    (memory-bound, as image decoding partly is). Median of ``repeats`` alternated rounds.
    """
    from concurrent.futures import ProcessPoolExecutor

    work: dict[str, tuple[Callable[[int], object], int]] = {
        "python": (_python_loop, 4_000_000),
        "numpy": (_numpy_loop, 40),
    }
    ratios: dict[str, list[float]] = {name: [] for name in work}
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_python_loop, [1, 1]))  # both workers started
        for _ in range(repeats):
            for name, (function, n) in work.items():
                started = time.perf_counter()
                function(n)
                function(n)
                serial = time.perf_counter() - started
                started = time.perf_counter()
                list(pool.map(function, [n, n]))
                ratios[name].append(serial / (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in ratios.items()}


@contextlib.contextmanager
def busy(processes: int, seconds: float = 3600.0) -> Iterator[None]:
    """Run ``processes`` pure-Python spinners in the background while the block runs:
    a machine that other work keeps busy."""
    if processes <= 0:
        yield
        return
    context = multiprocessing.get_context("fork")
    spinners = [
        context.Process(target=_spin, args=(seconds,), daemon=True) for _ in range(processes)
    ]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()
