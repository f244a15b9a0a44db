from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.training.conftest import tiny_config, write_tiny_manifest
from typer.testing import CliRunner

from usdcm.artifacts.plan import PLAN_JSON, PlanRecord
from usdcm.cli.app import app
from usdcm.cli.train import _strip_nproc_value

runner = CliRunner()


@pytest.fixture(autouse=True)
def reference_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan with the reference machine's step times: no probe, the same plan everywhere."""
    from usdcm.plan import planner
    from usdcm.plan.probe import reference_probe

    monkeypatch.setattr(planner, "timing_probe", lambda device: reference_probe)


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
    manifest = write_tiny_manifest(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", str(manifest), "--nproc", "2", "--epochs", "3", "-o", str(out)]
    monkeypatch.setattr(sys, "argv", ["usdcm", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (argv,) = seen
    assert "--nproc" not in argv and "-o" in argv
    # the launcher plans once and hands every worker that plan
    assert argv[-4:-2] == ["--record-command", shlex.join(["usdcm", *args])]
    assert argv[-2:] == ["--plan-file", str(out / PLAN_JSON)]
    assert PlanRecord.read(out / PLAN_JSON).config["optim"]["epochs"] == 3
    # resumed, the workers read RUN/plan.json themselves (with the new flags over it)
    monkeypatch.setattr(sys, "argv", ["usdcm", *args, "--resume"])
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "--plan-file" not in seen[-1] and "--resume" in seen[-1]


def test_train_without_a_config_plans_prints_the_plan_and_trains_with_it(
    tmp_path: Path,
) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    out = tmp_path / "run"
    args = ["train", str(manifest), "-o", str(out), "--epochs", "1", "--time-budget", "8s", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "usdcm plan" in result.output and "model.name" in result.output
    assert "overridden" in result.output  # --epochs
    assert result.output.index("usdcm plan") < result.output.index("val AUC")
    assert "(the plan estimated" in result.output
    record = PlanRecord.read(out / PLAN_JSON)
    assert record.choice("optim.epochs").overridden
    assert record.choice("optim.epochs").rule.startswith("set by --epochs")
    assert not record.choice("model.name").overridden
    trained = yaml.safe_load((out / "config.yaml").read_text())
    assert trained == record.config
    assert trained["model"]["name"] != "seed_cnn"  # no longer the default
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1

    # --resume trains on with the run's plan, not a new one; a flag still overrides it
    resumed = runner.invoke(app, [*args[:-5], "--epochs", "2", "--resume", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming with the config in {out / PLAN_JSON}" in resumed.output.replace("\n", "")
    again = yaml.safe_load((out / "config.yaml").read_text())
    assert again["optim"]["epochs"] == 2
    assert {k: v for k, v in again.items() if k != "optim"} == {
        k: v for k, v in trained.items() if k != "optim"
    }
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_the_seed_cnn_stays_selectable_through_the_config(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    config = tmp_path / "seed.yaml"
    config.write_text("model:\n  name: seed_cnn\ndata:\n  image_size: [24, 24]\n")
    out = tmp_path / "run"
    args = ["train", str(manifest), "--config", str(config), "-o", str(out), "--epochs", "1"]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    record = PlanRecord.read(out / PLAN_JSON)
    model = record.choice("model.name")
    assert (model.value, model.overridden) == ("seed_cnn", True)
    assert f"--config {config}" in model.rule
    assert record.choice("model.weights").value == "none"


def test_a_bad_time_budget_is_one_line(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    result = runner.invoke(app, ["train", str(manifest), "--time-budget", "ten minutes"])
    assert result.exit_code == 2
    assert "--time-budget is 'ten minutes'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_progress_shows_the_eta_of_the_epoch_and_of_the_run() -> None:
    from rich.console import Console

    from usdcm.cli._progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RichProgress(epochs=3, console=console) as bar:
        for epoch in (1, 2):
            bar.phase(f"epoch {epoch}", 5)
            for _ in range(5):
                bar.advance(1)
        run = bar.progress.tasks[0]
        assert (run.description, run.total, run.completed) == ("run", 15, 10)
        assert bar.progress.tasks[-1].description == "epoch 2"
        columns = [type(column).__name__ for column in bar.progress.columns]
        assert "TimeRemainingColumn" in columns
    with RichProgress(epochs=4, console=console) as resumed:  # resumed after 2 epochs
        resumed.phase("epoch 3", 5)
        resumed.advance(2)
        run = resumed.progress.tasks[0]
        assert (run.total, run.completed) == (20, 12)
    with RichProgress(console=console) as plain:  # ingest's phases: no run bar
        plain.phase("scan", 3)
        assert plain.run_task is None and len(plain.progress.tasks) == 1


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
