"""make_plan: the fingerprint, the rules and the overrides give one valid config.

Precedence: a flag wins over a config file, which wins over the plan.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.plan.conftest import fake_probe, lite0_only, no_weights
from tests.training.conftest import write_tiny_manifest

from usdcm.artifacts.plan import PLAN_JSON, PlanRecord
from usdcm.errors import ConfigError
from usdcm.plan import make_plan, override_config, plan_from_record
from usdcm.plan.planner import Plan, imagenet_weights_check
from usdcm.plan.probe import Probe, StepTimes, reference_probe

ROOT = Path(__file__).resolve().parents[2]


def tiny_plan(tmp_path: Path, **kwargs: object) -> Plan:
    manifest = write_tiny_manifest(tmp_path / "data")
    options: dict[str, object] = {
        "device": "cpu",
        "probe": fake_probe,
        "weights_check": lite0_only,
        **kwargs,
    }
    return make_plan(manifest, **options)  # type: ignore[arg-type]


def _flat(values: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def test_the_plan_is_a_valid_config_that_holds_every_choice(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path)
    config = _flat(plan.config.to_dict())
    assert plan.config.model.name == "efficientnet_lite0"
    assert plan.config.model.weights == "imagenet"
    assert plan.config.runtime.device == "cpu"
    for choice in plan.choices:
        assert config[choice.key] == choice.value, choice.key
    assert not any(choice.overridden for choice in plan.choices)
    # 16 training images: batch 4 (a quarter), still images: one frame
    assert plan.config.optim.batch_size == 4
    assert plan.config.data.eval_frames == 1
    assert plan.fingerprint is not None and plan.fingerprint.data.images == 28


def test_a_config_file_overrides_its_keys_and_a_flag_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("optim:\n  epochs: 3\n  label_smoothing: 0.0\naugment:\n  prob: 0.2\n")
    plan = tiny_plan(
        tmp_path,
        config_path=config,
        overrides={"optim.label_smoothing": 0.05, "runtime.seed": 7},
        override_sources={"optim.label_smoothing": "--smoothing", "runtime.seed": "--seed"},
    )
    rows = {choice.key: choice for choice in plan.choices}
    assert plan.config.optim.epochs == 3
    assert rows["optim.epochs"].overridden and f"--config {config}" in rows["optim.epochs"].rule
    assert plan.config.optim.label_smoothing == 0.05  # the flag beats the file
    assert rows["optim.label_smoothing"].rule.startswith("set by --smoothing")
    # keys the plan does not choose appear too, marked, where they differ from the default
    assert rows["augment.prob"].value == 0.2 and rows["augment.prob"].overridden
    assert rows["runtime.seed"].value == 7 and rows["runtime.seed"].rule == "set by --seed"
    # the rest is still planned
    assert not rows["model.name"].overridden
    assert plan.config.model.name == "efficientnet_lite0"


def test_a_full_config_file_overrides_the_whole_plan(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, config_path=ROOT / "configs" / "seed_cnn.yaml")
    assert plan.config.model.name == "seed_cnn"
    assert plan.config.model.weights == "none"
    assert all(choice.overridden for choice in plan.choices)


def test_a_bad_key_in_the_file_or_a_flag_stops_before_planning(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("optim:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="optim.epoch"):
        tiny_plan(tmp_path, config_path=config)
    with pytest.raises(ConfigError, match="optim.epochs"):
        tiny_plan(tmp_path, overrides={"optim.epochs": 0})


def test_without_weights_the_plan_falls_back_with_a_note(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, weights_check=no_weights)
    assert (plan.config.model.name, plan.config.model.weights) == ("resnet18", "none")
    assert any("falls back to resnet18" in note for note in plan.notes)
    assert any("falls back" in note for note in plan.to_record().notes)


def test_a_failing_probe_falls_back_to_the_reference_times(tmp_path: Path) -> None:
    def broken(name: str, channels: int, side: int) -> StepTimes:
        raise RuntimeError("out of memory")

    plan = tiny_plan(tmp_path, probe=broken)
    reference = tiny_plan(tmp_path, probe=reference_probe)
    assert plan.config == reference.config
    assert any("timing probe failed (RuntimeError)" in note for note in plan.notes)


def _slowed(factor: float) -> Probe:
    def probe(name: str, channels: int, side: int) -> StepTimes:
        quiet = reference_probe(name, channels, side)
        return StepTimes(train_s=quiet.train_s * factor, eval_s=quiet.eval_s * factor)

    return probe


def test_a_cpu_far_slower_than_the_reference_is_planned_with_the_reference_times(
    tmp_path: Path,
) -> None:
    # a probe 10x slower is taken as a busy machine: the plan is the reference machine's, with
    # the time limit holding the budget (db94286 planned 64 px / 2 epochs here, AUC 0.79)
    busy = tiny_plan(tmp_path, probe=_slowed(10), time_budget_s=60)
    assert any("10x slower here than on the reference machine" in n for n in busy.notes)
    quiet = tiny_plan(tmp_path, probe=reference_probe, time_budget_s=60)
    assert not quiet.notes
    assert busy.config == quiet.config
    assert busy.config.optim.time_limit_s == 60


def test_a_model_is_planned_from_one_source_decided_at_its_first_probe(tmp_path: Path) -> None:
    # contention that starts or stops between the two probed sides must not mix the sources
    def varying(first: float, then: float) -> Probe:
        calls: list[int] = []

        def probe(name: str, channels: int, side: int) -> StepTimes:
            calls.append(side)
            return _slowed(first if len(calls) == 1 else then)(name, channels, side)

        return probe

    quiet = tiny_plan(tmp_path, probe=reference_probe, time_budget_s=60)
    eased = tiny_plan(tmp_path, probe=varying(10, 1), time_budget_s=60)
    assert eased.config == quiet.config
    assert any("10x slower" in note for note in eased.notes)
    worsened = tiny_plan(tmp_path, probe=varying(3, 10), time_budget_s=60)
    assert not worsened.notes  # 3x at first: this machine's times, for both sides
    assert worsened.config != quiet.config


def test_a_cpu_somewhat_slower_than_the_reference_is_planned_with_its_own_times(
    tmp_path: Path,
) -> None:
    slow = tiny_plan(tmp_path, probe=_slowed(3), time_budget_s=60)
    quiet = tiny_plan(tmp_path, probe=reference_probe, time_budget_s=60)
    assert not slow.notes
    assert (slow.config.data.image_size[0], slow.config.optim.epochs) < (
        quiet.config.data.image_size[0],
        quiet.config.optim.epochs,
    )


def test_the_time_limit_is_the_budget_per_fold_and_off_when_epochs_are_given(
    tmp_path: Path,
) -> None:
    assert tiny_plan(tmp_path, time_budget_s=600).config.optim.time_limit_s == 600
    folds = tiny_plan(tmp_path, time_budget_s=600, overrides={"split.folds": 3})
    assert folds.config.optim.time_limit_s == 200
    given = tiny_plan(tmp_path, time_budget_s=600, overrides={"optim.epochs": 4})
    assert given.config.optim.time_limit_s == 0
    assert "epochs were given" in given.to_record().choice("optim.time_limit_s").rule


def test_plan_json_holds_the_config_to_train_again(tmp_path: Path) -> None:
    plan = tiny_plan(tmp_path, overrides={"optim.epochs": 2})
    path = plan.write(tmp_path / "run")
    assert path == tmp_path / "run" / PLAN_JSON
    record = PlanRecord.read(path)
    assert record == plan.to_record()
    again = plan_from_record(record)
    assert again.config == plan.config
    assert record.choice("optim.epochs").overridden
    assert record.fingerprint["data"]["images"] == 28
    assert "pat0" not in path.read_text()


def test_override_config_sets_file_keys_then_flags_over_a_base(tmp_path: Path) -> None:
    base = tiny_plan(tmp_path).config
    config = tmp_path / "more.yaml"
    config.write_text(yaml.safe_dump({"optim": {"epochs": 9, "lr": 0.01}}))
    resumed = override_config(base.to_dict(), config_path=config, overrides={"optim.epochs": 12})
    assert (resumed.optim.epochs, resumed.optim.lr) == (12, 0.01)
    assert resumed.model == base.model and resumed.data == base.data


def test_the_weights_check_names_why_not() -> None:
    assert imagenet_weights_check("seed_cnn") == "seed_cnn has no ImageNet weights"
    assert "not in this usdcm's model registry" in (imagenet_weights_check("vgg16") or "")
