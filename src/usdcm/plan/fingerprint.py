"""The fingerprint a plan is made from: what the manifest holds and what the machine offers.

Owns :class:`DataFingerprint` (counts, class balance, frames, median size, spacing and
channels of the labelled images), :class:`DeviceFingerprint` (device, memory, cores) and
reading both. Reads manifest columns only, never an image; holds counts, medians and class
names, never a patient key, an image identifier or a path. Never chooses anything: the
rules in :mod:`usdcm.plan.rules` do.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from usdcm.artifacts.manifest import read_manifest
from usdcm.data.splits import labelled_rows, row_label
from usdcm.errors import PlanError

__all__ = [
    "DataFingerprint",
    "DeviceFingerprint",
    "Fingerprint",
    "data_fingerprint",
    "device_fingerprint",
    "take_fingerprint",
]


@dataclass(frozen=True)
class DataFingerprint:
    """The labelled images of a manifest, summarised.

    ``split_counts`` holds the images per split when the manifest has a ``split`` column,
    and is empty when usdcm draws the split itself. Sizes are those ingest recorded
    (after the crop to the ultrasound region); a manifest without them gives ``0``.

    >>> fp = DataFingerprint(images=10, patients=5, classes=("a", "b"), class_counts=(6, 4))
    >>> fp.minority_fraction, fp.short_side
    (0.4, 0)
    """

    images: int
    patients: int
    classes: tuple[str, ...]
    class_counts: tuple[int, ...]
    frames_median: float = 1.0
    frames_mean: float = 1.0
    frames_max: int = 1
    median_height: int = 0
    median_width: int = 0
    median_spacing_mm: float | None = None
    channels: int = 1
    split_counts: tuple[tuple[str, int], ...] = ()

    @property
    def minority_fraction(self) -> float:
        """The share of the rarest class among the labelled images."""
        return min(self.class_counts) / self.images if self.images else 0.0

    @property
    def short_side(self) -> int:
        """The median image's shorter side in pixels (0 when the manifest has no sizes)."""
        sides = [side for side in (self.median_height, self.median_width) if side > 0]
        return min(sides) if sides else 0

    @property
    def is_cine(self) -> bool:
        """Whether any image has more than one frame."""
        return self.frames_max > 1


@dataclass(frozen=True)
class DeviceFingerprint:
    """The machine a plan is for.

    ``kind`` is ``cpu``, ``cuda`` or ``mps``; ``memory_gib`` is the GPU's memory on CUDA
    and the machine's RAM otherwise; ``cores`` is torch's intra-op threads (the cores a
    CPU run computes on); ``processes`` is the number of training processes (GPUs).

    >>> DeviceFingerprint("cpu", "cpu (2 threads)", 16.0, 2).is_gpu
    False
    """

    kind: str
    name: str
    memory_gib: float
    cores: int
    processes: int = 1
    ram_gib: float = 0.0

    @property
    def is_gpu(self) -> bool:
        """Whether the device is a GPU (CUDA or MPS)."""
        return self.kind in ("cuda", "mps")


@dataclass(frozen=True)
class Fingerprint:
    """The data and the machine together: everything the rules read."""

    data: DataFingerprint
    device: DeviceFingerprint

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as ``plan.json`` stores it."""
        data = asdict(self.data)
        data["classes"] = list(self.data.classes)
        data["class_counts"] = list(self.data.class_counts)
        data["split_counts"] = dict(self.data.split_counts)
        return {"data": data, "device": asdict(self.device)}


def _numbers(rows: Sequence[Mapping[str, str]], column: str) -> list[float]:
    values = []
    for row in rows:
        text = (row.get(column) or "").strip()
        try:
            value = float(text)
        except ValueError:
            continue
        if value > 0:
            values.append(value)
    return values


def _median(values: list[float], default: float) -> float:
    return float(statistics.median(values)) if values else default


def data_fingerprint(rows: Sequence[Mapping[str, str]]) -> DataFingerprint:
    """Summarise the labelled rows of a manifest.

    Parameters
    ----------
    rows
        Manifest rows (as :func:`usdcm.artifacts.manifest.read_manifest` gives them); rows
        without a label are left out, as training leaves them out.

    Raises
    ------
    PlanError
        No row has a label.

    Examples
    --------
    >>> rows = [
    ...     {"label": "a", "patient_key": "p1", "frames": "1", "height": "100", "width": "140"},
    ...     {"label": "b", "patient_key": "p2", "frames": "9", "height": "120", "width": "160"},
    ...     {"label": "b", "patient_key": "p2", "frames": "5", "height": "110", "width": "150"},
    ...     {"label": "", "patient_key": "p3"},
    ... ]
    >>> fp = data_fingerprint(rows)
    >>> fp.images, fp.patients, fp.classes, fp.class_counts, fp.frames_median, fp.short_side
    (3, 2, ('a', 'b'), (1, 2), 5.0, 110)
    """
    labelled = labelled_rows(rows)
    if not labelled:
        message = (
            f"The manifest has {len(rows)} rows and none has a label, so there is nothing to "
            "plan for; pass --labels to `usdcm ingest`, or fill the label column."
        )
        raise PlanError(message)
    counts = Counter(row_label(row) for row in labelled)
    classes = tuple(sorted(counts))
    frames = _numbers(labelled, "frames") or [1.0]
    spacing = _numbers(labelled, "spacing_x_mm") + _numbers(labelled, "spacing_y_mm")
    channels = _numbers(labelled, "channels")
    splits = Counter((row.get("split") or "").strip() for row in labelled)
    splits.pop("", None)
    return DataFingerprint(
        images=len(labelled),
        patients=len({(row.get("patient_key") or "").strip() for row in labelled}),
        classes=classes,
        class_counts=tuple(counts[name] for name in classes),
        frames_median=_median(frames, 1.0),
        frames_mean=round(statistics.fmean(frames), 3),
        frames_max=int(max(frames)),
        median_height=int(_median(_numbers(labelled, "height"), 0.0)),
        median_width=int(_median(_numbers(labelled, "width"), 0.0)),
        median_spacing_mm=round(_median(spacing, 0.0), 4) or None,
        channels=int(max(channels)) if channels else 1,
        split_counts=tuple(sorted(splits.items())),
    )


def _ram_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0.0
    return round(pages * page_size / 2**30, 1)


def device_fingerprint(requested: str = "auto", *, processes: int = 1) -> DeviceFingerprint:
    """Describe the device ``requested`` resolves to on this machine.

    Raises
    ------
    usdcm.errors.DeviceError
        ``requested`` names a device this machine does not have.

    Examples
    --------
    >>> device_fingerprint("cpu").kind
    'cpu'
    """
    import torch

    from usdcm.runtime.device import describe_device, select_device

    device = select_device(requested)
    ram = _ram_gib()
    memory = ram
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        memory = round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1)
    return DeviceFingerprint(
        kind=device.type,
        name=describe_device(device),
        memory_gib=memory,
        cores=torch.get_num_threads(),
        processes=processes,
        ram_gib=ram,
    )


def take_fingerprint(
    manifest_path: Path, *, device: str = "auto", processes: int = 1
) -> Fingerprint:
    """Read ``manifest_path`` and this machine into a :class:`Fingerprint`.

    Raises
    ------
    usdcm.errors.ManifestError
        The manifest is missing or malformed.
    PlanError
        It has no labelled image.
    usdcm.errors.DeviceError
        ``device`` is not on this machine.
    """
    data = data_fingerprint(read_manifest(manifest_path))
    return Fingerprint(data=data, device=device_fingerprint(device, processes=processes))
