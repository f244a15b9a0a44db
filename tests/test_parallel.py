from __future__ import annotations

import os

import pytest

from usdcm.parallel import map_files


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
