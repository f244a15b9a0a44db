"""Where a run computes and how: device choice, mixed precision, seeds and backend flags.

Owns the answers to "which device", "which autocast dtype, and is a GradScaler needed",
"which global torch flags does reproducibility need", plus channels-last and compile, for
training, evaluation and inference alike. Never builds a model, never touches data and never
starts a process group (``usdcm.training.distributed`` does).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import warnings
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, overload

import numpy as np
import torch
from torch import nn

from usdcm.errors import DeviceError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
"""What ``runtime.device`` and ``--device`` accept; ``cuda:N`` picks one GPU."""


def _probe_cuda() -> bool:
    return bool(torch.cuda.is_available())


def _probe_mps() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(
    requested: str = "auto",
    *,
    cuda_available: bool | None = None,
    mps_available: bool | None = None,
    local_rank: int = 0,
) -> torch.device:
    """The device to compute on: ``auto`` picks CUDA, then Apple MPS, then the CPU.

    Parameters
    ----------
    requested
        ``auto``, ``cuda``, ``cuda:N``, ``mps`` or ``cpu`` (``runtime.device``).
    cuda_available, mps_available
        Whether CUDA / MPS can be used; ``None`` asks torch. Tests pass booleans to stand in
        for hardware they do not have.
    local_rank
        The GPU index plain ``cuda`` (or ``auto``) resolves to; a torchrun job passes its
        ``LOCAL_RANK`` so that each process gets its own GPU.

    Returns
    -------
    torch.device
        ``cuda:<index>``, ``mps`` or ``cpu``.

    Raises
    ------
    DeviceError
        ``requested`` names a device this machine does not have, or is not a device name.

    Examples
    --------
    >>> select_device("auto", cuda_available=False, mps_available=False)
    device(type='cpu')
    >>> select_device("auto", cuda_available=True, mps_available=True)
    device(type='cuda', index=0)
    >>> select_device("cuda", cuda_available=False)
    Traceback (most recent call last):
    usdcm.errors.DeviceError: runtime.device is 'cuda' but no CUDA GPU was found; ...
    """
    name = requested.strip().lower()
    match = re.fullmatch(r"cuda:(\d+)", name)
    index = int(match.group(1)) if match else local_rank
    if match:
        name = "cuda"
    if name not in DEVICE_CHOICES:
        message = (
            f"runtime.device is {requested!r}; expected one of {', '.join(DEVICE_CHOICES)} "
            "or cuda:N (e.g. --device cuda:1)."
        )
        raise DeviceError(message)
    if name == "cpu":
        return torch.device("cpu")
    wants_cuda = name in ("auto", "cuda")
    has_cuda = wants_cuda and (_probe_cuda() if cuda_available is None else cuda_available)
    if has_cuda:
        if cuda_available is None and index >= torch.cuda.device_count():
            message = (
                f"runtime.device asks for GPU {index} but torch sees "
                f"{torch.cuda.device_count()} CUDA GPU(s); use --device cuda:0, or run fewer "
                "processes per node than there are GPUs."
            )
            raise DeviceError(message)
        return torch.device("cuda", index)
    if name == "cuda":
        message = (
            f"runtime.device is {requested!r} but no CUDA GPU was found; use --device cpu, "
            "or install the CUDA build of torch (https://pytorch.org/get-started/locally/) "
            "on a machine with an NVIDIA GPU and driver."
        )
        raise DeviceError(message)
    has_mps = _probe_mps() if mps_available is None else mps_available
    if has_mps:
        return torch.device("mps")
    if name == "mps":
        message = (
            f"runtime.device is {requested!r} but no Apple MPS device was found; use "
            "--device cpu, or run on Apple silicon with a torch build that has MPS."
        )
        raise DeviceError(message)
    return torch.device("cpu")


def _bf16_supported() -> bool:
    # Native bf16 only: with emulation (the default) pre-Ampere GPUs report True and run
    # bf16 slowly.
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


@dataclass(frozen=True)
class AmpPolicy:
    """Mixed precision for one run: whether autocast is on, in which dtype, with a scaler.

    ``grad_scaler`` is True only for float16, whose narrow exponent range lets small
    gradients underflow; bfloat16 has float32's range and needs none.
    """

    enabled: bool
    dtype: torch.dtype | None
    grad_scaler: bool

    def __str__(self) -> str:
        if not self.enabled:
            return "off (float32)"
        name = str(self.dtype).removeprefix("torch.")
        return f"{name} autocast" + (" with GradScaler" if self.grad_scaler else "")


AMP_OFF = AmpPolicy(enabled=False, dtype=None, grad_scaler=False)
"""Full float32: no autocast, no scaler."""


def amp_policy(
    device: torch.device, *, requested: bool, bf16_supported: bool | None = None
) -> AmpPolicy:
    """Choose mixed precision for ``device``: bf16 or fp16 + GradScaler on CUDA, else off.

    On CUDA, bfloat16 is used where the GPU supports it natively (Ampere and later) and
    needs no gradient scaling; older GPUs get float16 with a ``GradScaler``. On the CPU and
    on MPS mixed precision stays off even when requested: CPU autocast to bfloat16 is slow
    on CPUs without bf16 instructions and changes the numerics, and CPU runs are meant to
    be exact and reproducible; MPS autocast support is partial.

    Parameters
    ----------
    device
        The device from :func:`select_device`.
    requested
        ``runtime.amp``; False always gives full float32.
    bf16_supported
        Whether the GPU computes bfloat16 natively; ``None`` asks torch (CUDA only).

    Examples
    --------
    >>> amp_policy(torch.device("cuda", 0), requested=True, bf16_supported=True)
    AmpPolicy(enabled=True, dtype=torch.bfloat16, grad_scaler=False)
    >>> amp_policy(torch.device("cuda", 0), requested=True, bf16_supported=False)
    AmpPolicy(enabled=True, dtype=torch.float16, grad_scaler=True)
    >>> amp_policy(torch.device("cpu"), requested=True)
    AmpPolicy(enabled=False, dtype=None, grad_scaler=False)
    """
    if not requested or device.type != "cuda":
        return AMP_OFF
    native_bf16 = _bf16_supported() if bf16_supported is None else bf16_supported
    if native_bf16:
        return AmpPolicy(enabled=True, dtype=torch.bfloat16, grad_scaler=False)
    return AmpPolicy(enabled=True, dtype=torch.float16, grad_scaler=True)


def autocast(policy: AmpPolicy, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context manager a forward pass runs under: ``torch.autocast`` or a no-op.

    Enter a fresh one per step (``with autocast(policy, device): ...``); compute the loss
    inside it on ``logits.float()`` and call ``backward()`` outside it.
    """
    if not policy.enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=policy.dtype)


def make_grad_scaler(policy: AmpPolicy, device: torch.device) -> torch.amp.GradScaler:
    """A CUDA ``GradScaler``, enabled only when ``policy`` asks for one (float16 on CUDA).

    A disabled scaler is a pass-through (``scale(loss)`` returns ``loss``, ``step`` calls
    ``optimizer.step()``), so a loop may always use it. Before clipping gradients, call
    ``scaler.unscale_(optimizer)``. Its ``state_dict()`` belongs in the resume checkpoint.
    """
    enabled = policy.grad_scaler and device.type == "cuda"
    return torch.amp.GradScaler("cuda", enabled=enabled)


def configure_backends(device: torch.device, *, deterministic: bool, seed: int) -> None:
    """Seed every random stream and set torch's global flags for this run.

    Seeds Python's ``random``, NumPy's global generator and torch (all CUDA devices too).
    ``deterministic`` turns on ``torch.use_deterministic_algorithms`` with ``warn_only``
    (an op without a deterministic kernel warns instead of failing) on every device. On
    CUDA it also sets ``cudnn.deterministic``, sets ``cudnn.benchmark`` to its opposite, sets
    ``CUBLAS_WORKSPACE_CONFIG`` (needed for deterministic cuBLAS; it must be set before the
    first cuBLAS call) and allows TF32 float32 matmuls only when not deterministic. The
    CPU's matmul precision is left alone.

    Parameters
    ----------
    device
        The run's device.
    deterministic
        ``runtime.deterministic``: reproducible kernels, at some cost in speed on CUDA.
    seed
        ``runtime.seed``.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds the CPU and every CUDA device
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        # The public setter keeps the legacy and the new per-backend TF32 flags consistent;
        # setting only torch.backends.cuda.matmul.fp32_precision makes
        # torch.get_float32_matmul_precision(), which inductor calls, raise.
        torch.set_float32_matmul_precision("highest" if deterministic else "high")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


@overload
def to_channels_last(obj: torch.Tensor, enabled: bool) -> torch.Tensor: ...


@overload
def to_channels_last(obj: nn.Module, enabled: bool) -> nn.Module: ...


def to_channels_last(obj: torch.Tensor | nn.Module, enabled: bool) -> torch.Tensor | nn.Module:
    """Convert a model, or a 4-D batch, to ``torch.channels_last`` when ``enabled``.

    A model is converted in place (and returned); a tensor that is not 4-D is returned as
    it is, since the format only exists for ``(N, C, H, W)``.

    Examples
    --------
    >>> x = to_channels_last(torch.zeros(2, 3, 8, 8), True)
    >>> x.is_contiguous(memory_format=torch.channels_last)
    True
    """
    if not enabled:
        return obj
    if isinstance(obj, nn.Module):
        # Module.to accepts memory_format at run time; torch's stubs omit it.
        converted: nn.Module = obj.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return converted
    if obj.dim() != 4:
        return obj
    return obj.contiguous(memory_format=torch.channels_last)


def _compile_toolchain_missing(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run here, or None when it can."""
    if device.type != "cuda":
        return f"runtime.compile is for CUDA and the model is on {device}"
    if find_spec("triton") is None:
        return "the triton package that torch.compile needs on CUDA is not installed"
    compilers = [os.environ.get("CC", ""), "cc", "gcc", "clang"]
    if not any(c and shutil.which(c) for c in compilers):
        return "no C compiler (cc, gcc or clang; or $CC) is on PATH"
    return None


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` and the model sits on a CUDA device.

    Call it after moving the model to its device and to channels-last, and before wrapping
    it in DDP. When compiling is asked for but cannot work here (a CPU or MPS model, no
    triton, no C compiler) it warns, says why, and returns the model unchanged: the run goes
    on eagerly. A compiled model's ``state_dict`` keys carry an ``_orig_mod.`` prefix; save
    ``usdcm.runtime.checkpoint.unwrap_model(model).state_dict()`` instead.
    """
    if not enabled:
        return model
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    reason = _compile_toolchain_missing(device)
    if reason is not None:
        message = f"runtime.compile is on but {reason}; training without compiling."
        warnings.warn(message, UserWarning, stacklevel=2)
        return model
    compiled: nn.Module = torch.compile(model)  # type: ignore[assignment]
    return compiled


def describe_device(device: torch.device) -> str:
    """One line for the log and the report, e.g. ``cuda:0 (NVIDIA H100, 80 GiB, bf16)``.

    Examples
    --------
    >>> describe_device(torch.device("cpu"))  # doctest: +ELLIPSIS
    'cpu (... threads)'
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        memory = props.total_memory / 2**30
        precision = "bf16" if _bf16_supported() else "fp16"
        return f"cuda:{index} ({props.name}, {memory:.0f} GiB, {precision})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"{device.type} ({torch.get_num_threads()} threads)"
