"""How long a training step takes here: a short timing probe, and the reference machine's times.

Owns :class:`StepTimes` (seconds per training image and per evaluated frame), the
:data:`Probe` signature the rules call, :func:`timing_probe` (a few forward/backward steps of
a real model on random input, on the actual device: a second or two per model and size) and
:func:`reference_probe` (step times measured once on the reference machine, 2 CPU cores, so
that a plan can be made the same way everywhere, as the demo's is). Never reads data, never
loads weights (the cost of a step does not depend on them) and never trains anything kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from usdcm.models.registry import RANDOM_INIT_MODELS, REGISTRY

__all__ = [
    "REFERENCE_MACHINE",
    "Probe",
    "StepTimes",
    "reference_probe",
    "timing_probe",
]


@dataclass(frozen=True)
class StepTimes:
    """Seconds per training image (augmentation, forward, backward, step) and per evaluated
    frame (forward only), for one model at one input size on one device.

    >>> StepTimes(0.02, 0.005).per_epoch(train_images=100, eval_frames=40)
    2.2
    """

    train_s: float
    eval_s: float

    def per_epoch(self, *, train_images: float, eval_frames: float) -> float:
        """Seconds of one epoch: every training image once, every validation frame once."""
        return round(train_images * self.train_s + eval_frames * self.eval_s, 6)


Probe = Callable[[str, int, int], StepTimes]
"""``(model name, input channels, input side) -> StepTimes`` for a square input."""

REFERENCE_MACHINE = "2 CPU cores (x86-64, torch 2.13 CPU build)"
"""Where the registry's ``reference_step_s`` were measured."""

# Seconds per image as ``a + b * pixels`` (pixels = side**2), for training (augmentation
# included, batch 8) and for evaluation, live in the registry (ModelSpec.reference_step_s).
# The registry says which were measured on REFERENCE_MACHINE (idle, timing_probe at 64 and
# 160 px; the fit is within 10% at 224 px) and which are scaled from them by FLOPs.


def reference_probe(name: str, in_channels: int, side: int) -> StepTimes:
    """Step times of ``name`` at ``side`` px on the reference machine, without running it.

    Deterministic: the same plan on every machine (the demo plans with it, so its numbers
    do not depend on how busy the machine was while probing).

    >>> reference_probe("resnet18", 1, 128).train_s  # the registry's default
    0.01517
    """
    spec = REGISTRY.get(name, REGISTRY[RANDOM_INIT_MODELS["cpu"]])  # unknown: as ResNet-18
    a_train, b_train, a_eval, b_eval = spec.reference_step_s
    pixels = side * side
    return StepTimes(
        train_s=round(a_train + b_train * pixels, 6), eval_s=round(a_eval + b_eval * pixels, 6)
    )


def timing_probe(
    device: str = "auto", *, batch: int = 8, steps: int = 3, max_seconds: float = 0.5
) -> Probe:
    """A :data:`Probe` that times real steps of a model on ``device``.

    Each call builds the model (random weights), runs one untimed warm-up step, then
    up to ``steps`` timed training steps (AdamW, cross-entropy, the run's augmentation of
    each sample) and forward passes, on random input of ``batch`` images, and keeps the
    fastest step (the machine's speed, not its moments of contention); it stops after
    ``max_seconds`` (at least one step), so that a slow or busy machine is not probed for
    long. On CUDA it uses the run's mixed precision and channels-last. Results are
    cached per ``(name, channels, side)``. About a second per call on 2 CPU cores.
    """
    cache: dict[tuple[str, int, int], StepTimes] = {}

    def probe(name: str, in_channels: int, side: int) -> StepTimes:
        key = (name, in_channels, side)
        if key not in cache:
            cache[key] = _time_steps(
                device, name, in_channels, side, batch=batch, steps=steps, max_seconds=max_seconds
            )
        return cache[key]

    return probe


def _time_steps(
    requested: str,
    name: str,
    in_channels: int,
    side: int,
    *,
    batch: int,
    steps: int,
    max_seconds: float,
) -> StepTimes:
    import torch
    from torch import nn

    from usdcm.config import AugmentConfig
    from usdcm.data.transforms import train_transforms
    from usdcm.models.factory import build_model
    from usdcm.runtime.device import amp_policy, autocast, select_device, to_channels_last

    device = select_device(requested)
    policy = amp_policy(device, requested=True)
    channels_last = True
    generator = torch.Generator().manual_seed(0)
    model = build_model(name, in_channels=in_channels, num_classes=2, image_size=[side, side])
    model = to_channels_last(model.to(device), channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    augment = train_transforms(AugmentConfig(), 1)
    augment.set_random_state(0)
    volume = torch.rand(in_channels, side, side, 1, generator=generator)
    labels = torch.arange(batch, device=device) % 2

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step() -> None:
        images = torch.stack([augment({"image": volume})["image"] for _ in range(batch)])
        images = to_channels_last(images.to(device), channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast(policy, device):
            loss = loss_fn(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    batch_in = to_channels_last(
        torch.rand(batch, in_channels, side, side, generator=generator).to(device), channels_last
    )

    def eval_step() -> None:
        with torch.no_grad(), autocast(policy, device):
            model(batch_in)

    def seconds_per_image(step: Callable[[], None]) -> float:
        step()  # warm-up: allocations, kernel choice
        synchronize()
        began, best = time.perf_counter(), math.inf
        for _ in range(steps):
            started = time.perf_counter()
            step()
            synchronize()
            best = min(best, time.perf_counter() - started)
            if time.perf_counter() - began > max_seconds:
                break
        return best / batch

    model.train()
    train_s = seconds_per_image(train_step)
    model.eval()
    eval_s = seconds_per_image(eval_step)
    return StepTimes(train_s=round(train_s, 6), eval_s=round(eval_s, 6))
