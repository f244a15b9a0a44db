"""The plan's rules: from a fingerprint and a time budget to every choice, each with its reason.

Owns what the plan chooses (model, weights, input size, batch size, learning rate, epochs,
schedule, evaluation frames and the recipe: label smoothing, EMA, test-time flips, mixup,
gradient clipping, class weighting, early stopping, caching) and the rule behind each,
in words. A value a config file or a flag fixed is taken as given, marked ``overridden``,
and the later rules build on it (fix the epochs and the budget picks the input size; fix
the model and the weights follow it). Pure: it reads a :class:`Fingerprint`, calls the
:data:`~usdcm.plan.probe.Probe` it is given for step times and the availability check it is
given for ImageNet weights, and never reads files, builds a model for training or trains.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from usdcm.artifacts.plan import Choice
from usdcm.durations import seconds_in
from usdcm.errors import PlanError
from usdcm.models.registry import IMAGENET_MODELS, RANDOM_INIT_MODELS
from usdcm.plan.fingerprint import Fingerprint
from usdcm.plan.probe import Probe, StepTimes

__all__ = [
    "CPU_SIDES",
    "DEFAULT_TIME_BUDGET_S",
    "GPU_SIDES",
    "PRETRAINED",
    "Decision",
    "WeightsCheck",
    "choose",
    "format_duration",
    "parse_time_budget",
]

DEFAULT_TIME_BUDGET_S = 20 * 60.0
"""``--time-budget`` when none is given: 20 minutes, on any device."""

PRETRAINED: tuple[str, ...] = IMAGENET_MODELS
"""Models with ImageNet weights shipped in a package, best first (from the registry)."""

RANDOM_INIT_CPU = RANDOM_INIT_MODELS["cpu"]
"""The model without pretrained weights on a CPU (the registry's choice)."""
RANDOM_INIT_GPU = RANDOM_INIT_MODELS["cuda"]
"""The model without pretrained weights on a GPU (the registry's choice)."""

CPU_SIDES: tuple[int, ...] = (224, 192, 160, 128, 96, 64)
"""Input sides the plan considers on a CPU, largest first (multiples of 32)."""
GPU_SIDES: tuple[int, ...] = (384, 320, 288, 256, 224, 192, 160, 128, 96, 64)
"""Input sides the plan considers on a GPU, largest first."""

_PROBE_SIDES = {False: (96, 192), True: (128, 320)}
"""The two sides the probe times on a CPU / a GPU; other sides follow a + b * pixels."""

LOOP_OVERHEAD = 1.4
"""An epoch's cost over the probed steps' (loading, larger batches, metrics, the EMA).

Measured on two runs of the default plan on 2 idle CPU cores, EfficientNet-Lite0: the demo
(112 images, 128 px, batch 16: 2.6 s per epoch, 3.2 s estimated) and BUSI (544 images,
224 px, batch 32: 33 s per epoch, 27 s estimated); the estimate is within 20% of both."""
EPOCH_FIXED_S = 0.5
"""Seconds per epoch besides the steps: writing ``best.pt`` and ``last.pt``."""
STARTUP_S = 3.0
STARTUP_PER_FRAME_S = 0.002
"""A run's start: building the model and its weights, then caching every frame."""

WeightsCheck = Callable[[str], str | None]
"""``model name -> None`` when its ImageNet weights can be loaded here, else the reason."""


@dataclass(frozen=True)
class Decision:
    """What :func:`choose` decided: the choices in order, the time estimate, notes."""

    choices: tuple[Choice, ...]
    estimated_seconds: float
    notes: tuple[str, ...]

    def value(self, key: str) -> Any:
        """The chosen value of ``key``."""
        for choice in self.choices:
            if choice.key == key:
                return choice.value
        raise KeyError(key)


def parse_time_budget(text: str) -> float:
    """Seconds in a time budget such as ``20m``, ``1h30m``, ``1.5h`` or ``900s``.

    Raises
    ------
    PlanError
        No unit, an unknown unit, or a budget of zero.

    Examples
    --------
    >>> parse_time_budget("20m"), parse_time_budget("1h30m"), parse_time_budget("90s")
    (1200.0, 5400.0, 90.0)
    >>> parse_time_budget("20")
    Traceback (most recent call last):
    ...
    usdcm.errors.PlanError: --time-budget is '20'; write it with a unit: 20m, 1h30m or 900s.
    """
    seconds = seconds_in(text, bare_seconds=False)
    if seconds is None:
        message = f"--time-budget is {text!r}; write it with a unit: 20m, 1h30m or 900s."
        raise PlanError(message)
    if seconds < 1:
        message = f"--time-budget is {text!r}; it must be at least 1s."
        raise PlanError(message)
    return seconds


def format_duration(seconds: float) -> str:
    """``95 -> '1.6 min'``, ``30 -> '30 s'``, ``5400 -> '1.5 h'``.

    >>> format_duration(30), format_duration(95), format_duration(5400)
    ('30 s', '1.6 min', '1.5 h')
    """
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class _Recorder:
    """Records choices; a key fixed by an override keeps its given value, marked."""

    def __init__(self, fixed: Mapping[str, Any], sources: Mapping[str, str]) -> None:
        self.fixed = fixed
        self.sources = sources
        self.choices: list[Choice] = []

    def is_fixed(self, key: str) -> bool:
        return key in self.fixed

    def pick(self, key: str, value: Any, rule: str) -> Any:
        if key in self.fixed:
            given = self.fixed[key]
            source = self.sources.get(key, "an override")
            planned = f"the plan chose {value!r}: {rule}" if given != value else rule
            self.choices.append(Choice(key, given, f"set by {source} ({planned})", True))
            return given
        self.choices.append(Choice(key, value, rule, False))
        return value


@dataclass(frozen=True)
class _Costs:
    """Step times of one model as ``a + b * pixels``, fitted from two probed sides."""

    train: tuple[float, float]
    evaluate: tuple[float, float]

    @classmethod
    def fit(cls, probe: Probe, name: str, channels: int, sides: tuple[int, int]) -> _Costs:
        small, large = sides
        low, high = probe(name, channels, small), probe(name, channels, large)
        span = float(large * large - small * small)

        def line(y0: float, y1: float) -> tuple[float, float]:
            slope = max((y1 - y0) / span, 0.0)
            return max(y0 - slope * small * small, 0.0), slope

        return cls(line(low.train_s, high.train_s), line(low.eval_s, high.eval_s))

    def at(self, pixels: int) -> StepTimes:
        (a, b), (c, d) = self.train, self.evaluate
        return StepTimes(train_s=a + b * pixels, eval_s=c + d * pixels)


def _floor_pow2(value: float) -> int:
    return 1 << max(int(math.log2(max(value, 1.0))), 0)


def _split_sizes(fp: Fingerprint, fixed: Mapping[str, Any], folds: int) -> tuple[float, float]:
    """Training and validation images of one run (one fold)."""
    given = dict(fp.data.split_counts)
    if given:
        train, val = float(given.get("train", 0)), float(given.get("val", 0))
        if folds > 1:
            non_test = train + val
            return non_test * (folds - 1) / folds, non_test / folds
        return train, val
    val_fraction = float(fixed.get("split.val_fraction", 0.2))
    test_fraction = float(fixed.get("split.test_fraction", 0.2))
    images = fp.data.images
    if folds > 1:
        non_test = images * (1 - test_fraction)
        return non_test * (folds - 1) / folds, non_test / folds
    return images * (1 - val_fraction - test_fraction), images * val_fraction


def _choose_model(
    rec: _Recorder, fp: Fingerprint, weights_check: WeightsCheck, notes: list[str]
) -> tuple[str, str]:
    """Model and weights: ImageNet-pretrained when its weights are here, else from scratch."""
    gpu = fp.device.is_gpu
    scratch = RANDOM_INIT_GPU if gpu else RANDOM_INIT_CPU
    scratch_rule = f"{scratch}: the best network measured from random weights " + (
        "that a GPU affords" if gpu else "on 2 CPU cores (issue 9: AUC 0.85 vs 0.77)"
    )
    planned, reason = scratch, ""
    for candidate in PRETRAINED:
        reason = weights_check(candidate) or ""
        if not reason:
            planned = candidate
            break
    if rec.fixed.get("model.weights") == "none":
        planned, rule = scratch, scratch_rule + "; model.weights is none"
    elif planned in PRETRAINED:
        rule = (
            f"{planned} with ImageNet weights: pretrained beat every network trained from "
            "scratch on ultrasound within the same time (issue 9: +0.03 AUC)"
        )
    else:
        rule = f"{scratch_rule}; no ImageNet weights here ({reason})"
        if not rec.is_fixed("model.name"):
            notes.append(
                f"ImageNet weights for {PRETRAINED[0]} are not available ({reason}); the plan "
                f"falls back to {scratch} with random weights."
            )
    name = str(rec.pick("model.name", planned, rule))
    available = weights_check(name) is None
    if available:
        weights = rec.pick("model.weights", "imagenet", f"{name} ships ImageNet weights")
    else:
        weights = rec.pick("model.weights", "none", f"no ImageNet weights for {name} here")
    return str(name), str(weights)


def _side_cap(fp: Fingerprint, sides: tuple[int, ...]) -> tuple[int, str]:
    """The largest input side worth its cost for these images."""
    short = fp.data.short_side
    if short <= 0:
        return sides[0], "the manifest records no image size"
    cap = max(min(sides[-1], short), (short // 32) * 32)
    cap = min(cap, sides[0])
    return cap, f"the images' median short side is {short} px: inputs up to {cap} px"


def choose(
    fp: Fingerprint,
    *,
    time_budget_s: float,
    probe: Probe,
    weights_check: WeightsCheck,
    fixed: Mapping[str, Any] | None = None,
    sources: Mapping[str, str] | None = None,
    min_side: Callable[[str], int] = lambda _name: 32,
) -> Decision:
    """Choose every planned config key for ``fp`` within ``time_budget_s`` seconds.

    Parameters
    ----------
    fp
        The data and the machine.
    time_budget_s
        Seconds the training may take (caching included, evaluation after it excluded).
    probe
        Step times of a model at a side (:func:`~usdcm.plan.probe.timing_probe` on this
        device, :func:`~usdcm.plan.probe.reference_probe`, or a fake in tests). Called for
        two sides of each model whose input size the plan fits.
    weights_check
        Whether a model's ImageNet weights are here (``None``) or why not.
    fixed
        Dotted config keys whose values a config file or a flag set; they are taken as
        given, marked overridden, and the other rules build on them.
    sources
        Where each fixed value came from (``"--epochs"``, ``"--config x.yaml"``).
    min_side
        The smallest input side of a model (the registry's, in :func:`make_plan`).

    Returns
    -------
    Decision
        The choices in the order they were made, the estimated seconds, and notes.
    """
    fixed = dict(fixed or {})
    rec = _Recorder(fixed, sources or {})
    notes: list[str] = []
    data, device = fp.data, fp.device
    gpu = device.is_gpu

    rec.pick("runtime.device", device.kind, f"the device found: {device.name}")
    name, weights = _choose_model(rec, fp, weights_check, notes)
    pretrained = weights != "none"

    folds = int(rec.pick("split.folds", 1, "one model; --folds K trains K and averages them"))
    n_train, n_val = _split_sizes(fp, fixed, folds)

    if gpu:
        base = 64 if device.memory_gib >= 16 else 32
        batch_rule = f"{base} per step: a GPU with {device.memory_gib:.0f} GiB"
    else:
        base = 32 if n_train >= 400 else 16
        batch_rule = f"{base} per step on a CPU with {n_train:.0f} training images" + (
            "" if n_train >= 400 else " (under 400: smaller steps, more of them)"
        )
    cap = max(_floor_pow2(n_train / 4), 2)
    if cap < base:
        base, batch_rule = cap, f"{cap}: a quarter of the {n_train:.0f} training images at most"
    batch = int(rec.pick("optim.batch_size", base, batch_rule))
    steps_per_epoch = max(math.ceil(n_train / max(batch, 1)), 1)

    base_lr = 1e-3 if pretrained else 2e-3
    lr = float(f"{base_lr * math.sqrt(batch / 32):.2g}")
    task = "fine-tuning" if pretrained else "training from scratch"
    lr_rule = f"AdamW {base_lr:g} at batch 32 for {task}, scaled by sqrt(batch / 32)"
    rec.pick("optim.lr", lr, lr_rule)

    if data.is_cine:
        frames = min(8 if gpu else 4, data.frames_max)
        frames_rule = (
            f"cines of up to {data.frames_max} frames: the mean over {frames} evenly spaced "
            + ("frames" if gpu else "frames (a CPU's validation pays per frame)")
        )
    else:
        frames, frames_rule = 1, "still images: one frame each"
    eval_frames = int(rec.pick("data.eval_frames", frames, frames_rule))
    tta = bool(
        rec.pick(
            "data.tta_flip", True, "average with the left-right flip (lesions sit on either side)"
        )
    )
    val_frames = n_val * min(float(eval_frames), data.frames_mean) * (2 if tta else 1)

    # --- the budget: input side and epochs ---
    channels = data.channels * int(fixed.get("data.clip_frames", 1))
    sides = GPU_SIDES if gpu else CPU_SIDES
    least = min_side(name)
    side_cap, cap_rule = _side_cap(fp, sides)
    candidates = [s for s in sides if least <= s <= side_cap] or [max(least, sides[-1])]
    costs = _Costs.fit(probe, name, channels, _PROBE_SIDES[gpu])
    speedup = max(device.processes, 1)
    frames_total = data.images * data.frames_mean
    startup = STARTUP_S + STARTUP_PER_FRAME_S * frames_total

    def epoch_seconds(side: int) -> float:
        times = costs.at(side * side)
        steps = times.per_epoch(train_images=n_train, eval_frames=val_frames) / speedup
        return LOOP_OVERHEAD * steps + EPOCH_FIXED_S

    budget = max(time_budget_s / folds - startup, 0.0)
    budget_text = f"the {format_duration(time_budget_s)} budget"

    def fits(side: int) -> int:
        return int(budget // max(epoch_seconds(side), 1e-9))

    target_steps = 500 if pretrained else 1500
    least_epochs = 8 if pretrained else 15
    wanted = min(max(math.ceil(target_steps / steps_per_epoch), least_epochs), 60)
    enough = max(math.ceil(wanted / 2), min(5, wanted))

    # what the plan would choose by itself: the largest input that leaves enough epochs
    side = next((c for c in candidates if fits(c) >= enough), candidates[-1])
    epochs = max(min(wanted, fits(side)), 2)
    size_rule = f"the largest input that leaves {enough}+ epochs in {budget_text}; {cap_rule}"
    epochs_rule = (
        f"~{target_steps} steps of {steps_per_epoch} per epoch ({least_epochs}-60 epochs)"
        if epochs == wanted
        else f"as many as fit {budget_text} at {side} px (wanted {wanted})"
    )
    # a fixed size or number of epochs: the budget sets the other (the rows say what the plan
    # by itself would have chosen for the fixed one)
    given_size, given_epochs = fixed.get("data.image_size"), fixed.get("optim.epochs")
    size_value: list[int] = [side, side]
    if given_size is not None and given_epochs is None:
        given_side = int(math.sqrt(int(given_size[0]) * int(given_size[1])))
        epochs = max(min(wanted, fits(given_side)), 2)
        epochs_rule = f"as many as fit {budget_text} at the given size (up to {wanted})"
    elif given_epochs is not None and given_size is None:
        fitting = next((c for c in candidates if int(given_epochs) <= fits(c)), candidates[-1])
        size_value = [fitting, fitting]
        size_rule = f"the largest input whose {given_epochs} epochs fit {budget_text}; {cap_rule}"
    size = rec.pick("data.image_size", size_value, size_rule)
    epochs = int(rec.pick("optim.epochs", epochs, epochs_rule))
    run_side = int(math.sqrt(int(size[0]) * int(size[1])))
    estimate = (startup + epochs * epoch_seconds(run_side)) * folds
    if given_epochs is None and epochs < enough:
        notes.append(
            f"{budget_text.capitalize()} allows only {epochs} epochs at {run_side} px, fewer "
            f"than the {enough} a good model needs here. Raise --time-budget."
        )
    elif estimate > time_budget_s:
        notes.append(
            f"{epochs} epochs at {run_side} px take about {format_duration(estimate)}, more "
            f"than {budget_text} allows. Raise --time-budget (or set fewer epochs or a "
            "smaller input)."
        )

    # --- the recipe ---
    rec.pick("optim.schedule", "cosine", "warmup, then cosine to zero over the planned epochs")
    warmup = max(1, round(0.05 * epochs)) if epochs >= 3 else 0
    rec.pick("optim.warmup_epochs", min(warmup, epochs - 1), "linear warmup over ~5% of the epochs")
    patience = max(5, epochs // 3)
    rec.pick(
        "optim.patience",
        patience,
        "stop after a third of the epochs (at least 5) without a better validation AUC",
    )
    rec.pick("optim.label_smoothing", 0.1, "0.1: soft targets against over-confident logits")
    total_steps = epochs * steps_per_epoch
    horizon = max(total_steps / 10, 10.0)
    decay = round(min(max(1 - 1 / horizon, 0.9), 0.9999), 4)
    rec.pick(
        "optim.ema_decay",
        decay,
        f"EMA of the weights over ~{horizon:.0f} of the run's {total_steps} steps (a tenth)",
    )
    rec.pick("optim.grad_clip", 1.0, "clip the gradient norm at 1: no batch can wreck the weights")
    minority = data.minority_fraction
    rec.pick(
        "optim.class_weighting",
        "loss",
        f"class-weighted loss (rarest class {minority:.0%} of the images)",
    )
    if given_epochs is None:
        limit = float(round(time_budget_s / folds))
        per = " per fold" if folds > 1 else ""
        limit_rule = (
            f"stop before an epoch that would end past {budget_text}{per}: the estimate is a "
            "forecast, this holds the budget on a slower or busier machine"
        )
    else:
        limit, limit_rule = 0.0, f"no limit: the epochs were given ({given_epochs})"
    rec.pick("optim.time_limit_s", limit, limit_rule)
    rec.pick("augment.mixup_alpha", 0.0, "off: not shown to help here; 0.2 to try it")
    rec.pick("augment.cutmix_alpha", 0.0, "off: cutting can remove the lesion that sets the label")

    cache_bytes = frames_total * data.channels * run_side * run_side * 4
    ram = device.ram_gib or device.memory_gib
    if ram > 0 and cache_bytes > 0.5 * ram * 2**30:
        rate = max(math.floor(0.5 * ram * 2**30 / cache_bytes * 20) / 20, 0.05)
        cache_rule = f"the preprocessed images ({cache_bytes / 2**30:.1f} GiB) exceed half the RAM"
    else:
        rate = 1.0
        cache_rule = f"the preprocessed images ({cache_bytes / 2**20:.0f} MiB) fit in RAM"
    rec.pick("data.cache_rate", rate, cache_rule)
    if device.kind == "cuda":
        on_gpu = cache_bytes * rate < 0.25 * device.memory_gib * 2**30
        rule = "fits in a quarter of the GPU's memory" if on_gpu else "too large for the GPU"
        rec.pick("data.cache_on_device", on_gpu, f"the cache {rule}")
        rec.pick("runtime.amp", True, "mixed precision on CUDA")
    return Decision(
        choices=tuple(rec.choices), estimated_seconds=round(estimate, 1), notes=tuple(notes)
    )
