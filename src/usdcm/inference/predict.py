"""Probabilities per image: the training preprocessing and clip averaging, without training.

Owns applying a :class:`~usdcm.inference.model.TrainedModel` to images given as ingested
NIfTI paths or as volumes decoded in memory, and ``usdcm predict``'s walk over a raw export.
Each image's probability is the mean over ``data.eval_frames`` evenly spaced frames (or
clips), exactly as validation during training computed it. Never writes images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
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
    single_frames = config.data.clip_frames == 1
    preprocess = preprocess_transforms(
        config.data.image_size,
        trained.stats,
        trained.channels,
        only_evaluation_frames=config.data.eval_frames if single_frames else None,
    )
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


def _scan(path: Path) -> dict[str, Any]:
    """Worker: the header scan record of one file (the worker holds the secret)."""
    from usdcm.ingest.scan import scan_file

    return scan_file(path)


def _decode(task: tuple[int, Path, bool]) -> dict[str, Any]:
    """Worker: decode one file in memory, as ingest does; an exclusion record on failure."""
    from usdcm.ingest.convert import decode_volume, exclusion_for

    _, path, keep_color = task
    try:
        decoded = decode_volume(path, keep_color=keep_color)
    except Exception as err:  # a damaged file may break a codec in any way
        return exclusion_for(err)
    return {
        "status": "decoded",
        "volume": decoded.volume.astype(np.float32),
        "frames": decoded.frames,
    }


def predict_source(
    trained: TrainedModel,
    source: Path,
    *,
    secret: Any,
    modalities: frozenset[str] = frozenset({"US"}),
    max_pixel_bytes: int | None = None,
    chunk: int = 16,
    workers: int | None = None,
    on_file: ProgressHook | None = None,
) -> SourcePredictions:
    """Scan, select, decode and classify every file under ``source`` (a file or a folder).

    The same header scan, selection rules and decoding as ``usdcm ingest``, in memory: no
    image is written. Every file ends up in ``rows`` or in ``excluded`` with its reason;
    rows are keyed by pseudonyms only, under ``secret`` (a
    :class:`usdcm.privacy.ProjectSecret`): an image gets the same ``image_id`` and
    ``patient_key`` as ingest gives it under the same secret, and its study and series are
    named by keyed hashes of their UIDs (``study_key``, ``series_key``), never by the UIDs.
    Headers are scanned and files decoded in ``workers`` processes (default: one per core)
    while this process classifies ``chunk`` images at a time; rows and exclusions come out
    in file order whatever the order the workers finish in.
    """
    from usdcm.ingest.parallel import map_files
    from usdcm.ingest.scan import excluded, init_worker, walk_files
    from usdcm.ingest.select import DEFAULT_MAX_PIXEL_BYTES, selection_reason
    from usdcm.privacy import PathRedactor

    n_workers = workers if workers and workers > 0 else (os.cpu_count() or 1)
    files = [source] if source.is_file() else sorted(walk_files(source))
    base = source.parent if source.is_file() else source
    # Headers first, all of them: a folder named after a patient is only recognised once
    # the identifiers of every header are known.
    scanned_by_path = dict(
        map_files(
            _scan,
            files,
            workers=n_workers,
            batch_size=32,
            initializer=init_worker,
            initargs=(secret.to_bytes(),),
            on_crash=lambda _path: excluded("unreadable", "header reader crashed"),
        )
    )
    scanned = [scanned_by_path[path] for path in files]
    redactor = PathRedactor(secret)
    for record in scanned:
        redactor.hashed.update(record.get("phi", ()))

    def shown(index: int) -> str:
        relative = redactor.redact(files[index].relative_to(base).as_posix())
        return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

    exclusions: dict[int, dict[str, str]] = {}
    tasks: list[tuple[int, Path, bool]] = []
    seen: set[str] = set()
    limit = DEFAULT_MAX_PIXEL_BYTES if max_pixel_bytes is None else max_pixel_bytes
    for index, record in enumerate(scanned):
        reason: tuple[str, str] | None = None
        if record["status"] != "dicom":
            reason = (record["code"], record["reason"])
        else:
            reason = selection_reason(record, modalities=modalities, max_pixel_bytes=limit)
            if reason is None and record["sop_uid"] in seen:
                reason = ("duplicate", "same SOPInstanceUID as an earlier file")
        if reason is not None:
            exclusions[index] = {"path": shown(index), "code": reason[0], "reason": reason[1]}
            continue
        seen.add(str(record["sop_uid"]))
        tasks.append((index, files[index], trained.channels == 3))
    if on_file is not None:
        on_file(len(exclusions))

    rows: dict[int, dict[str, Any]] = {}
    pending: list[tuple[int, dict[str, Any]]] = []

    def classify() -> None:
        items = [
            {"image": decoded["volume"], "label": -1, "image_id": f"{index}"}
            for index, decoded in pending
        ]
        predictions = predict_items(trained, items)
        for (index, decoded), probs in zip(pending, predictions.probabilities, strict=True):
            rows[index] = _row(scanned[index], decoded["frames"], probs, trained, secret)
        if on_file is not None:
            on_file(len(pending))
        pending.clear()

    # Workers decode while this process classifies: at most 2 * workers files in flight.
    decoded_files = map_files(
        _decode,
        tasks,
        workers=n_workers,
        batch_size=2,
        on_crash=lambda _task: excluded("decode_error", "decoder crashed the worker"),
        on_timeout=lambda _task: excluded("timeout", "decoding took too long"),
    )
    for (index, _path, _color), decoded in decoded_files:
        if decoded["status"] != "decoded":
            exclusions[index] = {
                "path": shown(index),
                "code": decoded["code"],
                "reason": decoded["reason"],
            }
            if on_file is not None:
                on_file(1)
            continue
        pending.append((index, decoded))
        if len(pending) >= chunk:
            classify()
    if pending:
        classify()
    return SourcePredictions(
        rows=[rows[index] for index in sorted(rows)],
        excluded=[exclusions[index] for index in sorted(exclusions)],
    )


def _row(
    record: dict[str, Any], frames: int, probs: Any, trained: TrainedModel, secret: Any
) -> dict[str, Any]:
    """One output row: pseudonymous keys, scanner, frames, probabilities, predicted class."""
    row: dict[str, Any] = {
        "image_id": secret.pseudonym(str(record["sop_uid"]), namespace="image"),
        "patient_key": record["patient_key"],
        "study_key": secret.pseudonym(str(record["study_uid"]), namespace="study"),
        "series_key": secret.pseudonym(str(record["series_uid"]), namespace="series"),
        "manufacturer": record["manufacturer"],
        "model": record["model"],
        "frames": frames,
    }
    for name, value in zip(trained.classes, probs, strict=True):
        row[f"prob_{name}"] = float(value)
    row["predicted"] = trained.classes[int(np.argmax(probs))]
    return row
