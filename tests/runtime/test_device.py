"""Tests for usdcm.runtime.device: device order, AMP table, backend flags, helpers.

CUDA and MPS are faked through the explicit availability arguments or by monkeypatching
torch's probes; nothing here needs a GPU.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from usdcm.errors import UsdcmError
from usdcm.runtime import device as device_module
from usdcm.runtime.device import (
    AmpPolicy,
    DeviceError,
    amp_policy,
    autocast,
    configure_backends,
    describe_device,
    make_grad_scaler,
    maybe_compile,
    select_device,
    to_channels_last,
)

CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [
        (True, True, "cuda:0"),
        (True, False, "cuda:0"),
        (False, True, "mps"),
        (False, False, "cpu"),
    ],
)
def test_auto_prefers_cuda_then_mps_then_cpu(cuda: bool, mps: bool, expected: str) -> None:
    chosen = select_device("auto", cuda_available=cuda, mps_available=mps)
    assert str(chosen) == expected


def test_explicit_choices_win_over_the_order() -> None:
    assert select_device("cpu", cuda_available=True, mps_available=True) == CPU
    assert select_device("mps", cuda_available=True, mps_available=True).type == "mps"
    assert select_device("cuda", cuda_available=True) == CUDA0
    assert select_device("CUDA:1", cuda_available=True) == torch.device("cuda", 1)


def test_local_rank_picks_the_gpu_of_a_torchrun_worker() -> None:
    assert select_device("auto", cuda_available=True, local_rank=3) == torch.device("cuda", 3)
    assert select_device("cuda", cuda_available=True, local_rank=1) == torch.device("cuda", 1)


def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(DeviceError) as info:
        select_device("cuda", cuda_available=False, mps_available=True)
    message = str(info.value)
    assert "no CUDA GPU was found" in message
    assert "--device cpu" in message
    assert "CUDA build of torch" in message
    assert isinstance(info.value, UsdcmError)


def test_mps_without_mps_says_what_to_do() -> None:
    with pytest.raises(DeviceError, match=r"no Apple MPS device was found; use --device cpu"):
        select_device("mps", cuda_available=True, mps_available=False)


def test_an_unknown_device_name_lists_the_choices() -> None:
    with pytest.raises(DeviceError, match=r"'tpu'; expected one of auto, cuda, mps, cpu"):
        select_device("tpu")


def test_none_probes_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == CUDA0
    assert select_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="GPU 2 but torch sees 2 CUDA GPU"):
        select_device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == CPU


def test_this_machine_probes_without_error() -> None:
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    assert select_device("cpu") == CPU


@pytest.mark.parametrize(
    ("device", "requested", "bf16", "expected"),
    [
        (CUDA0, True, True, AmpPolicy(True, torch.bfloat16, False)),
        (CUDA0, True, False, AmpPolicy(True, torch.float16, True)),
        (CUDA0, False, True, AmpPolicy(False, None, False)),
        (CUDA0, False, False, AmpPolicy(False, None, False)),
        (CPU, True, True, AmpPolicy(False, None, False)),
        (torch.device("mps"), True, True, AmpPolicy(False, None, False)),
    ],
    ids=str,
)
def test_amp_policy_table(
    device: torch.device, requested: bool, bf16: bool, expected: AmpPolicy
) -> None:
    assert amp_policy(device, requested=requested, bf16_supported=bf16) == expected


def test_amp_policy_asks_torch_for_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def fake(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return not including_emulation  # pretend: native bf16 only when asked strictly

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake)
    assert amp_policy(CUDA0, requested=True).dtype == torch.bfloat16
    assert calls == [False]


def test_amp_policy_reads_well_in_a_log() -> None:
    assert str(AmpPolicy(True, torch.bfloat16, False)) == "bfloat16 autocast"
    assert str(AmpPolicy(True, torch.float16, True)) == "float16 autocast with GradScaler"
    assert str(AmpPolicy(False, None, False)) == "off (float32)"


def test_autocast_is_a_no_op_when_disabled() -> None:
    context = autocast(amp_policy(CPU, requested=True), CPU)
    assert isinstance(context, contextlib.nullcontext)
    with context:
        assert not torch.is_autocast_enabled("cpu")


def test_autocast_builds_torch_autocast_for_the_policy_dtype() -> None:
    # CPU autocast stands in for CUDA: same call, and it runs on this machine.
    policy = AmpPolicy(enabled=True, dtype=torch.bfloat16, grad_scaler=False)
    context = autocast(policy, CPU)
    assert isinstance(context, torch.autocast)
    with context:
        assert torch.is_autocast_enabled("cpu")
        out = nn.Linear(4, 2)(torch.rand(3, 4))
    assert out.dtype == torch.bfloat16


def test_grad_scaler_is_enabled_only_for_fp16_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fp16 = AmpPolicy(enabled=True, dtype=torch.float16, grad_scaler=True)
    bf16 = AmpPolicy(enabled=True, dtype=torch.bfloat16, grad_scaler=False)
    assert not make_grad_scaler(bf16, CUDA0).is_enabled()
    assert not make_grad_scaler(fp16, CPU).is_enabled()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    scaler = make_grad_scaler(fp16, CUDA0)
    assert scaler.is_enabled()


def test_a_disabled_grad_scaler_passes_the_step_through() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = make_grad_scaler(amp_policy(CPU, requested=True), CPU)
    before = model.weight.detach().clone()
    loss = model(torch.ones(1, 2)).sum()
    scaled = scaler.scale(loss)
    assert scaled is loss
    scaled.backward()
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(model.weight, before)


@pytest.fixture
def restore_torch_flags() -> Iterator[None]:
    """Put back the global torch flags that configure_backends changes."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cudnn_deterministic = torch.backends.cudnn.deterministic
    precision = torch.get_float32_matmul_precision()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.set_float32_matmul_precision(precision)


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_configure_backends_seeds_every_stream(restore_torch_flags: None) -> None:
    configure_backends(CPU, deterministic=True, seed=123)
    first = _draw()
    configure_backends(CPU, deterministic=True, seed=123)
    assert _draw() == first
    configure_backends(CPU, deterministic=True, seed=124)
    assert _draw() != first
    assert torch.initial_seed() == 124


def test_configure_backends_on_cpu_sets_determinism_and_leaves_cuda_flags(
    restore_torch_flags: None,
) -> None:
    torch.backends.cudnn.benchmark = False
    precision = torch.get_float32_matmul_precision()
    configure_backends(CPU, deterministic=True, seed=0)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    configure_backends(CPU, deterministic=False, seed=0)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is False
    assert torch.get_float32_matmul_precision() == precision


@pytest.mark.parametrize(
    ("deterministic", "benchmark", "precision"),
    [(True, False, "highest"), (False, True, "high")],
)
def test_configure_backends_on_cuda_sets_cudnn_and_tf32(
    restore_torch_flags: None,
    monkeypatch: pytest.MonkeyPatch,
    deterministic: bool,
    benchmark: bool,
    precision: str,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_backends(CUDA0, deterministic=deterministic, seed=7)
    assert torch.backends.cudnn.benchmark is benchmark
    assert torch.backends.cudnn.deterministic is deterministic
    assert torch.get_float32_matmul_precision() == precision
    assert torch.are_deterministic_algorithms_enabled() is deterministic
    if deterministic:
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_to_channels_last_converts_models_and_4d_tensors_only_when_enabled() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert to_channels_last(x, False) is x
    converted = to_channels_last(x, True)
    assert converted.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(converted, x)
    flat = torch.rand(2, 3)
    assert to_channels_last(flat, True) is flat
    model = to_channels_last(nn.Conv2d(3, 4, 3), True)
    assert isinstance(model, nn.Conv2d)
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


class _FakeCompile:
    """Stands in for torch.compile: records the call, compiles nothing."""

    def __init__(self) -> None:
        self.calls: list[nn.Module] = []

    def __call__(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        self.calls.append(model)
        wrapper = nn.Module()
        wrapper._orig_mod = model
        return wrapper


def test_maybe_compile_does_nothing_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    model = nn.Linear(2, 2)
    assert maybe_compile(model, False) is model
    assert fake.calls == []


def test_maybe_compile_warns_and_skips_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    model = nn.Linear(2, 2)
    with pytest.warns(UserWarning, match="runtime.compile is for CUDA and the model is on cpu"):
        assert maybe_compile(model, True) is model
    assert fake.calls == []


def _fake_cuda_model(monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    model = nn.Linear(2, 2)
    param = types.SimpleNamespace(device=CUDA0)
    monkeypatch.setattr(model, "parameters", lambda: iter([param]))
    return model


def test_maybe_compile_compiles_a_cuda_model_when_the_toolchain_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(device_module, "find_spec", lambda name: object())
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    model = _fake_cuda_model(monkeypatch)
    compiled = maybe_compile(model, True)
    assert fake.calls == [model]
    assert compiled._orig_mod is model


def test_maybe_compile_without_triton_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(device_module, "find_spec", lambda name: None)
    model = _fake_cuda_model(monkeypatch)
    with pytest.warns(UserWarning, match="triton"):
        assert maybe_compile(model, True) is model
    assert fake.calls == []


def test_maybe_compile_without_a_c_compiler_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    monkeypatch.setattr(device_module, "find_spec", lambda name: object())
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = _fake_cuda_model(monkeypatch)
    with pytest.warns(UserWarning, match="no C compiler"):
        assert maybe_compile(model, True) is model


def test_describe_device_cpu_counts_threads() -> None:
    assert describe_device(CPU) == f"cpu ({torch.get_num_threads()} threads)"


@pytest.mark.parametrize(("bf16", "label"), [(True, "bf16"), (False, "fp16")])
def test_describe_device_cuda_names_the_gpu(
    monkeypatch: pytest.MonkeyPatch, bf16: bool, label: str
) -> None:
    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=85_520_809_984)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert describe_device(CUDA0) == f"cuda:0 (NVIDIA H100 80GB HBM3, 80 GiB, {label})"


def test_describe_device_mps() -> None:
    assert describe_device(torch.device("mps")) == "mps (Apple GPU)"
