"""Tests for usdcm.runtime.checkpoint: safe loading, atomic saving, round trips, fingerprints."""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from usdcm.errors import UsdcmError
from usdcm.models.factory import build_model
from usdcm.runtime.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    load_checkpoint,
    package_versions,
    save_checkpoint,
    sha256_file,
    unwrap_model,
)


def _payload(model: nn.Module | None = None, **extra: Any) -> dict[str, Any]:
    model = model or nn.Linear(4, 2)
    payload: dict[str, Any] = {
        "model_state": model.state_dict(),
        "config": {"model": {"name": "seed_cnn", "dropout": 0.0}, "data": {"image_size": [64, 64]}},
        "label_map": {"benign": 0, "malignant": 1},
        "normalization": {"mode": "percentile", "lower": 3.5, "upper": 201.0},
        "input_size": [64, 64],
        "manifest_sha256": "0" * 64,
        "versions": package_versions(),
        "epoch": 3,
    }
    payload.update(extra)
    return payload


class _RunsCode:
    """Unpickling this object runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_round_trip_with_model_optimizer_and_scheduler_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[32, 32])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    for _ in range(2):
        loss = nn.functional.cross_entropy(
            model(torch.rand(4, 1, 32, 32)), torch.tensor([0, 1] * 2)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(
        torch.optim.AdamW(nn.Linear(2, 2).parameters()), max_lr=1e-3, total_steps=10
    )
    payload = _payload(
        model,
        optimizer_state=optimizer.state_dict(),
        scheduler_state=scheduler.state_dict(),
        onecycle_state=onecycle.state_dict(),
        scaler_state=scaler.state_dict(),
        rng={"torch": torch.get_rng_state()},
    )
    path = tmp_path / "run" / "last.pt"
    save_checkpoint(path, payload)

    # The file itself loads with torch's safe loader, not only through load_checkpoint.
    torch.load(path, weights_only=True)
    loaded = load_checkpoint(path)
    assert set(REQUIRED_KEYS) <= set(loaded)
    assert loaded["label_map"] == payload["label_map"]
    assert loaded["versions"] == payload["versions"]

    fresh = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[32, 32])
    fresh.load_state_dict(loaded["model_state"])
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], tensor, rtol=0, atol=0)
    new_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3, weight_decay=1e-4)
    new_optimizer.load_state_dict(loaded["optimizer_state"])
    new_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(new_optimizer, T_max=5)
    new_scheduler.load_state_dict(loaded["scheduler_state"])
    assert new_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert new_optimizer.state_dict()["state"][0]["step"] == 2
    torch.testing.assert_close(
        new_optimizer.state_dict()["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    assert torch.equal(loaded["rng"]["torch"], payload["rng"]["torch"])
    assert loaded["onecycle_state"] == onecycle.state_dict()


def test_a_pickle_payload_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save(_payload(extra=_RunsCode(marker)), path)  # a torch-format file with a payload
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "holds code or objects of unsupported types" in message
    assert "not loaded and nothing in it was executed" in message
    assert "copy it again, or retrain" in message
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_raw_pickle_file_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model_state": _RunsCode(marker)}))
    with pytest.raises(CheckpointError, match="holds code or objects of unsupported types"):
        load_checkpoint(path)
    assert not marker.exists()


def test_the_marker_payload_really_would_run_code(tmp_path: Path) -> None:
    # Guards the two tests above: an unsafe load of the same bytes does create the marker.
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # deliberately unsafe
    assert marker.exists()


def test_a_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="No checkpoint at .*nope.pt; pass the best.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "data",
    [b"", b"not a checkpoint at all", b"PK\x03\x04 truncated zip"],
    ids=["empty", "text", "truncated-zip"],
)
def test_corrupt_bytes_are_a_clear_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "corrupt" in message
    assert "copy it again, or retrain" in message
    assert isinstance(info.value, UsdcmError)


def test_a_truncated_real_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_missing_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    payload = _payload()
    del payload["manifest_sha256"], payload["versions"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="lacks the key\\(s\\) manifest_sha256, versions"):
        load_checkpoint(path)


def test_a_checkpoint_that_is_not_a_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="holds a list, not the dict"):
        load_checkpoint(path)


def test_save_refuses_missing_keys_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    payload = _payload()
    del payload["epoch"]
    with pytest.raises(CheckpointError, match="lacks the key\\(s\\) epoch"):
        save_checkpoint(path, payload)
    assert not path.exists()


@pytest.mark.parametrize(
    ("value", "where", "type_name"),
    [
        (np.float64(0.5), "['normalization']['mean']", "numpy.float64"),
        (np.zeros(3), "['normalization']['mean']", "numpy.ndarray"),
        (Path("x"), "['normalization']['mean']", "Path"),
        (torch.__version__, "['normalization']['mean']", "TorchVersion"),
    ],
    ids=["np-float", "ndarray", "path", "str-subclass"],
)
def test_save_refuses_values_a_safe_load_would_refuse(
    tmp_path: Path, value: Any, where: str, type_name: str
) -> None:
    path = tmp_path / "best.pt"
    payload = _payload(normalization={"mean": value})
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, payload)
    message = str(info.value)
    assert f"payload{where}" in message
    assert type_name in message
    assert "Convert it first" in message
    assert not path.exists()


def test_save_refuses_non_str_keys(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="key of type tuple"):
        save_checkpoint(tmp_path / "x.pt", _payload(label_map={("a", "b"): 0}))


def test_save_is_atomic_a_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(epoch=1))
    before = path.read_bytes()

    def fail_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(CheckpointError, match="Could not write the checkpoint .*last.pt"):
        save_checkpoint(path, _payload(epoch=2))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_load_maps_to_the_requested_device(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, _payload())
    loaded = load_checkpoint(path, map_location=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in loaded["model_state"].values())


def test_unwrap_model_strips_compile_and_ddp_wrappers() -> None:
    bare = nn.Linear(2, 2)
    compiled = nn.Module()
    compiled._orig_mod = bare  # what torch.compile's OptimizedModule holds
    assert unwrap_model(compiled) is bare
    assert unwrap_model(bare) is bare
    assert list(unwrap_model(compiled).state_dict()) == ["weight", "bias"]


def test_package_versions_are_plain_strings() -> None:
    versions = package_versions()
    assert set(versions) == {"usdcm", "torch", "monai", "pydicom", "numpy", "nibabel", "python"}
    assert all(type(v) is str for v in versions.values())
    assert versions["python"] == platform.python_version()
    assert versions["torch"].split("+")[0] == torch.__version__.split("+")[0]


def test_sha256_file_streams_and_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk_bytes=1000) == expected


def test_sha256_file_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="Could not read .*missing.csv to fingerprint"):
        sha256_file(tmp_path / "missing.csv")
