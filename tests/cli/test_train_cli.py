from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.training.conftest import tiny_config, write_tiny_manifest
from typer.testing import CliRunner

from usdcm.cli.app import app
from usdcm.cli.train import _strip_nproc_value

runner = CliRunner()


def test_train_prints_the_summary_table(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()))
    out = tmp_path / "run"
    args = ["train", str(manifest), "--config", str(config), "--out", str(out), "--epochs", "2"]
    result = runner.invoke(app, [*args, "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "val AUC" in result.output and "best epoch" in result.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["optim"]["epochs"] == 2 and resolved["runtime"]["seed"] == 3


def test_train_records_the_users_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usdcm.runtime.checkpoint import load_checkpoint

    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "tiny config.yaml"
    config.write_text(yaml.safe_dump(tiny_config().to_dict()))
    out = tmp_path / "run"
    args = ["train", str(manifest), "--config", str(config), "-o", str(out), "--epochs", "1", "-q"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/usdcm", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    recorded = load_checkpoint(out / "best.pt")["command"]
    assert recorded == shlex.join(["usdcm", *args])
    assert shlex.split(recorded)[4] == str(config)  # the space survives quoting


def test_nproc_workers_record_the_users_command_not_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usdcm.training import distributed

    seen: list[list[str]] = []

    def fake_launch(nproc: int, argv: list[str]) -> int:
        seen.append(argv)
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    args = ["train", "m.csv", "--nproc", "2", "--epochs", "3"]
    monkeypatch.setattr(sys, "argv", ["usdcm", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (argv,) = seen
    assert "--nproc" not in argv and "--out" in argv
    assert argv[-2:] == ["--record-command", shlex.join(["usdcm", *args])]


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("optim:\n  epoch: 3\n", "optim.epoch"),
        ("optim:\n  lr: fast\n", "optim.lr"),
        ("model:\n  name: vgg\n", "model.name"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, config_text: str, expected: str
) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "bad.yaml"
    config.write_text(config_text)
    result = runner.invoke(app, ["train", str(manifest), "--config", str(config)])
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_missing_manifest_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: No manifest")
    assert "Traceback" not in result.output


def test_asking_for_a_missing_gpu_is_one_line(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    result = runner.invoke(app, ["train", str(manifest), "--device", "cuda", "-o", str(tmp_path)])
    if result.exit_code == 0:  # pragma: no cover - only on a machine with a GPU
        pytest.skip("this machine has a CUDA GPU")
    assert result.exit_code == 2
    assert "no CUDA GPU was found" in result.output


def test_nproc_is_removed_from_the_worker_command_line() -> None:
    argv = ["train", "m.csv", "--nproc", "2", "--epochs", "3"]
    assert _strip_nproc_value(argv) == ["train", "m.csv", "--epochs", "3"]


@pytest.mark.slow
def test_nproc_2_launches_torchrun_and_writes_one_run(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(optim={"class_weighting": "none"}).to_dict()))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "usdcm", "train", str(manifest), "--config", str(config)]
    command += ["--out", str(out), "--nproc", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("best epoch") == 1  # only rank 0 prints and writes
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    from usdcm.runtime.checkpoint import load_checkpoint

    recorded = load_checkpoint(out / "best.pt")["command"]
    assert recorded == shlex.join(["usdcm", *command[3:]])  # the user's, --nproc included
