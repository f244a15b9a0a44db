"""Shared by the benchmark scripts: a one-line description of the machine, and peak RSS.

Not a benchmark itself (its name starts with an underscore, so ``make bench`` skips it).
"""

from __future__ import annotations

import os
import platform
import resource
import sys


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
