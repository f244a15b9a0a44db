"""The training run end to end on tiny data: run folder, reproducibility, resume, DDP, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.training.conftest import TinyManifest, tiny_config, train_with_torchrun

from usdcm.errors import TrainingError
from usdcm.runtime.checkpoint import REQUIRED_KEYS, load_checkpoint
from usdcm.training.run import EpochRecord, train

_VOLATILE = ("seconds",)


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k not in _VOLATILE} for r in records]


def test_a_run_writes_its_folder(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    manifest = tiny_manifest()
    run_dir = tmp_path / "run"
    result = train(manifest, tiny_config(), run_dir)

    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "splits.csv",
        "metrics.jsonl",
        "best.pt",
        "last.pt",
        "train.log",
    }
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1, 2]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["epochs"] == 3
    splits = (run_dir / "splits.csv").read_text().splitlines()
    assert len(splits) == 1 + 28  # every labelled image, test included, is recorded
    assert result.n_images == {"test": 4, "train": 16, "val": 8}

    best = load_checkpoint(run_dir / "best.pt")
    assert set(REQUIRED_KEYS) <= set(best)
    assert best["label_map"] == {"abnormal": 0, "normal": 1}
    assert best["input_size"] == [24, 24]
    assert best["epoch"] == result.best_epoch
    assert best["normalization"]["mode"] == "percentile"
    assert "optimizer_state" in load_checkpoint(run_dir / "last.pt")
    assert "optimizer_state" not in best


def test_it_learns_a_visible_signal(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    manifest = tiny_manifest(counts={"train": 48, "val": 16})
    config = tiny_config(optim={"epochs": 8, "lr": 0.003})
    result = train(manifest, config, tmp_path / "run")
    assert result.best_auc >= 0.9


def test_the_same_seed_gives_identical_metrics(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    manifest = tiny_manifest()
    config = tiny_config(augment={"prob": 0.5, "flip_lr_prob": 0.5})
    train(manifest, config, tmp_path / "a")
    train(manifest, config, tmp_path / "b")
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    other = tiny_config(augment={"prob": 0.5, "flip_lr_prob": 0.5}, runtime={"seed": 1})
    train(manifest, other, tmp_path / "c")
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "c")


class _Killed(Exception):
    pass


def test_resume_ends_where_an_uninterrupted_run_ends(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    config = tiny_config(
        augment={"prob": 0.5, "flip_lr_prob": 0.5}, optim={"epochs": 4, "schedule": "onecycle"}
    )
    train(manifest, config, tmp_path / "whole")

    def kill_after_second(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(manifest, config, tmp_path / "cut", on_epoch=kill_after_second)
    assert len(_metrics(tmp_path / "cut")) == 2
    train(manifest, config, tmp_path / "cut", resume=True)

    assert _metrics(tmp_path / "cut") == _metrics(tmp_path / "whole")
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model_state"]
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")["model_state"]
    for key, value in whole.items():
        assert torch.equal(value, cut[key]), key


def test_resume_without_last_checkpoint_is_an_error(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match="last.pt"):
        train(tiny_manifest(), tiny_config(), tmp_path / "run", resume=True)


def test_a_single_class_is_refused(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    manifest = tiny_manifest()
    text = manifest.read_text().replace("abnormal", "normal")
    manifest.write_text(text)
    with pytest.raises(TrainingError, match="at least two classes"):
        train(manifest, tiny_config(), tmp_path / "run")


def test_sampler_weighting_and_cosine_run(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    config = tiny_config(optim={"epochs": 2, "class_weighting": "sampler", "schedule": "none"})
    result = train(tiny_manifest(), config, tmp_path / "run")
    assert len(result.epochs) == 2
    assert result.epochs[0].lr == result.epochs[1].lr


def test_two_gloo_processes_match_one(tiny_manifest: TinyManifest, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes sees the same global batches as 1 process."""
    manifest = tiny_manifest()
    config_path = tmp_path / "ddp.yaml"
    config = tiny_config(optim={"class_weighting": "none"}).to_dict()
    config_path.write_text(yaml.safe_dump(config))
    single = tmp_path / "single"
    train(manifest, tiny_config(optim={"class_weighting": "none"}), single)

    train_with_torchrun(manifest, config_path, tmp_path / "ddp")

    ddp_metrics, single_metrics = _metrics(tmp_path / "ddp"), _metrics(single)
    assert len(ddp_metrics) == len(single_metrics) == 3
    for d, s in zip(ddp_metrics, single_metrics, strict=True):
        for key in ("train_loss", "val_loss", "val_auc", "val_balanced_accuracy"):
            assert d[key] == pytest.approx(s[key], rel=1e-3, abs=1e-4), key


def test_a_non_square_input_size_trains_and_evaluates(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    from usdcm.inference.model import load_trained_model
    from usdcm.inference.predict import predict_items

    config = tiny_config(data={"image_size": [24, 40]}, optim={"epochs": 1})
    manifest = tiny_manifest()
    train(manifest, config, tmp_path / "run")
    trained = load_trained_model(tmp_path / "run", "cpu")
    item = {"image": str(manifest.parent / "images" / "img000.nii.gz"), "label": 0}
    predictions = predict_items(trained, [{**item, "image_id": "img000"}])
    assert predictions.probabilities.shape == (1, 2)


def test_disk_and_partial_caches_train_like_the_full_ram_cache(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    full = train(manifest, tiny_config(), tmp_path / "ram")
    disk_dir = tmp_path / "cache"
    disk = train(
        manifest, tiny_config(data={"persistent_cache_dir": str(disk_dir)}), tmp_path / "d"
    )
    part = train(manifest, tiny_config(data={"cache_rate": 0.25}), tmp_path / "part")

    assert _metrics(tmp_path / "d") == _metrics(tmp_path / "ram")
    assert _metrics(tmp_path / "part") == _metrics(tmp_path / "ram")
    assert len(list(disk_dir.rglob("*.pt"))) == 16 + 8  # train + val, never test
    assert disk.cache_bytes == 0
    assert 0 < part.cache_bytes < full.cache_bytes


def test_the_command_passed_in_is_recorded_and_sys_argv_is_not_read(
    tiny_manifest: TinyManifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["pytest", "--not-the-command"])
    manifest = tiny_manifest()
    config = tiny_config(optim={"epochs": 1})
    command = "usdcm train data/manifest.csv --out 'runs/a b'"
    train(manifest, config, tmp_path / "given", command=command)
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(tmp_path / "given" / name)["command"] == command
    train(manifest, config, tmp_path / "unknown")
    assert load_checkpoint(tmp_path / "unknown" / "best.pt")["command"] is None


class _RecordingProgress:
    """A TrainingProgress that remembers every call."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int]] = []
        self.advanced: list[int] = []

    def phase(self, name: str, total: int) -> None:
        self.phases.append((name, total))
        self.advanced.append(0)

    def advance(self, count: int = 1) -> None:
        self.advanced[-1] += count


def test_progress_goes_to_the_reporter_passed_in(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    progress = _RecordingProgress()
    train(tiny_manifest(), tiny_config(), tmp_path / "run", progress=progress)
    # 16 training images in batches of 8, 8 validation cines in batches of 8 // 4
    assert progress.phases == [("epoch 1", 2 + 4), ("epoch 2", 6), ("epoch 3", 6)]
    assert progress.advanced == [6, 6, 6]
