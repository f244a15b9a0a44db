"""Probabilities per image: the training preprocessing and clip averaging, without training.

Owns applying a :class:`~usdcm.inference.model.TrainedModel` to images given as ingested
NIfTI paths or as volumes decoded in memory, and ``usdcm predict``'s walk over a raw export.
Each image's probability is the mean over ``data.eval_frames`` evenly spaced frames (or
clips), exactly as validation during training computed it. Never writes images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usdcm.inference.model import TrainedModel
from usdcm.training.engine import ClipPredictions

ProgressHook = Callable[[int], None]
DEFAULT_BATCH = 4


def predict_items(
    trained: TrainedModel,
    items: Sequence[dict[str, Any]],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_image: ProgressHook | None = None,
) -> ClipPredictions:
    """Class probabilities of ``items``, in their order.

    Parameters
    ----------
    trained
        From :func:`~usdcm.inference.model.load_trained_model`.
    items
        ``{"image": NIfTI path or (W, H, F[, 3]) array, "label": int (-1 if unknown),
        "image_id": str}``.
    batch_size
        Images per forward pass (all their evaluation frames together).
    on_image
        Called with the number of images done after each batch.
    """
    from monai.data import Dataset

    from usdcm.data.datasets import EvalFramesDataset, make_loader
    from usdcm.data.transforms import preprocess_transforms
    from usdcm.training.device import amp_policy, autocast
    from usdcm.training.engine import predict_clips

    config = trained.config
    preprocess = preprocess_transforms(config.data.image_size, trained.stats, trained.channels)
    frames = EvalFramesDataset(
        Dataset(data=list(items), transform=preprocess),
        n_frames=config.data.eval_frames,
        clip_frames=config.data.clip_frames,
    )
    loader = make_loader(
        frames,
        batch_size=batch_size,
        shuffle=False,
        seed=config.runtime.seed,
        num_workers=0,
        loader="torch",
        device=trained.device,
    )
    policy = amp_policy(trained.device, requested=config.runtime.amp)
    return predict_clips(
        trained.network,
        loader,
        device=trained.device,
        autocast=lambda: autocast(policy, trained.device),
        channels_last=config.runtime.channels_last,
        on_batch=on_image,
    )


@dataclass
class SourcePredictions:
    """What ``usdcm predict`` found in a raw export."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def predict_source(
    trained: TrainedModel,
    source: Path,
    *,
    secret: Any,
    modalities: frozenset[str] = frozenset({"US"}),
    max_pixel_bytes: int | None = None,
    chunk: int = 16,
    on_file: ProgressHook | None = None,
) -> SourcePredictions:
    """Scan, select, decode and classify every file under ``source`` (a file or a folder).

    The same header scan, selection rules and decoding as ``usdcm ingest``, in memory: no
    image is written. Every file ends up in ``rows`` or in ``excluded`` with its reason;
    rows are keyed by pseudonyms only, under ``secret`` (a
    :class:`usdcm.privacy.ProjectSecret`): an image gets the same ``image_id`` and
    ``patient_key`` as ingest gives it under the same secret, and its study and series are
    named by keyed hashes of their UIDs (``study_key``, ``series_key``), never by the UIDs.
    """
    from usdcm.ingest.convert import decode_volume, exclusion_for
    from usdcm.ingest.scan import init_worker, scan_file, walk_files
    from usdcm.ingest.select import DEFAULT_MAX_PIXEL_BYTES, selection_reason
    from usdcm.privacy import PathRedactor

    init_worker(secret.to_bytes())
    files = [source] if source.is_file() else sorted(walk_files(source))
    base = source.parent if source.is_file() else source
    # Headers first, all of them: a folder named after a patient is only recognised once
    # the identifiers of every header are known.
    scanned = [scan_file(path) for path in files]
    redactor = PathRedactor(secret)
    for record in scanned:
        redactor.hashed.update(record.get("phi", ()))
    result = SourcePredictions()
    seen: set[str] = set()
    limit = DEFAULT_MAX_PIXEL_BYTES if max_pixel_bytes is None else max_pixel_bytes
    for batch in _chunks(list(zip(files, scanned, strict=True)), chunk):
        items: list[dict[str, Any]] = []
        records: list[dict[str, Any]] = []
        for path, record in batch:
            relative = path.relative_to(base).as_posix()
            shown = redactor.redact(relative).encode("utf-8", "surrogateescape")
            reason: tuple[str, str] | None = None
            if record["status"] != "dicom":
                reason = (record["code"], record["reason"])
            else:
                reason = selection_reason(record, modalities=modalities, max_pixel_bytes=limit)
                if reason is None and record["sop_uid"] in seen:
                    reason = ("duplicate", "same SOPInstanceUID as an earlier file")
            if reason is None:
                try:
                    decoded = decode_volume(path, keep_color=trained.channels == 3)
                except Exception as err:  # a damaged file may break a codec in any way
                    failed = exclusion_for(err)
                    reason = (failed["code"], failed["reason"])
            if reason is not None:
                result.excluded.append(
                    {
                        "path": shown.decode("utf-8", "backslashreplace"),
                        "code": reason[0],
                        "reason": reason[1],
                    }
                )
                continue
            seen.add(str(record["sop_uid"]))
            image_id = secret.pseudonym(str(record["sop_uid"]), namespace="image")
            volume = decoded.volume.astype(np.float32)
            items.append({"image": volume, "label": -1, "image_id": image_id})
            records.append({**record, "image_id": image_id, "frames": decoded.frames})
        if items:
            predictions = predict_items(trained, items)
            for record, probs in zip(records, predictions.probabilities, strict=True):
                row: dict[str, Any] = {
                    "image_id": record["image_id"],
                    "patient_key": record["patient_key"],
                    "study_key": secret.pseudonym(str(record["study_uid"]), namespace="study"),
                    "series_key": secret.pseudonym(str(record["series_uid"]), namespace="series"),
                    "manufacturer": record["manufacturer"],
                    "model": record["model"],
                    "frames": record["frames"],
                }
                for name, value in zip(trained.classes, probs, strict=True):
                    row[f"prob_{name}"] = float(value)
                row["predicted"] = trained.classes[int(np.argmax(probs))]
                result.rows.append(row)
        if on_file is not None:
            on_file(len(batch))
    return result
