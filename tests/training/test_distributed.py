"""Tests for usdcm.training.distributed, including a real two-process gloo job on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from usdcm.errors import UsdcmError
from usdcm.training.distributed import (
    SINGLE_PROCESS,
    DistContext,
    DistributedError,
    all_gather_objects,
    all_reduce_mean,
    backend_for,
    barrier,
    cleanup,
    context_from_env,
    init_distributed,
    launch,
    torchrun_command,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_backend_is_nccl_on_cuda_and_gloo_elsewhere() -> None:
    assert backend_for("cuda") == "nccl"
    assert backend_for("cpu") == "gloo"
    assert backend_for("mps") == "gloo"


def test_context_properties() -> None:
    assert SINGLE_PROCESS.is_main
    assert not SINGLE_PROCESS.is_distributed
    worker = DistContext(rank=1, world_size=2, local_rank=1, backend="gloo")
    assert worker.is_distributed
    assert not worker.is_main


def test_without_torchrun_env_it_is_a_single_process(no_torchrun_env: None) -> None:
    context = init_distributed("cpu")
    assert context == SINGLE_PROCESS
    assert context.backend is None
    barrier(context)
    assert all_gather_objects(context, {"ids": ["a"]}) == [{"ids": ["a"]}]
    assert all_reduce_mean(context, 0.5) == 0.5
    cleanup()  # nothing to clean, must not fail


def test_world_size_one_is_a_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert init_distributed("cuda") == SINGLE_PROCESS


@pytest.mark.parametrize(
    ("env", "pattern"),
    [
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not"),
        ({"WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE is 'two'"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2, LOCAL_RANK=2 and WORLD_SIZE=2"),
    ],
    ids=str,
)
def test_inconsistent_env_is_a_clear_error(env: dict[str, str], pattern: str) -> None:
    with pytest.raises(DistributedError, match=pattern):
        context_from_env(env)


def test_local_rank_defaults_to_rank() -> None:
    context = context_from_env({"WORLD_SIZE": "2", "RANK": "1"})
    assert context == DistContext(rank=1, world_size=2, local_rank=1, backend=None)


def test_missing_master_address_is_a_clear_error(
    no_torchrun_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(DistributedError, match="MASTER_ADDR and MASTER_PORT are not set") as info:
        init_distributed("cpu")
    assert isinstance(info.value, UsdcmError)


def test_cuda_sets_the_local_gpu_before_joining(
    no_torchrun_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, Any]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(
        torch.distributed, "init_process_group", lambda **kw: calls.append(("init", kw))
    )
    context = init_distributed("cuda")
    assert context == DistContext(rank=1, world_size=2, local_rank=1, backend="nccl")
    assert calls[0] == ("set_device", 1)
    init = calls[1][1]
    assert init["backend"] == "nccl"
    assert (init["rank"], init["world_size"]) == (1, 2)
    assert str(init["device_id"]) == "cuda:1"


def test_torchrun_command_runs_usdcm_as_a_module() -> None:
    command = torchrun_command(4, ["train", "data/manifest.csv", "--epochs", "3"])
    assert command == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=4",
        "-m",
        "usdcm",
        "train",
        "data/manifest.csv",
        "--epochs",
        "3",
    ]


@pytest.mark.parametrize(
    ("nproc", "argv", "pattern"),
    [
        (0, ["train"], "--nproc is 0"),
        (2, ["train", "--nproc", "2"], "still holds --nproc"),
        (2, ["train", "--nproc=2"], "still holds --nproc"),
    ],
    ids=str,
)
def test_torchrun_command_refuses_bad_input(nproc: int, argv: list[str], pattern: str) -> None:
    with pytest.raises(DistributedError, match=pattern):
        torchrun_command(nproc, argv)


def test_launch_runs_the_command_and_returns_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        seen.append(command)
        return subprocess.CompletedProcess(command, returncode=3)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert launch(2, ["train", "m.csv"]) == 3
    assert seen == [torchrun_command(2, ["train", "m.csv"])]


WORKER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from usdcm.runtime.checkpoint import unwrap_model
    from usdcm.training.distributed import (
        all_gather_objects, all_reduce_mean, barrier, cleanup, init_distributed,
    )

    context = init_distributed("cpu")
    try:
        again = init_distributed("cpu")  # a second call joins nothing new
        model = nn.Linear(2, 2)
        keys = list(unwrap_model(DistributedDataParallel(model)).state_dict())
        predictions = {
            "image_ids": [f"img-{context.rank}-{i}" for i in range(2)],
            "labels": [context.rank, 1 - context.rank],
            "probabilities": [[0.25 * context.rank, 1 - 0.25 * context.rank]] * 2,
        }
        gathered = all_gather_objects(context, predictions)
        mean = all_reduce_mean(context, float(context.rank + 1))
        barrier(context)
        if context.is_main:
            result = {
                "context": [context.rank, context.world_size, context.local_rank,
                            context.backend, context.is_distributed],
                "gathered": gathered,
                "mean": mean,
                "again": [again.rank, again.world_size, again.backend],
                "unwrapped_keys": keys,
            }
            Path(sys.argv[1]).write_text(json.dumps(result))
        else:
            assert mean == 1.5, mean
            assert [g["image_ids"][0] for g in gathered] == ["img-0-0", "img-1-0"]
    finally:
        cleanup()
    """
)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    if not names:
        pytest.skip("no loopback network interface to run gloo on")
    return names[0]


def test_two_real_gloo_processes_gather_and_average(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    result_path = tmp_path / "result.json"
    port = _free_loopback_port()
    interface = _loopback_interface()
    workers = []
    for rank in range(2):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            GLOO_SOCKET_IFNAME=interface,  # keep gloo's own connections on loopback
            OMP_NUM_THREADS="1",
        )
        workers.append(
            subprocess.Popen(
                [sys.executable, str(script), str(result_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = []
    try:
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            outputs.append(out.decode(errors="replace"))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    codes = [worker.returncode for worker in workers]
    assert codes == [0, 0], "\n".join(outputs)
    result = json.loads(result_path.read_text())
    assert result["context"] == [0, 2, 0, "gloo", True]
    assert result["mean"] == 1.5
    assert result["again"] == [0, 2, "gloo"]
    assert result["unwrapped_keys"] == ["weight", "bias"]
    gathered = result["gathered"]
    assert [part["image_ids"] for part in gathered] == [
        ["img-0-0", "img-0-1"],
        ["img-1-0", "img-1-1"],
    ]
    assert [part["labels"] for part in gathered] == [[0, 1], [1, 0]]
    assert gathered[1]["probabilities"] == [[0.25, 0.75], [0.25, 0.75]]
