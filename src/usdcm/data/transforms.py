"""MONAI transforms from a NIfTI path to the tensor a network sees: cached preprocessing, then
seeded augmentation of one frame or clip.

Owns the two pipelines and their tensor layouts. :func:`preprocess_transforms` is
deterministic and cached: ``(C, W, H, F)`` float32, every frame kept, in order.
:func:`train_transforms` runs per access on that cached volume and gives ``(C * clip, W, H)``:
plain tensors and one bilinear resample per sample, because it runs for every sample of every
epoch and must stay cheaper than the model's step.
Spatial axes stay in NIfTI order, column (width) first, everywhere, and the only flip is
left-right, along the column axis, because the probe sits at the top of the image (row 0).
Random transforms only draw parameters (recorded on the transform) and then call a
deterministic function. Never reads the manifest and never computes statistics.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import zlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import monai
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Randomizable,
    Resized,
    ToDeviced,
)
from monai.utils import MAX_SEED
from nibabel.filebasedimages import ImageFileError

from usdcm.config import AugmentConfig
from usdcm.data.normalization import IntensityStats, NormalizeIntensityStatsd
from usdcm.errors import PreprocessError, UsdcmError

IMAGE_KEY = "image"
"""The key of the image in every data dictionary."""

PREPROCESS_VERSION = 1
"""Bump when the cached preprocessing changes, so on-disk caches are not reused."""

KeysArg = Hashable | Sequence[Hashable]


def _as_tensor(image: Any) -> torch.Tensor:
    """A plain tensor (no MONAI metadata) holding ``image``, without a copy where possible."""
    tensor: torch.Tensor = torch.as_tensor(image)
    if isinstance(tensor, MetaTensor):
        plain: torch.Tensor = tensor.as_tensor()
        return plain
    return tensor


def spatial_size(image_size: Sequence[int]) -> tuple[int, int]:
    """Turn the config's ``[H, W]`` into the tensors' spatial order ``(W, H)``.

    >>> spatial_size([96, 128])
    (128, 96)
    """
    if len(image_size) != 2 or not all(int(side) >= 1 for side in image_size):
        message = f"image_size is {list(image_size)!r}; expected [H, W] of positive sides."
        raise ValueError(message)
    height, width = (int(side) for side in image_size)
    return width, height


def usdcm_cause(err: BaseException) -> UsdcmError | None:
    """The first :class:`~usdcm.errors.UsdcmError` in ``err``'s chain of causes, if any.

    MONAI wraps every exception raised inside a transform in ``RuntimeError("applying
    transform ...")``; use this to show the user the message that explains it.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, UsdcmError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class LoadVolumed(MapTransform):  # type: ignore[misc]  # MONAI is untyped here
    """Read an ingested NIfTI image into a float32 tensor with channels first.

    ``(W, H, F)`` becomes ``(1, W, H, F)`` and ``(W, H, F, 3)`` becomes ``(3, W, H, F)``;
    voxel ``[c, i, j, k]`` is channel ``c`` of column ``i``, row ``j``, frame ``k``. Reads the
    voxels with nibabel (scaling applied, no reorientation) and checks the layout against the
    expected channels, so a wrong image fails here, with its path and shape. The result is a
    plain tensor: nothing downstream needs the affine.

    Parameters
    ----------
    keys : str or sequence of str
        Keys holding image paths.
    channels : int
        1 for gray images, 3 for colour (``usdcm ingest --keep-color``).
    """

    def __init__(self, keys: KeysArg, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if channels not in (1, 3):
            message = f"channels is {channels}; expected 1 (gray) or 3 (colour)."
            raise ValueError(message)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            value = out[key]
            if isinstance(value, np.ndarray):
                out[key] = self.from_array(value, "an in-memory image")
            else:
                out[key] = self.load(str(value))
        return out

    def load(self, path: str) -> torch.Tensor:
        """Read one image: ``(C, W, H, F)`` float32."""
        try:
            voxels = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        except (ImageFileError, OSError, ValueError, EOFError, zlib.error) as err:
            message = (
                f"Cannot read the image {path} ({type(err).__name__}: {err}); "
                "re-run `usdcm ingest` to rewrite it."
            )
            raise PreprocessError(message) from err
        return self.from_array(voxels, f"The image {path}")

    def from_array(self, voxels: np.ndarray[Any, Any], what: str) -> torch.Tensor:
        """Check and convert a ``(W, H, F[, 3])`` volume already in memory (``usdcm predict``)."""
        voxels = np.asarray(voxels, dtype=np.float32)
        expected_ndim = 3 if self.channels == 1 else 4
        if voxels.ndim != expected_ndim or (self.channels == 3 and voxels.shape[-1] != 3):
            layout = "(width, height, frames)" if self.channels == 1 else "(W, H, F, 3)"
            message = (
                f"{what} has shape {voxels.shape}; with channels={self.channels} "
                f"usdcm expects {layout}. Pass the manifest's channels value, or re-ingest."
            )
            raise PreprocessError(message)
        volume = torch.from_numpy(np.ascontiguousarray(voxels))
        return volume.unsqueeze(0) if self.channels == 1 else volume.movedim(-1, 0).contiguous()


class SelectEvaluationFramesd(MapTransform):  # type: ignore[misc]  # MONAI is untyped here
    """Keep the frames of a ``(C, W, H, F)`` volume that single-frame evaluation uses.

    Those are :func:`evaluation_starts` ``(F, n, 1)``, in order; over the result, which has
    at most ``n`` frames, :func:`evaluation_frames` takes every frame.

    >>> volume = torch.arange(10.0).reshape(1, 1, 1, 10)
    >>> SelectEvaluationFramesd("image", 4)({"image": volume})["image"].flatten().tolist()
    [0.0, 3.0, 6.0, 9.0]
    """

    def __init__(self, keys: KeysArg, n: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.n = n

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            volume = torch.as_tensor(out[key])
            keep = evaluation_starts(int(volume.shape[-1]), self.n, 1)
            out[key] = volume[..., keep]
        return out


def preprocess_transforms(
    image_size: Sequence[int],
    stats: IntensityStats,
    channels: int = 1,
    *,
    cache_device: torch.device | None = None,
    only_evaluation_frames: int | None = None,
) -> Compose:
    """The deterministic pipeline from a NIfTI path to the cached volume.

    ``{"image": path}`` -> ``{"image": float32 tensor (C, W_out, H_out, F)}``: read with
    channels first (:class:`LoadVolumed`), resize each frame to ``image_size`` (area
    interpolation; every frame kept, in order), normalize with ``stats``. Other keys pass
    through.

    Parameters
    ----------
    image_size : sequence of int
        ``[H, W]``, as in ``data.image_size`` of the config.
    stats : IntensityStats
        Training statistics (from :func:`~usdcm.data.normalization.compute_stats`, or from a
        checkpoint at inference).
    channels : int, optional
        1 (default) for gray images, 3 for colour.
    cache_device : torch.device, optional
        With a CUDA device, the volume is moved there as the last step, so the cache lives
        in GPU memory (``data.cache_on_device``); load it with ``num_workers=0`` and
        ``pin_memory=False``. Any other device adds nothing.
    only_evaluation_frames : int, optional
        For inference with ``clip_frames == 1``: keep only the frames
        :func:`evaluation_starts` picks for ``n`` evaluation frames, before resizing.
        Frames are resized and normalized one by one, so an
        :class:`~usdcm.data.datasets.EvalFramesDataset` over the result classifies
        exactly the frames it would over the whole cine, for a fraction of the work.

    Returns
    -------
    monai.transforms.Compose
    """
    width, height = spatial_size(image_size)
    transforms: list[Any] = [LoadVolumed(IMAGE_KEY, channels)]
    if only_evaluation_frames is not None:
        transforms.append(SelectEvaluationFramesd(IMAGE_KEY, only_evaluation_frames))
    transforms += [
        Resized(IMAGE_KEY, spatial_size=(width, height, -1), mode="area"),
        NormalizeIntensityStatsd(IMAGE_KEY, stats),
        EnsureTyped(IMAGE_KEY, dtype=torch.float32, track_meta=False),
    ]
    if cache_device is not None and cache_device.type == "cuda":
        transforms.append(ToDeviced(IMAGE_KEY, device=cache_device))
    return Compose(transforms)


def preprocess_fingerprint(image_size: Sequence[int], stats: IntensityStats, channels: int) -> str:
    """A short hash of everything the cached volume depends on besides the image file.

    Pass it as ``cache_key`` to :func:`usdcm.data.datasets.build_cached_dataset`, so an
    on-disk cache is never reused after the size, the statistics or the code changed.

    >>> stats = IntensityStats("percentile", lower=0.0, upper=1.0, mean=0.5, std=0.1)
    >>> len(preprocess_fingerprint([64, 64], stats, 1))
    16
    """
    spec = {
        "version": PREPROCESS_VERSION,
        "monai": monai.__version__,
        "image_size": [int(side) for side in image_size],
        "channels": int(channels),
        "stats": stats.to_dict(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def clip_indices(n_frames: int, start: int, clip_frames: int) -> list[int]:
    """Frame indices of the clip of ``clip_frames`` starting at ``start``; past the end of a
    short cine the last frame repeats.

    >>> clip_indices(5, 3, 4)
    [3, 4, 4, 4]
    """
    return [min(start + offset, n_frames - 1) for offset in range(clip_frames)]


def take_clip(volume: torch.Tensor, start: int, clip_frames: int) -> torch.Tensor:
    """Stack a clip's frames as channels: ``(C, W, H, F)`` -> ``(C * clip_frames, W, H)``.

    Channels are frame-major: channel ``t * C + c`` is channel ``c`` of the clip's frame
    ``t``. The result is a new contiguous tensor holding only the clip's frames, never a view
    of ``volume`` (the cache).
    """
    clip = _clip_view(volume, start, clip_frames)
    if clip.untyped_storage().data_ptr() == volume.untyped_storage().data_ptr():
        return clip.clone(memory_format=torch.contiguous_format)
    return clip.contiguous()  # already a copy (index_select, or a reshape that copied)


def _clip_view(volume: torch.Tensor, start: int, clip_frames: int) -> torch.Tensor:
    """:func:`take_clip`, but a view of ``volume`` where one suffices: never modify it."""
    if volume.ndim != 4:
        message = f"Expected a cached volume (C, W, H, F), found shape {tuple(volume.shape)}."
        raise ValueError(message)
    channels, width, height, n_frames = volume.shape
    if not 0 <= start < n_frames:
        message = f"Clip start {start} is outside the {n_frames} frames of the volume."
        raise ValueError(message)
    if start + clip_frames <= n_frames:  # a slice: no index tensor, no copy yet
        frames = volume[..., start : start + clip_frames]
    else:  # a short cine: the last frame repeats (a copy of the clip's frames)
        index = torch.tensor(clip_indices(n_frames, start, clip_frames), device=volume.device)
        frames = volume.index_select(-1, index)
    return frames.permute(3, 0, 1, 2).reshape(clip_frames * channels, width, height)


def last_clip_start(n_frames: int, clip_frames: int) -> int:
    """The last start at which a whole clip fits (0 for a cine shorter than a clip).

    >>> last_clip_start(10, 3), last_clip_start(2, 3)
    (7, 0)
    """
    return max(n_frames - clip_frames, 0)


def speckle_noise(
    image: torch.Tensor, std: float, seed: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiplicative noise ``image * (1 + N(0, std))``, the noise drawn from ``seed``.

    The same image, std and seed always give the same result on a given device. Pass a
    ``generator`` on the image's device to reuse it (it is re-seeded with ``seed``).
    """
    if generator is None:
        generator = torch.Generator(device=image.device)
    generator.manual_seed(seed)
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return image * noise.mul_(std).add_(1)


@functools.lru_cache(maxsize=16)
def _identity_grid(
    width: int, height: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``affine_grid`` of the identity, ``(1, W, H, 2)``; read-only (shared between calls)."""
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(identity, [1, 1, width, height], align_corners=False)


def affine_resample(
    image: torch.Tensor, angle: float = 0.0, zoom: float = 1.0, flip_lr: bool = False
) -> torch.Tensor:
    """Rotate, zoom and flip ``(C, W, H)`` images in one bilinear resample; 0 outside.

    The same geometry as MONAI's ``Rotate(angle)`` (in the ``(W, H)`` plane, about the
    centre, size kept), then ``Zoom(zoom)`` (about the centre, size kept: ``zoom > 1``
    magnifies, ``zoom < 1`` shrinks and pads with 0), then a left-right flip along the column
    axis (axis 0 of ``(W, H)``), composed into one sampling grid for
    :func:`torch.nn.functional.grid_sample` (``align_corners=False``). Output pixel ``q``
    (column, row) reads the input at ``c + R S (q - c) / zoom``, with ``c`` the centre, ``S``
    the flip and ``R = [[cos a, -sin a], [sin a, cos a]]``, so the image is sampled once
    instead of once per step.

    Parameters
    ----------
    image : torch.Tensor
        ``(C, W, H)``, floating point, on any device.
    angle : float, optional
        Rotation in radians.
    zoom : float, optional
        Zoom factor, positive.
    flip_lr : bool, optional
        Flip along the column axis afterwards.

    Returns
    -------
    torch.Tensor
        A new ``(C, W, H)`` tensor.

    Examples
    --------
    >>> image = torch.arange(12.0).reshape(1, 4, 3)
    >>> torch.equal(affine_resample(image, flip_lr=True), image.flip(1))
    True
    """
    if image.ndim != 3:
        message = f"Expected images (C, W, H), found shape {tuple(image.shape)}."
        raise ValueError(message)
    if zoom <= 0:
        message = f"zoom is {zoom}; expected a positive factor."
        raise ValueError(message)
    _, width, height = image.shape
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    flip = -1.0 if flip_lr else 1.0
    # Source offset from the centre, in pixels of (column i, row j), from the output's:
    # [di, dj] = [[cos, -sin], [sin, cos]] @ [flip * qi, qj] / zoom (MONAI's sign of the
    # angle). affine_grid works in (x, y) = (j, i), each normalised to [-1, 1] by its side.
    matrix = torch.tensor(
        [[cos, sin * flip * width / height], [-sin * height / width, cos * flip]],
        dtype=image.dtype,
        device=image.device,
    )
    # affine_grid(theta) without its translation, from a cached identity grid
    grid = _identity_grid(width, height, image.device, image.dtype) @ matrix.T
    resampled = F.grid_sample(
        image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return resampled[0]


def adjust_gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """MONAI's ``AdjustContrast``: ``((x - min) / (max - min)) ** gamma * (max - min) + min``.

    ``min`` and ``max`` are over the whole tensor (MONAI adds ``1e-7`` to the spread); the
    result is a new tensor.

    >>> [round(value, 4) for value in adjust_gamma(torch.tensor([0.0, 0.25, 1.0]), 2.0).tolist()]
    [0.0, 0.0625, 1.0]
    """
    low, high = torch.aminmax(image)
    spread = high - low
    out = (image - low).div_(spread + 1e-7).pow_(gamma)
    return out.mul_(spread).add_(low)


@dataclass(frozen=True)
class AugmentDraw:
    """The parameters drawn for one training sample; ``None`` (or ``False``) where that
    transform did not fire. :func:`augment_clip` applies them."""

    start: int
    """First frame of the clip."""
    angle: float | None = None
    """Rotation in radians, in ``[-rotate, rotate]``."""
    zoom: float | None = None
    """Zoom factor in ``[1 - scale, 1 + scale]``."""
    flip_lr: bool = False
    """Left-right flip along the column axis."""
    contrast: float | None = None
    """``f`` of the intensity scaling ``x * (1 + f)``, in ``[-contrast, contrast]``."""
    gamma: float | None = None
    """Gamma in ``[1 - gamma, 1 + gamma]``."""
    noise_seed: int | None = None
    """Seed of the speckle noise."""


def augment_clip(
    image: torch.Tensor,
    draw: AugmentDraw,
    speckle_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the drawn augmentation to a clip ``(C', W, H)``; deterministic, never in place.

    In order: rotation, zoom and flip (one :func:`affine_resample`; a flip alone is an exact
    :func:`torch.flip`), intensity scaling, :func:`adjust_gamma`, :func:`speckle_noise`
    (``generator``, on the image's device, is passed on to it).
    """
    out = image
    if draw.angle is not None or draw.zoom is not None:
        out = affine_resample(
            out,
            angle=draw.angle if draw.angle is not None else 0.0,
            zoom=draw.zoom if draw.zoom is not None else 1.0,
            flip_lr=draw.flip_lr,
        )
    elif draw.flip_lr:
        out = torch.flip(out, (1,))
    if draw.contrast is not None:
        out = out * (1 + draw.contrast)
    if draw.gamma is not None:
        out = adjust_gamma(out, draw.gamma)
    if draw.noise_seed is not None:
        out = speckle_noise(out, speckle_std, draw.noise_seed, generator)
    return out


class RandAugmentFramed(Randomizable):  # type: ignore[misc]  # MONAI is untyped here
    """Per-sample training augmentation of a cached ``(C, W, H, F)`` volume, seeded.

    Draws an :class:`AugmentDraw` (recorded as :attr:`draw`), takes the clip with
    :func:`take_clip` and applies :func:`augment_clip`: ``(C * clip_frames, W, H)`` float32,
    a plain tensor. Every call draws the same number of values from :attr:`R`, whichever
    transforms fire, so the stream of draws depends on the seed and the number of calls
    alone. Build it with :func:`train_transforms`.

    Parameters
    ----------
    augment : AugmentConfig
        Strengths and probabilities, checked when the config was built; a strength of 0
        never fires.
    clip_frames : int
        Consecutive frames per sample, at least 1.
    key : str, optional
        The key of the volume; other keys pass through.
    """

    def __init__(self, augment: AugmentConfig, clip_frames: int, key: str = IMAGE_KEY) -> None:
        if clip_frames < 1:
            message = f"clip_frames is {clip_frames}; expected at least 1."
            raise ValueError(message)
        self.augment = augment
        self.clip_frames = clip_frames
        self.key = key
        self.draw = AugmentDraw(start=0)
        """The parameters drawn for the last call."""
        self._generators: dict[torch.device, torch.Generator] = {}
        self.set_random_state()  # unseeded until seeded; never MONAI's shared class state

    def randomize(self, data: int) -> None:
        """Draw :attr:`draw` for a volume of ``data`` frames.

        Always 12 draws: 11 uniforms (the start; whether rotation, zoom, contrast, gamma and
        speckle fire; whether to flip; the angle, zoom, contrast and gamma values) and the
        noise seed.
        """
        aug = self.augment
        u = self.R.random_sample(11)
        noise_seed = int(self.R.randint(MAX_SEED, dtype=np.uint32))
        n_starts = last_clip_start(data, self.clip_frames) + 1
        fires = [bool(value < aug.prob) for value in u[1:6]]
        low_high = [
            (-math.radians(aug.rotate_degrees), math.radians(aug.rotate_degrees)),
            (1 - aug.scale, 1 + aug.scale),
            (-aug.contrast, aug.contrast),
            (1 - aug.gamma, 1 + aug.gamma),
        ]
        values: list[float | None] = [
            float(low + (high - low) * value) if fire and high > low else None
            for (low, high), value, fire in zip(low_high, u[7:11], fires[:4], strict=True)
        ]
        self.draw = AugmentDraw(
            start=min(int(u[0] * n_starts), n_starts - 1),
            angle=values[0],
            zoom=values[1],
            flip_lr=bool(u[6] < aug.flip_lr_prob),
            contrast=values[2],
            gamma=values[3],
            noise_seed=noise_seed if fires[4] and aug.speckle_std > 0 else None,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        volume = _as_tensor(out[self.key])
        if volume.ndim != 4:
            message = f"Expected a cached volume (C, W, H, F), found shape {tuple(volume.shape)}."
            raise ValueError(message)
        self.randomize(int(volume.shape[-1]))
        frames = _clip_view(volume, self.draw.start, self.clip_frames)
        generator = self._generators.get(frames.device)
        if generator is None:  # one per device, re-seeded per sample: cheaper than a new one
            generator = self._generators[frames.device] = torch.Generator(device=frames.device)
        clip = augment_clip(frames, self.draw, self.augment.speckle_std, generator)
        if clip is frames:  # nothing fired: copy, so that the cache is never handed out
            clip = take_clip(volume, self.draw.start, self.clip_frames)
        if clip.dtype != torch.float32:
            clip = clip.float()
        out[self.key] = clip
        return out


def train_transforms(augment: AugmentConfig, clip_frames: int) -> RandAugmentFramed:
    """The random pipeline applied per access to a cached ``(C, W, H, F)`` volume.

    ``{"image": (C, W, H, F)}`` -> ``{"image": float32 tensor (C * clip_frames, W, H)}``, in
    this order: a random frame or clip (start uniform among those where a whole clip fits;
    a cine shorter than the clip repeats its last frame); rotation by up to
    ``rotate_degrees`` either way; zoom by a factor in ``[1 - scale, 1 + scale]`` (size
    kept); left-right flip (column axis only) with probability ``flip_lr_prob``; intensity
    scaling by ``1 + f``, ``f`` in ``[-contrast, contrast]``; gamma in
    ``[1 - gamma, 1 + gamma]``; speckle noise of ``speckle_std``. Each of these but the flip
    fires with probability ``augment.prob``;
    one whose strength is 0 never fires. Rotation, zoom and flip are one bilinear resample
    (:func:`affine_resample`) that fills with 0. All values are uniform draws.

    Seed it with ``set_random_state`` (or through
    :func:`usdcm.data.datasets.seed_epoch`): the same seed gives the same stream of draws,
    recorded per sample as :attr:`RandAugmentFramed.draw`.

    Parameters
    ----------
    augment : AugmentConfig
        Strengths and probabilities.
    clip_frames : int
        Consecutive frames per sample (``data.clip_frames``).

    Returns
    -------
    RandAugmentFramed
    """
    return RandAugmentFramed(augment, clip_frames)


def evaluation_starts(n_frames: int, n: int, clip_frames: int) -> list[int]:
    """Start frames of the evaluation clips: ``n`` evenly spaced starts where a clip fits.

    There are ``min(n, last_clip_start + 1)`` distinct starts from ``numpy.linspace`` over
    ``[0, last_clip_start]``, rounded half to even; with ``clip_frames == 1`` that is
    ``min(n, n_frames)`` frames from the first to the last.

    >>> evaluation_starts(10, 4, 1), evaluation_starts(3, 8, 1), evaluation_starts(10, 3, 4)
    ([0, 3, 6, 9], [0, 1, 2], [0, 3, 6])
    """
    if n < 1 or clip_frames < 1 or n_frames < 1:
        message = (
            f"evaluation_starts needs n, clip_frames and n_frames >= 1, found {n}, "
            f"{clip_frames}, {n_frames}."
        )
        raise ValueError(message)
    last = last_clip_start(n_frames, clip_frames)
    count = min(n, last + 1)
    return [int(v) for v in np.round(np.linspace(0, last, count))]


def evaluation_frames(volume: torch.Tensor, n: int, clip_frames: int) -> torch.Tensor:
    """The evaluation clips of a cached volume: ``(C, W, H, F)`` -> ``(n', C * clip_frames, W, H)``.

    One clip per start of :func:`evaluation_starts` (``n' = min(n, max(F - clip_frames + 1,
    1))``), laid out as :func:`take_clip`. A clip's prediction is the mean over its ``n'``.
    """
    if volume.ndim != 4:
        message = f"Expected a cached volume (C, W, H, F), found shape {tuple(volume.shape)}."
        raise ValueError(message)
    starts = evaluation_starts(int(volume.shape[-1]), n, clip_frames)
    return torch.stack([take_clip(volume, start, clip_frames) for start in starts])
