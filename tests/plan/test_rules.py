"""The plan's rules: given fingerprints give the right choices, and overrides win.

Every test times models with a fake probe (tests/plan/conftest.py), linear in pixels, so the
choices are deterministic; the expected sides and epochs are worked out in the comments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from tests.plan.conftest import (
    GPU8,
    GPU80,
    LARGE_STILLS,
    RGB_CINE,
    SMALL_CINE,
    fake_probe,
    fast_probe,
    fingerprint,
    lite0_only,
    no_weights,
)

from usdcm.errors import PlanError
from usdcm.plan.fingerprint import Fingerprint
from usdcm.plan.probe import Probe, StepTimes
from usdcm.plan.rules import (
    CPU_SIDES,
    Decision,
    WeightsCheck,
    choose,
    format_duration,
    parse_time_budget,
)


def plan(
    fp: Fingerprint,
    budget: float = 20 * 60,
    *,
    probe: Probe = fake_probe,
    weights: WeightsCheck = lite0_only,
    fixed: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
) -> Decision:
    return choose(
        fp, time_budget_s=budget, probe=probe, weights_check=weights, fixed=fixed, sources=sources
    )


def side(decision: Decision) -> int:
    size = decision.value("data.image_size")
    assert size[0] == size[1]
    return int(size[0])


def test_cpu_small_cine_fine_tunes_lite0_at_a_small_input() -> None:
    decision = plan(fingerprint(SMALL_CINE))
    assert decision.value("runtime.device") == "cpu"
    assert decision.value("model.name") == "efficientnet_lite0"
    assert decision.value("model.weights") == "imagenet"
    assert decision.value("optim.batch_size") == 16  # 112 training images: under 400
    assert decision.value("data.eval_frames") == 4  # cines, on a CPU
    assert decision.value("data.tta_flip") is True
    assert decision.value("optim.schedule") == "cosine"
    assert decision.value("optim.warmup_epochs") >= 1
    # the images' median short side is 132 px: no input above 128 px
    assert side(decision) == 128
    # 112 images / 16 = 7 steps per epoch; ~500 steps wanted, at most 60 epochs
    assert decision.value("optim.epochs") == 60
    assert decision.estimated_seconds <= 20 * 60
    assert not decision.notes
    assert not any(choice.overridden for choice in decision.choices)
    assert all(choice.rule for choice in decision.choices)


def test_cpu_large_stills_take_the_largest_input_that_leaves_enough_epochs() -> None:
    # 1200 training images, batch 32 (38 steps): 14 epochs wanted, 7 enough. At 224 px an
    # epoch's steps cost ~178 s, 250 s with the loop's overhead (4 fit in the budget), at
    # 192 px ~185 s (6 fit), at 160 px ~130 s (9 fit).
    decision = plan(fingerprint(LARGE_STILLS))
    assert decision.value("optim.batch_size") == 32
    assert decision.value("data.eval_frames") == 1  # still images
    assert side(decision) == 160
    assert decision.value("optim.epochs") == 9
    assert decision.estimated_seconds <= 20 * 60
    # an hour affords 224 px and all 14 wanted epochs
    longer = plan(fingerprint(LARGE_STILLS), 60 * 60)
    assert (side(longer), longer.value("optim.epochs")) == (224, 14)


@pytest.mark.parametrize("data", [SMALL_CINE, LARGE_STILLS, RGB_CINE])
def test_a_larger_budget_never_gives_a_smaller_input_or_fewer_epochs(data: Any) -> None:
    previous = (0, 0)
    for minutes in (5, 10, 20, 40, 80, 160):
        decision = plan(fingerprint(data), minutes * 60)
        current = (side(decision), decision.value("optim.epochs"))
        assert current >= previous, minutes
        if not decision.notes:
            assert decision.estimated_seconds <= minutes * 60
        previous = current


def test_a_budget_too_small_says_so_and_trains_a_little_at_the_smallest_input() -> None:
    decision = plan(fingerprint(LARGE_STILLS), 60)
    assert side(decision) == CPU_SIDES[-1]
    assert decision.value("optim.epochs") == 2
    assert any("Raise --time-budget" in note for note in decision.notes)


def test_without_imagenet_weights_the_plan_falls_back_and_says_so() -> None:
    decision = plan(fingerprint(SMALL_CINE), weights=no_weights)
    assert decision.value("model.name") == "resnet18"
    assert decision.value("model.weights") == "none"
    (note,) = decision.notes
    assert "not available" in note and "not installed" in note and "resnet18" in note
    assert "not installed" in next(c.rule for c in decision.choices if c.key == "model.name")
    # training from scratch wants more steps and a higher learning rate
    pretrained = plan(fingerprint(SMALL_CINE))
    assert decision.value("optim.lr") > pretrained.value("optim.lr")


def test_a_gpu_takes_larger_inputs_a_larger_batch_and_keeps_the_cache_on_it() -> None:
    cpu = plan(fingerprint(LARGE_STILLS))
    gpu = plan(fingerprint(LARGE_STILLS, GPU80), probe=fast_probe)
    assert side(gpu) == 384 > side(cpu)  # capped by the GPU's largest side, not the budget
    assert gpu.value("optim.batch_size") == 64
    assert gpu.value("data.cache_on_device") is True
    assert gpu.value("runtime.amp") is True
    assert gpu.value("optim.epochs") >= cpu.value("optim.epochs")
    assert gpu.value("runtime.device") == "cuda"
    small_gpu = plan(fingerprint(LARGE_STILLS, GPU8), probe=fast_probe)
    assert small_gpu.value("optim.batch_size") == 32
    with pytest.raises(KeyError):
        cpu.value("data.cache_on_device")  # a CPU's cache is in RAM: nothing to choose


def test_a_gpu_without_weights_trains_the_deeper_resnet() -> None:
    decision = plan(fingerprint(LARGE_STILLS, GPU80), probe=fast_probe, weights=no_weights)
    assert (decision.value("model.name"), decision.value("model.weights")) == ("resnet34", "none")


def test_gpu_cines_are_judged_on_eight_frames_and_small_images_stay_small() -> None:
    decision = plan(fingerprint(SMALL_CINE, GPU80), probe=fast_probe)
    assert decision.value("data.eval_frames") == 8
    assert side(decision) == 128  # the images' median short side is 132 px


def test_rgb_cines_are_probed_in_colour_and_cached_in_part_when_ram_is_short() -> None:
    seen: list[tuple[str, int, int]] = []

    def recording(name: str, channels: int, side: int) -> StepTimes:
        seen.append((name, channels, side))
        return fake_probe(name, channels, side)

    decision = plan(fingerprint(RGB_CINE), probe=recording)
    assert {channels for _, channels, _ in seen} == {3}
    assert len(seen) == 2  # two sides per model, then a + b * pixels
    assert decision.value("data.eval_frames") == 4
    # 3000 cines of 60 RGB frames at 96 px are ~20 GB: 40% fit in half of 16 GiB of RAM
    assert side(decision) == 96
    assert decision.value("data.cache_rate") == pytest.approx(0.4)
    gray = plan(fingerprint(dataclasses.replace(RGB_CINE, channels=1)))
    assert gray.value("data.cache_rate") > decision.value("data.cache_rate")


def test_folds_share_the_budget() -> None:
    one = plan(fingerprint(LARGE_STILLS), 60 * 60)
    five = plan(fingerprint(LARGE_STILLS), 60 * 60, fixed={"split.folds": 5})
    assert five.value("split.folds") == 5
    assert (side(five), five.value("optim.epochs")) < (side(one), one.value("optim.epochs"))
    assert five.estimated_seconds <= 60 * 60


def test_two_gpus_afford_at_least_what_one_does() -> None:
    one = plan(fingerprint(LARGE_STILLS, GPU80), 5 * 60, probe=fake_probe)
    two_gpus = dataclasses.replace(GPU80, processes=2)
    two = plan(fingerprint(LARGE_STILLS, two_gpus), 5 * 60, probe=fake_probe)
    assert (side(two), two.value("optim.epochs")) > (side(one), one.value("optim.epochs"))


# --- overrides ---


def test_a_fixed_value_wins_is_marked_and_names_its_source() -> None:
    decision = plan(
        fingerprint(LARGE_STILLS),
        fixed={"optim.epochs": 3, "optim.label_smoothing": 0.0},
        sources={"optim.epochs": "--epochs", "optim.label_smoothing": "--config my.yaml"},
    )
    epochs = next(c for c in decision.choices if c.key == "optim.epochs")
    assert (epochs.value, epochs.overridden) == (3, True)
    assert epochs.rule.startswith("set by --epochs (the plan chose 9:")
    smoothing = next(c for c in decision.choices if c.key == "optim.label_smoothing")
    assert (smoothing.value, smoothing.overridden) == (0.0, True)
    assert "set by --config my.yaml" in smoothing.rule and "0.1" in smoothing.rule
    overridden = [c.key for c in decision.choices if c.overridden]
    assert overridden == ["optim.epochs", "optim.label_smoothing"]
    # three epochs at 224 px take ~9 minutes: the largest input fits
    assert side(decision) == 224


def test_fixed_epochs_beyond_the_budget_are_trained_and_the_plan_says_so() -> None:
    decision = plan(fingerprint(LARGE_STILLS), fixed={"optim.epochs": 100})
    assert side(decision) == CPU_SIDES[-1]
    assert decision.value("optim.epochs") == 100
    assert decision.estimated_seconds > 20 * 60
    (note,) = decision.notes
    assert "100 epochs at 64 px take about" in note and "Raise --time-budget" in note


def test_fixing_the_input_size_lets_the_budget_choose_the_epochs() -> None:
    decision = plan(fingerprint(LARGE_STILLS), fixed={"data.image_size": [96, 96]})
    assert decision.value("data.image_size") == [96, 96]
    assert decision.value("optim.epochs") == 14  # all it wanted: 96 px is cheap
    unfixed = plan(fingerprint(LARGE_STILLS))
    assert decision.estimated_seconds < unfixed.estimated_seconds


def test_the_seed_cnn_stays_selectable_and_gets_no_imagenet_weights() -> None:
    decision = plan(fingerprint(SMALL_CINE), fixed={"model.name": "seed_cnn"})
    assert decision.value("model.name") == "seed_cnn"
    assert decision.value("model.weights") == "none"
    assert not decision.notes  # the user chose; no fallback to report
    model = next(c for c in decision.choices if c.key == "model.name")
    assert model.overridden and "efficientnet_lite0" in model.rule  # what the plan chose


def test_weights_none_picks_the_best_network_from_scratch() -> None:
    decision = plan(fingerprint(SMALL_CINE), fixed={"model.weights": "none"})
    assert decision.value("model.name") == "resnet18"
    assert decision.value("model.weights") == "none"


def test_the_ema_follows_the_length_of_the_run() -> None:
    short = plan(fingerprint(SMALL_CINE), fixed={"optim.epochs": 10})
    long = plan(fingerprint(SMALL_CINE), fixed={"optim.epochs": 60})
    assert 0.9 <= short.value("optim.ema_decay") < long.value("optim.ema_decay") < 1
    assert short.value("optim.patience") == 5 and long.value("optim.patience") == 20


def test_one_epoch_has_no_warmup() -> None:
    decision = plan(fingerprint(SMALL_CINE), fixed={"optim.epochs": 1})
    assert decision.value("optim.warmup_epochs") == 0


# --- budgets ---


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20m", 1200.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("900s", 900.0), (" 2 min ", 120.0)],
)
def test_time_budgets_are_read_with_their_units(text: str, seconds: float) -> None:
    assert parse_time_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "", "m", "20 minutes", "0s", "-5m", "5d"])
def test_a_bad_time_budget_is_one_clear_error(text: str) -> None:
    with pytest.raises(PlanError, match="--time-budget"):
        parse_time_budget(text)


def test_durations_read_well() -> None:
    assert [format_duration(s) for s in (5, 600, 7200)] == ["5 s", "10.0 min", "2.0 h"]


def test_every_choice_is_a_config_key() -> None:
    from usdcm.config import TrainConfig

    known = TrainConfig().to_dict()
    decision = plan(fingerprint(SMALL_CINE, GPU80), probe=fast_probe)
    for choice in decision.choices:
        node: Any = known
        for part in choice.key.split("."):
            node = node[part]
