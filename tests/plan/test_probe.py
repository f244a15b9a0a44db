"""The timing probe and the reference machine's step times."""

from __future__ import annotations

import time

from usdcm.plan.probe import StepTimes, reference_probe, timing_probe


def test_the_reference_times_are_fixed_and_grow_with_the_input() -> None:
    assert reference_probe("resnet18", 1, 128) == reference_probe("resnet18", 1, 128)
    for name in ("seed_cnn", "resnet18", "efficientnet_lite0", "densenet121"):
        small, large = reference_probe(name, 1, 64), reference_probe(name, 1, 224)
        assert 0 < small.train_s < large.train_s
        assert 0 < small.eval_s < small.train_s
    assert reference_probe("unknown", 1, 96) == reference_probe("resnet18", 1, 96)


def test_the_probe_times_real_steps_briefly_and_remembers_them() -> None:
    probe = timing_probe("cpu", batch=4, steps=2)
    started = time.perf_counter()
    first = probe("seed_cnn", 1, 32)
    assert time.perf_counter() - started < 30  # seconds, even on a busy machine
    assert isinstance(first, StepTimes)
    assert first.train_s > 0 and first.eval_s > 0
    assert probe("seed_cnn", 1, 32) is first  # cached: no second timing


def test_an_epoch_costs_its_images_and_frames() -> None:
    times = StepTimes(train_s=0.01, eval_s=0.002)
    assert times.per_epoch(train_images=100, eval_frames=50) == 1.1
