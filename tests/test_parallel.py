"""Tests for usdcm.parallel: the process pool, and the same map on a Dask LocalCluster."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from usdcm.errors import SchedulerError
from usdcm.parallel import (
    DaskCluster,
    FileTimeout,
    check_scheduler,
    map_files,
    open_scheduler,
)


def square_or_die(value: int) -> int:
    if value == 13:
        os._exit(1)  # a codec that kills its process
    return value * value


@pytest.mark.parametrize("workers", [1, 2])
def test_every_item_comes_back_once(workers: int) -> None:
    items = list(range(40))
    results = dict(
        map_files(lambda_free_square, items, workers=workers, batch_size=3, on_crash=lambda _: -1)
    )
    assert results == {i: i * i for i in items}


def lambda_free_square(value: int) -> int:
    return value * value


def test_an_item_that_kills_its_worker_is_isolated() -> None:
    items = list(range(30))
    pairs = list(map_files(square_or_die, items, workers=2, batch_size=4, on_crash=lambda _: -1))
    results = dict(pairs)
    assert len(pairs) == len(items)
    assert results[13] == -1
    assert all(results[i] == i * i for i in items if i != 13)


# --- the same map on a Dask cluster (--scheduler) -------------------------------------------


def slow_unless_small(value: int) -> int:
    """Python code that runs for 30 s when ``value`` is 7: only a timeout ends it early."""
    if value == 7:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
    return value * value


def reports_its_own_timeout(value: int) -> int:
    try:
        return slow_unless_small(value)
    except FileTimeout:
        return -7


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    """One Dask LocalCluster of two worker processes for the tests of this module."""
    folder = tmp_path_factory.mktemp("shared")
    with open_scheduler("local", workers=2, readable=[folder], writable=[folder]) as cluster:
        assert cluster is not None
        yield cluster


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "process"), ("Process", "process"), (" local ", "local"), ("tcp://h:8786", None)],
)
def test_scheduler_values_are_checked_where_they_come_in(
    value: str | None, expected: str | None
) -> None:
    assert check_scheduler(value) == (expected or value)


@pytest.mark.parametrize("value", ["dask", "tcp://host", "host:8786", "tcp://:8786", "tcp://h:x"])
def test_a_bad_scheduler_is_one_clear_line(value: str) -> None:
    with pytest.raises(SchedulerError, match="is not understood; give `process`"):
        check_scheduler(value)


def test_the_process_pool_stays_the_default_without_dask() -> None:
    with open_scheduler(None, workers=2) as cluster:
        assert cluster is None


def test_dask_gives_every_item_once(local_cluster: DaskCluster) -> None:
    items = list(range(40))
    pairs = list(
        map_files(
            lambda_free_square,
            items,
            workers=1,
            batch_size=3,
            on_crash=lambda _: -1,
            cluster=local_cluster,
        )
    )
    assert sorted(pairs) == [(i, i * i) for i in items]


def test_dask_isolates_an_item_that_kills_its_worker(local_cluster: DaskCluster) -> None:
    items = list(range(30))
    pairs = list(
        map_files(
            square_or_die,
            items,
            workers=1,
            batch_size=4,
            on_crash=lambda _: -1,
            cluster=local_cluster,
        )
    )
    results = dict(pairs)
    assert len(pairs) == len(items)
    assert results[13] == -1
    assert all(results[i] == i * i for i in items if i != 13)
    local_cluster.client.wait_for_workers(2, timeout=30)  # its nanny started a new one


def test_dask_keeps_the_per_file_time_limit(local_cluster: DaskCluster) -> None:
    started = time.monotonic()
    results = dict(
        map_files(
            slow_unless_small,
            list(range(10)),
            workers=1,
            batch_size=4,
            on_crash=lambda _: -1,
            on_timeout=lambda _: -2,
            timeout_s=0.5,
            cluster=local_cluster,
        )
    )
    assert results[7] == -2
    assert all(results[i] == i * i for i in range(10) if i != 7)
    own = dict(
        map_files(
            reports_its_own_timeout,
            [6, 7],
            workers=1,
            on_crash=lambda _: -1,
            timeout_s=0.5,
            cluster=local_cluster,
        )
    )
    assert own == {6: 36, 7: -7}
    assert time.monotonic() - started < 20


def test_a_worker_that_cannot_see_a_folder_stops_the_run_up_front(
    local_cluster: DaskCluster, tmp_path: Path
) -> None:
    missing = tmp_path / "elsewhere"
    with pytest.raises(SchedulerError, match=r"cannot see .*elsewhere; SOURCE and DIR must be"):
        local_cluster.check_shared([missing], [])
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_scheduler_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import usdcm.parallel

    monkeypatch.setattr(usdcm.parallel, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = open_scheduler(f"tcp://127.0.0.1:{port}", workers=1)
    with pytest.raises(SchedulerError, match="Cannot reach the Dask scheduler at tcp://127"):
        unreachable.__enter__()


def stuck_in_c_unless_small(value: int) -> int:
    """``time.sleep`` in C for 30 s when ``value`` is 3: no asynchronous exception ends it."""
    if value == 3:
        time.sleep(30)
    return value * value


def test_dask_ends_a_worker_stuck_in_c_code_and_reports_a_timeout(
    local_cluster: DaskCluster,
) -> None:
    from distributed.diagnostics.plugin import WorkerPlugin

    class ShortGrace(WorkerPlugin):
        """Every worker, restarted ones too, ends a stuck file 0.5 s past its limit."""

        def setup(self, worker: object) -> None:
            import usdcm.parallel

            usdcm.parallel.HARD_KILL_GRACE_S = 0.5

    local_cluster.client.register_plugin(ShortGrace(), name="short-grace")
    try:
        started = time.monotonic()
        results = dict(
            map_files(
                stuck_in_c_unless_small,
                list(range(6)),
                workers=1,
                batch_size=3,
                on_crash=lambda _: -1,
                on_timeout=lambda _: -2,
                timeout_s=0.5,
                cluster=local_cluster,
            )
        )
        assert results == {0: 0, 1: 1, 2: 4, 3: -2, 4: 16, 5: 25}
        assert time.monotonic() - started < 25
    finally:
        local_cluster.client.unregister_worker_plugin("short-grace")
        local_cluster.client.wait_for_workers(2, timeout=30)
