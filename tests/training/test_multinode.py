"""Multi-node training is torchrun's job: two launchers rendezvous like two machines.

``torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT``, started twice on
this machine with one gloo process each, must train exactly as ``--nproc 2`` (one launcher
with two processes) does: same global batches, same metrics, one run folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.training.conftest import TinyManifest, tiny_config, train_with_torchrun

_VOLATILE = ("seconds",)


def metrics(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        {key: value for key, value in json.loads(line).items() if key not in _VOLATILE}
        for line in lines
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_command(port: int, argv: list[str]) -> list[str]:
    """One node's launcher of a two-node job: what each machine runs (see the README)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=usdcm-test",
        "-m",
        "usdcm",
        *argv,
    ]


@pytest.mark.slow  # two trainings under torchrun: about 40 s on 2 busy cores
def test_two_nodes_train_as_two_processes_on_one(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(optim={"class_weighting": "none"}).to_dict()))
    train_with_torchrun(manifest, config_path, tmp_path / "nproc2")

    out = tmp_path / "nodes"
    argv = ["train", str(manifest), "--config", str(config_path), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = node_command(free_port(), argv)
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        finished = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, (_, stderr) in zip(nodes, finished, strict=True):
        assert node.returncode == 0, stderr.decode()[-2000:]

    two_nodes, one_node = metrics(out), metrics(tmp_path / "nproc2")
    assert len(two_nodes) == len(one_node) == 3
    for node_epoch, nproc_epoch in zip(two_nodes, one_node, strict=True):
        for key in ("train_loss", "val_loss", "val_auc", "val_balanced_accuracy"):
            assert node_epoch[key] == pytest.approx(nproc_epoch[key], rel=1e-6, abs=1e-7), key
    assert (out / "splits.csv").read_bytes() == (tmp_path / "nproc2" / "splits.csv").read_bytes()
