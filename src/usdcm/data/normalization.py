"""Intensity normalization: statistics of the training images, and the transform applying them.

Owns :class:`IntensityStats` (what a checkpoint stores), how they are measured over a seeded
sample of training images, and :class:`NormalizeIntensityStatsd`, the one deterministic
transform used at training and at inference. It must only ever be given training images:
choosing them is the caller's job, and it never reads the manifest or the splits.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

import nibabel as nib
import numpy as np
import torch
from monai.transforms import MapTransform
from nibabel.filebasedimages import ImageFileError

from usdcm.errors import NormalizationError

NormalizationMode = Literal["percentile", "zscore"]
MODES: tuple[str, ...] = get_args(NormalizationMode)

MAX_VOXELS_PER_IMAGE = 200_000
"""At most this many voxels of each image enter the statistics (sampled with the seed)."""

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray[Any, Any])


@dataclass(frozen=True)
class IntensityStats:
    """Global intensity statistics of the training images, and which of them are applied.

    Parameters
    ----------
    mode : {"percentile", "zscore"}
        ``"percentile"`` clips to ``[lower, upper]`` and scales to ``[0, 1]``;
        ``"zscore"`` computes ``(x - mean) / std``.
    lower, upper : float
        Intensities at the configured lower and upper percentiles; ``upper > lower``.
    mean, std : float
        Mean and standard deviation of the sampled voxels; ``std > 0``.
    n_images, n_voxels : int
        How many images and voxels the statistics were measured on (for the record).

    Examples
    --------
    >>> stats = IntensityStats("percentile", lower=0.0, upper=200.0, mean=50.0, std=40.0)
    >>> IntensityStats.from_dict(stats.to_dict()) == stats
    True
    """

    mode: NormalizationMode
    lower: float
    upper: float
    mean: float
    std: float
    n_images: int = 0
    n_voxels: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            message = f"Normalization mode is {self.mode!r}; expected one of {', '.join(MODES)}."
            raise ValueError(message)
        values = (self.lower, self.upper, self.mean, self.std)
        if not all(math.isfinite(v) for v in values):
            message = f"Intensity statistics must be finite, found {values!r}."
            raise ValueError(message)
        if not self.upper > self.lower:
            message = (
                f"Intensity range [{self.lower}, {self.upper}] is empty; upper must be above lower."
            )
            raise ValueError(message)
        if not self.std > 0:
            message = f"Intensity std is {self.std}; it must be above 0."
            raise ValueError(message)

    def to_dict(self) -> dict[str, str | float | int]:
        """Plain ``str``/``float``/``int`` values, safe for ``torch.load(weights_only=True)``."""
        return dict(asdict(self))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> IntensityStats:
        """Rebuild the statistics saved by :meth:`to_dict` (e.g. from a checkpoint).

        Raises
        ------
        ValueError
            If a key is missing or a value is out of range.
        """
        try:
            return cls(
                mode=cast(NormalizationMode, str(values["mode"])),
                lower=float(values["lower"]),
                upper=float(values["upper"]),
                mean=float(values["mean"]),
                std=float(values["std"]),
                n_images=int(values.get("n_images", 0)),
                n_voxels=int(values.get("n_voxels", 0)),
            )
        except KeyError as err:
            message = (
                f"Intensity statistics lack the key {err.args[0]!r}; found {sorted(values)}. "
                "Use a checkpoint written by `usdcm train`."
            )
            raise ValueError(message) from err


def compute_stats(
    image_paths: Sequence[str | Path],
    *,
    mode: NormalizationMode,
    lower_percentile: float,
    upper_percentile: float,
    sample_images: int,
    seed: int,
) -> IntensityStats:
    """Measure global intensity statistics over a seeded sample of training images.

    At most ``sample_images`` images are drawn (without replacement, from the paths sorted,
    so the draw does not depend on their order). Every frame and channel of an image counts;
    an image with more than :data:`MAX_VOXELS_PER_IMAGE` voxels contributes that many voxels
    drawn at random, so each image weighs the same and memory stays bounded by one image.
    Percentiles use numpy's linear interpolation, and are exact when no image is subsampled.

    Parameters
    ----------
    image_paths : sequence of str or Path
        NIfTI images of the training split only.
    mode : {"percentile", "zscore"}
        Which statistics :class:`NormalizeIntensityStatsd` will apply; all are measured.
    lower_percentile, upper_percentile : float
        Percentiles in ``[0, 100]`` giving ``lower`` and ``upper``.
    sample_images : int
        Most images to read; at least 1.
    seed : int
        Seed of the image and voxel sampling.

    Returns
    -------
    IntensityStats

    Raises
    ------
    ValueError
        If an argument is out of range or ``image_paths`` is empty.
    NormalizationError
        If an image cannot be read, or the sampled intensities are all one value.
    """
    if mode not in MODES:
        message = f"Normalization mode is {mode!r}; expected one of {', '.join(MODES)}."
        raise ValueError(message)
    if not 0 <= lower_percentile < upper_percentile <= 100:
        message = (
            f"Percentiles are {lower_percentile}/{upper_percentile}; "
            "expected 0 <= lower < upper <= 100."
        )
        raise ValueError(message)
    if sample_images < 1:
        message = f"sample_images is {sample_images}; expected at least 1."
        raise ValueError(message)
    if not image_paths:
        message = "No training images to compute intensity statistics from; the split is empty."
        raise ValueError(message)
    rng = np.random.default_rng(seed % 2**63)
    paths = sorted(str(path) for path in image_paths)
    if len(paths) > sample_images:
        chosen = rng.choice(len(paths), size=sample_images, replace=False)
        paths = [paths[i] for i in sorted(chosen)]
    samples = [_sample_voxels(Path(path), rng) for path in paths]
    voxels = np.concatenate(samples)
    lower, upper = np.percentile(voxels, [lower_percentile, upper_percentile])
    mean, std = float(voxels.mean()), float(voxels.std())
    if not (upper > lower and std > 0):
        message = (
            f"The {len(paths)} sampled training images have intensities "
            f"[{lower}, {upper}] between the {lower_percentile} and {upper_percentile} "
            f"percentiles (std {std}); they cannot be normalized. Check that the images are "
            "not blank, or widen the percentiles."
        )
        raise NormalizationError(message)
    return IntensityStats(
        mode=mode,
        lower=float(lower),
        upper=float(upper),
        mean=mean,
        std=std,
        n_images=len(paths),
        n_voxels=int(voxels.size),
    )


def _sample_voxels(path: Path, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    try:
        data = np.asarray(nib.load(path).dataobj, dtype=np.float64).ravel()
    except (ImageFileError, OSError, ValueError, EOFError, zlib.error) as err:
        message = (
            f"Cannot read the image {path} for intensity statistics ({type(err).__name__}); "
            "re-run `usdcm ingest` to rewrite it."
        )
        raise NormalizationError(message) from err
    if data.size > MAX_VOXELS_PER_IMAGE:
        data = data[rng.integers(0, data.size, size=MAX_VOXELS_PER_IMAGE)]
    return data


def normalize(image: ArrayT, stats: IntensityStats) -> ArrayT:
    """Apply ``stats`` to an array or tensor of any shape; the result is floating point.

    Examples
    --------
    >>> stats = IntensityStats("percentile", lower=10.0, upper=110.0, mean=0.0, std=1.0)
    >>> normalize(np.array([0.0, 10.0, 60.0, 200.0]), stats).tolist()
    [0.0, 0.0, 0.5, 1.0]
    >>> stats = IntensityStats("zscore", lower=0.0, upper=1.0, mean=2.0, std=4.0)
    >>> normalize(torch.tensor([2, 10]), stats).tolist()
    [0.0, 2.0]
    """
    if isinstance(image, torch.Tensor):
        return _normalize_tensor(image, stats)
    return _normalize_array(image, stats)


def _normalize_tensor(image: torch.Tensor, stats: IntensityStats) -> torch.Tensor:
    image = image if image.is_floating_point() else image.to(torch.float32)
    if stats.mode == "percentile":
        return (image.clamp(stats.lower, stats.upper) - stats.lower) / (stats.upper - stats.lower)
    return (image - stats.mean) / stats.std


def _normalize_array(image: np.ndarray[Any, Any], stats: IntensityStats) -> np.ndarray[Any, Any]:
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    if stats.mode == "percentile":
        clipped = np.clip(image, stats.lower, stats.upper)
        return np.asarray((clipped - stats.lower) / (stats.upper - stats.lower))
    return np.asarray((image - stats.mean) / stats.std)


class NormalizeIntensityStatsd(MapTransform):  # type: ignore[misc]  # MONAI is untyped here
    """Dictionary transform applying stored :class:`IntensityStats` to ``keys``.

    Deterministic, so :class:`monai.data.CacheDataset` caches its output. Percentile mode
    clips to ``[stats.lower, stats.upper]`` and scales to ``[0, 1]``; z-score mode gives
    ``(x - stats.mean) / stats.std``. Build it from the checkpoint's stats at inference
    (``IntensityStats.from_dict``) to get exactly the training preprocessing.

    Parameters
    ----------
    keys : str or sequence of str
        Keys of the images to normalize.
    stats : IntensityStats
        The training statistics.
    allow_missing_keys : bool, optional
        Skip keys absent from the data instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        stats: IntensityStats,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stats = stats

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return a shallow copy of ``data`` with each key normalized."""
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = normalize(out[key], self.stats)
        return out
