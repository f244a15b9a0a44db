"""The training recipe keys end to end: warmup, label smoothing, EMA, mixup/cutmix, gradient
clipping, flip averaging, class weighting and early stopping; and runs with every key off
unchanged."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from tests.training.conftest import TinyManifest, tiny_config, train_with_torchrun

from usdcm.config import config_from_dict
from usdcm.runtime.checkpoint import load_checkpoint
from usdcm.training.distributed import context_from_env
from usdcm.training.run import (
    EpochRecord,
    _batch_mixer,
    _loss_function,
    _past_time_limit,
    _scheduler,
    train,
)

_KEYS = ("train_loss", "val_loss", "val_auc", "val_balanced_accuracy", "lr")


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: json.loads(line)[k] for k in _KEYS} for line in lines]


# Recorded before the recipe keys existed (commit 5c22a53), on a 2-core x86_64 CPU: runs with
# every key off must keep these numbers. The tolerance allows another CPU's float rounding,
# not a changed operation, random draw or schedule.
_RECORDED = {
    "plain": [
        [0.6748980681101481, 0.5762325777801487, 1.0, 1.0, 0.003],
        [0.5157494296630224, 0.31599249677599206, 1.0, 1.0, 0.0022500000000000003],
        [0.3233299454053243, 0.20834224412028363, 1.0, 1.0, 0.0007500000000000004],
    ],
    "onecycle": [
        [0.6928323010603586, 0.6848124058144135, 1.0, 0.5, 0.0028822147889483404],
        [0.6752137343088785, 0.6344923644769214, 1.0, 0.8125, 0.001022277935542375],
        [0.6393900712331136, 0.6125286151438205, 1.0, 0.875, 4.6395885120100266e-05],
    ],
}


@pytest.mark.parametrize("case", sorted(_RECORDED))
def test_runs_with_every_recipe_key_off_match_the_recorded_run(
    case: str, tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest(counts={"train": 48, "val": 16})
    if case == "plain":
        config = tiny_config(augment={"prob": 0.5, "flip_lr_prob": 0.5})
    else:
        config = tiny_config(
            optim={"schedule": "onecycle", "class_weighting": "sampler"}, model={"dropout": 0.2}
        )
    train(manifest, config, tmp_path / case)
    for got, recorded in zip(_metrics(tmp_path / case), _RECORDED[case], strict=True):
        assert [got[k] for k in _KEYS] == pytest.approx(recorded, rel=1e-5, abs=1e-7)


# --- warmup then cosine -------------------------------------------------------------------


def _lrs(config_values: dict[str, object], steps_per_epoch: int) -> list[float]:
    config = config_from_dict({"optim": {"lr": 1.0, **config_values}})
    optimizer = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler, per_step = _scheduler(optimizer, config, steps_per_epoch)
    assert scheduler is not None and per_step
    rates = []
    for _ in range(config.optim.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_rises_linearly_per_step_then_cosine_decays_to_zero() -> None:
    rates = _lrs({"epochs": 5, "warmup_epochs": 1, "schedule": "cosine"}, steps_per_epoch=4)
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    decay = rates[4:]
    assert decay[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[len(decay) // 2] == pytest.approx(0.5)  # half-way through the cosine
    assert decay[-1] < 0.01


def test_warmup_then_constant_and_warmup_as_one_cycles_ramp() -> None:
    rates = _lrs({"epochs": 3, "warmup_epochs": 1, "schedule": "none"}, steps_per_epoch=2)
    assert rates == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    cycle = _lrs({"epochs": 4, "warmup_epochs": 1, "schedule": "onecycle"}, steps_per_epoch=5)
    assert max(cycle) == pytest.approx(1.0)
    assert cycle.index(max(cycle)) == 4  # the peak ends the first (warmup) epoch


def test_without_warmup_the_cosine_steps_per_epoch_as_before() -> None:
    config = config_from_dict({"optim": {"epochs": 4, "schedule": "cosine"}})
    optimizer = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters())
    scheduler, per_step = _scheduler(optimizer, config, 10)
    assert not per_step
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)


# --- the loss ------------------------------------------------------------------------------


def test_the_loss_keeps_class_weights_and_adds_label_smoothing() -> None:
    labels = [0, 0, 0, 1]
    config = config_from_dict({"optim": {"label_smoothing": 0.1}})
    loss_fn = _loss_function(config, labels, 2, torch.device("cpu"))
    assert isinstance(loss_fn, torch.nn.CrossEntropyLoss)
    assert loss_fn.label_smoothing == 0.1
    assert loss_fn.weight is not None and loss_fn.weight.tolist() == [0.5, 1.5]
    logits, targets = torch.tensor([[2.0, -1.0], [0.5, 0.3]]), torch.tensor([0, 1])
    smoothed = torch.tensor([[0.95, 0.05], [0.05, 0.95]])
    weight = torch.tensor([0.5, 1.5])
    expected = -(smoothed * weight * torch.log_softmax(logits, 1)).sum() / weight[targets].sum()
    torch.testing.assert_close(loss_fn(logits, targets), expected)

    for weighting in ("sampler", "none"):
        config = config_from_dict({"optim": {"class_weighting": weighting}})
        plain = _loss_function(config, labels, 2, torch.device("cpu"))
        assert plain.weight is None and plain.label_smoothing == 0.0


# --- EMA, flip averaging and the checkpoints -----------------------------------------------


def _val_items(manifest: Path) -> list[dict[str, object]]:
    import csv

    with manifest.open(encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "val"]
    labels = {"abnormal": 0, "normal": 1}
    return [
        {
            "image": str(manifest.parent / row["image_path"]),
            "label": labels[row["label"]],
            "image_id": row["image_id"],
        }
        for row in rows
    ]


def test_the_ema_and_the_flip_are_what_validation_best_pt_and_evaluation_use(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    from usdcm.inference.model import TrainedModel, load_trained_model
    from usdcm.inference.predict import predict_items
    from usdcm.training.engine import classification_metrics

    manifest = tiny_manifest()
    config = tiny_config(
        optim={"epochs": 2, "ema_decay": 0.7, "schedule": "none"}, data={"tta_flip": True}
    )
    result = train(manifest, config, tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["ema_updates"] == 2 * 2  # 16 images in batches of 8, two epochs
    trained_weights = last["train_model_state"]
    assert any(
        not torch.equal(value, last["model_state"][key]) for key, value in trained_weights.items()
    )

    def val_loss(trained: TrainedModel) -> float:
        predictions = predict_items(trained, _val_items(manifest), batch_size=3)
        return classification_metrics(predictions, 2)["loss"]

    best_model = load_trained_model(tmp_path / "run", "cpu")  # best.pt, as evaluate loads it
    assert isinstance(best_model, TrainedModel)
    assert best_model.config.data.tta_flip
    assert val_loss(best_model) == pytest.approx(result.epochs[best["epoch"]].val_loss, rel=1e-5)
    last_model = load_trained_model(tmp_path / "run" / "last.pt", "cpu")
    assert isinstance(last_model, TrainedModel)
    assert val_loss(last_model) == pytest.approx(result.epochs[-1].val_loss, rel=1e-5)

    # with the trained weights instead of their average, or without the flip, evaluation
    # would not reproduce validation
    last_model.network.load_state_dict(trained_weights)
    assert val_loss(last_model) != pytest.approx(result.epochs[-1].val_loss, rel=1e-5)
    last_model.network.load_state_dict(last["model_state"])
    last_model.config.data.tta_flip = False
    assert val_loss(last_model) != pytest.approx(result.epochs[-1].val_loss, rel=1e-5)


class _Killed(Exception):
    pass


def test_resume_with_every_recipe_key_on_ends_where_an_uninterrupted_run_ends(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    config = tiny_config(
        augment={"prob": 0.5, "flip_lr_prob": 0.5, "mixup_alpha": 0.4, "cutmix_alpha": 1.0},
        optim={
            "epochs": 4,
            "warmup_epochs": 1,
            "label_smoothing": 0.1,
            "ema_decay": 0.8,
            "grad_clip": 0.5,
        },
        data={"tta_flip": True},
        model={"dropout": 0.2},
    )
    train(manifest, config, tmp_path / "whole")

    def kill_after_second(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(manifest, config, tmp_path / "cut", on_epoch=kill_after_second)
    train(manifest, config, tmp_path / "cut", resume=True)

    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert whole["ema_updates"] == cut["ema_updates"] == 4 * 2
    for name in ("model_state", "train_model_state"):
        for key, value in whole[name].items():
            assert torch.equal(value, cut[name][key]), (name, key)
    # the recipe changed the run: it is not the run with every key off
    train(manifest, tiny_config(optim={"epochs": 4}), tmp_path / "off")
    assert _metrics(tmp_path / "off") != _metrics(tmp_path / "whole")


def test_mixing_is_seeded_by_the_run(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    manifest = tiny_manifest()
    config = tiny_config(optim={"epochs": 2}, augment={"mixup_alpha": 0.4, "cutmix_alpha": 1.0})
    train(manifest, config, tmp_path / "a")
    train(manifest, config, tmp_path / "b")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    plain = tiny_config(optim={"epochs": 2})
    train(manifest, plain, tmp_path / "plain")
    assert (
        _metrics(tmp_path / "a")[0]["train_loss"] != _metrics(tmp_path / "plain")[0]["train_loss"]
    )


# --- early stopping on validation AUC ------------------------------------------------------


def test_training_stops_after_patience_epochs_without_a_better_val_auc(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    # a learning rate too small to change any prediction's rank: the AUC never improves
    frozen = {"epochs": 6, "lr": 1e-12, "schedule": "none", "patience": 2}
    result = train(manifest, tiny_config(optim=frozen), tmp_path / "run")
    assert result.stopped_early
    assert [r.epoch for r in result.epochs] == [0, 1, 2]
    assert [r.best for r in result.epochs] == [True, False, False]
    assert result.best_epoch == 0
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 0
    # resuming a run that stopped early trains no further
    again = train(manifest, tiny_config(optim=frozen), tmp_path / "run", resume=True)
    assert again.stopped_early and len(again.epochs) == 3

    # a learning run stops ``patience`` epochs after its last improvement, not earlier
    learning = train(manifest, tiny_config(optim={"epochs": 8, "patience": 2}), tmp_path / "l")
    improved = [r.epoch for r in learning.epochs if r.best]
    assert improved[-1] == learning.best_epoch
    assert len(learning.epochs) == min(8, learning.best_epoch + 3)
    assert learning.stopped_early == (learning.best_epoch + 3 < 8)


def test_training_stops_before_an_epoch_that_would_end_past_the_time_limit(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    limited = train(
        manifest, tiny_config(optim={"epochs": 4, "time_limit_s": 1e-3}), tmp_path / "limited"
    )
    # the first epoch always runs; the second would end past a millisecond
    assert [r.epoch for r in limited.epochs] == [0]
    assert limited.stopped_at_time_limit and not limited.stopped_early
    assert load_checkpoint(tmp_path / "limited" / "best.pt")["epoch"] == 0
    roomy = train(manifest, tiny_config(optim={"epochs": 2, "time_limit_s": 1e6}), tmp_path / "r")
    assert len(roomy.epochs) == 2 and not roomy.stopped_at_time_limit


def test_the_time_limit_counts_the_next_epoch_as_long_as_the_last() -> None:
    single = context_from_env()
    ten_ago = time.perf_counter() - 10
    assert not _past_time_limit(single, 20.0, ten_ago, 9.0)
    assert _past_time_limit(single, 20.0, ten_ago, 11.0)
    assert not _past_time_limit(single, 0.0, ten_ago, 1e9)  # 0: no limit
    assert not _past_time_limit(single, 1.0, ten_ago, 0.0)  # before the first epoch


def test_each_epoch_and_rank_mixes_from_its_own_stream() -> None:
    config = tiny_config(augment={"mixup_alpha": 0.4})
    assert _batch_mixer(tiny_config(), 0, 0, 0) is None

    def first_lam(seed: int, epoch: int, rank: int) -> float:
        mixer = _batch_mixer(config, seed, epoch, rank)
        assert mixer is not None
        return mixer(torch.zeros(4, 1, 2, 2), torch.zeros(4))[1].lam

    draws = {first_lam(s, e, r) for s, e, r in [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0)]}
    assert len(draws) == 4
    assert first_lam(0, 1, 0) == first_lam(0, 1, 0)


@pytest.mark.slow
def test_two_gloo_processes_with_the_ema_and_clipping_match_one(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    """Under DDP the EMA follows the unwrapped model and clipping sees the reduced gradients."""

    import yaml

    manifest = tiny_manifest()
    sections: dict[str, dict[str, object]] = {
        "optim": {
            "class_weighting": "none",
            "ema_decay": 0.6,
            "grad_clip": 0.05,
            "warmup_epochs": 1,
            "label_smoothing": 0.1,
        },
        "data": {"tta_flip": True},
    }
    config = tiny_config(**sections)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    train(manifest, config, tmp_path / "single")

    train_with_torchrun(manifest, config_path, tmp_path / "ddp")

    ddp, single = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "single")
    assert len(ddp) == len(single) == 3
    for d, s in zip(ddp, single, strict=True):
        for key in _KEYS:
            assert d[key] == pytest.approx(s[key], rel=1e-3, abs=1e-4), key
    ddp_last = load_checkpoint(tmp_path / "ddp" / "last.pt")
    single_last = load_checkpoint(tmp_path / "single" / "last.pt")
    assert ddp_last["ema_updates"] == single_last["ema_updates"] == 3 * 2
    for key, value in single_last["model_state"].items():
        torch.testing.assert_close(ddp_last["model_state"][key], value, rtol=1e-3, atol=1e-4)
