"""Probabilities per image: the training preprocessing and clip averaging, without training.

Owns applying a :class:`~usdcm.inference.model.TrainedModel` to images given as ingested
NIfTI paths or as volumes decoded in memory, and ``usdcm predict``'s walk over a raw export.
Each image's probability is the mean over ``data.eval_frames`` evenly spaced frames (or
clips), exactly as validation during training computed it; for an
:class:`~usdcm.inference.model.Ensemble`, the mean of its members' probabilities, each
member with its own preprocessing. Never writes images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from usdcm.artifacts.instance import InstanceHeader
from usdcm.inference.model import Classifier, Ensemble, TrainedModel
from usdcm.runtime.predict import ClipPredictions

if TYPE_CHECKING:
    from usdcm.parallel import DaskCluster

ProgressHook = Callable[[int], None]
DEFAULT_BATCH = 4


def predict_items(
    trained: Classifier,
    items: Sequence[dict[str, Any]],
    *,
    batch_size: int = DEFAULT_BATCH,
    on_image: ProgressHook | None = None,
) -> ClipPredictions:
    """Class probabilities of ``items``, in their order.

    An :class:`~usdcm.inference.model.Ensemble` predicts ``items`` with every member
    (each preprocessing them with its own statistics) and returns the mean of the members'
    probabilities; ``on_image`` then counts each image once over all members.

    Parameters
    ----------
    trained
        From :func:`~usdcm.inference.model.load_trained_model`: one model or an ensemble.
    items
        ``{"image": NIfTI path or (W, H, F[, 3]) array, "label": int (-1 if unknown),
        "image_id": str}``.
    batch_size
        Images per forward pass (all their evaluation frames together).
    on_image
        Called with the number of images done after each batch.
    """
    if isinstance(trained, Ensemble):
        return _predict_ensemble(trained, items, batch_size=batch_size, on_image=on_image)
    return _predict_one(trained, items, batch_size=batch_size, on_image=on_image)


def _predict_ensemble(
    ensemble: Ensemble,
    items: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    on_image: ProgressHook | None,
) -> ClipPredictions:
    """The mean of the members' probabilities; progress counts each image once."""
    n_members = len(ensemble.members)
    progress = {"done": 0.0, "shown": 0}

    def share(count: int) -> None:
        progress["done"] += count / n_members
        step = int(progress["done"] + 1e-9) - int(progress["shown"])
        if step > 0 and on_image is not None:
            progress["shown"] += step
            on_image(step)

    parts = [
        _predict_one(member, items, batch_size=batch_size, on_image=share)
        for member in ensemble.members
    ]
    for part in parts[1:]:
        if part.image_ids != parts[0].image_ids:  # every member is given the same items
            message = "ensemble members predicted different images; this is a bug in usdcm."
            raise RuntimeError(message)
    return ClipPredictions(
        image_ids=parts[0].image_ids,
        labels=parts[0].labels,
        probabilities=np.mean(np.stack([part.probabilities for part in parts]), axis=0),
    )


def _predict_one(
    trained: TrainedModel,
    items: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    on_image: ProgressHook | None,
) -> ClipPredictions:
    """One network's probabilities of ``items`` (see :func:`predict_items`)."""
    from monai.data import Dataset

    from usdcm.data.datasets import EvalFramesDataset, make_loader
    from usdcm.data.transforms import preprocess_transforms
    from usdcm.runtime.device import amp_policy, autocast
    from usdcm.runtime.predict import predict_clips

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
        tta_flip=config.data.tta_flip,
    )


@dataclass
class SourcePredictions:
    """What ``usdcm predict`` found in a raw export."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, str]] = field(default_factory=list)


def _decode(task: tuple[int, Path, bool]) -> dict[str, Any]:
    """Worker: decode one file in memory, as ingest does; an exclusion record on failure."""
    from usdcm.ingest.convert import decode_volume, exclusion_for, timeout_exclusion
    from usdcm.parallel import FileTimeout

    _, path, keep_color = task
    try:
        decoded = decode_volume(path, keep_color=keep_color)
    except FileTimeout as timeout:
        return timeout_exclusion(timeout)
    except Exception as err:  # a damaged file may break a codec in any way
        return exclusion_for(err)
    return {
        "status": "decoded",
        "volume": decoded.volume.astype(np.float32),
        "frames": decoded.frames,
    }


def predict_source(
    trained: Classifier,
    source: Path,
    *,
    secret: Any,
    modalities: frozenset[str] = frozenset({"US"}),
    max_pixel_bytes: int | None = None,
    chunk: int = 16,
    workers: int | None = None,
    on_file: ProgressHook | None = None,
    scheduler: str | None = None,
) -> SourcePredictions:
    """Scan, select, decode and classify every file under ``source`` (a file or a folder).

    The same header scan (:func:`usdcm.ingest.scan.scan_headers`), selection
    (:func:`usdcm.ingest.select.select_instances`) and decoding as ``usdcm ingest``, in
    memory: no image is written, and every exclusion has ingest's code and reason. Every
    file ends up in ``rows`` or in ``excluded`` with its reason; rows are keyed by
    pseudonyms only, under ``secret`` (a :class:`usdcm.privacy.ProjectSecret`): an image
    gets the same ``image_id`` and ``patient_key`` as ingest gives it under the same
    secret, and its study and series are named by keyed hashes of their UIDs
    (``study_key``, ``series_key``), never by the UIDs.
    Headers are scanned and files decoded in ``workers`` processes (default: one per core)
    while this process classifies ``chunk`` images at a time; rows and exclusions come out
    in path order whatever the order the workers finish in. ``scheduler`` runs the scan
    and the decoding on a Dask cluster instead (``"local"`` or ``"tcp://host:8786"``, see
    :func:`usdcm.parallel.open_scheduler`), whose workers must see ``source``.
    """
    from usdcm.parallel import open_scheduler

    n_workers = workers if workers and workers > 0 else (os.cpu_count() or 1)
    folder = source.parent if source.is_file() else source
    with open_scheduler(scheduler, workers=n_workers, readable=[folder]) as cluster:
        return _predict_source(
            trained,
            source,
            secret=secret,
            modalities=modalities,
            max_pixel_bytes=max_pixel_bytes,
            chunk=chunk,
            n_workers=n_workers,
            on_file=on_file,
            cluster=cluster,
        )


def _predict_source(
    trained: Classifier,
    source: Path,
    *,
    secret: Any,
    modalities: frozenset[str],
    max_pixel_bytes: int | None,
    chunk: int,
    n_workers: int,
    on_file: ProgressHook | None,
    cluster: DaskCluster | None,
) -> SourcePredictions:
    """The work of :func:`predict_source`, on ``cluster`` if any (else the process pool)."""
    from usdcm.ingest.convert import DECODE_BATCH_SIZE, decode_crashed, decode_timed_out
    from usdcm.ingest.scan import scan_headers, scan_outcome, walk_files
    from usdcm.ingest.select import (
        DEFAULT_MAX_PIXEL_BYTES,
        Exclusion,
        SelectionOptions,
        select_instances,
    )
    from usdcm.parallel import map_files
    from usdcm.privacy import PathRedactor

    # walk order, as ingest selects in: the first file of a duplicated instance is the same
    files = [source] if source.is_file() else [source / path for path in walk_files(source)]
    base = source.parent if source.is_file() else source
    # Headers first, all of them: a folder named after a patient is only recognised once
    # the identifiers of every header are known.
    redactor = PathRedactor(secret)
    scanned_by_path: dict[Path, InstanceHeader | Exclusion] = {}
    for path, record in scan_headers(files, secret, workers=n_workers, cluster=cluster):
        redactor.hashed.update(record.get("phi", ()))
        scanned_by_path[path] = scan_outcome(record)
    scanned = [scanned_by_path.pop(path) for path in files]
    shown = [
        redactor.redact(path.relative_to(base).as_posix())
        .encode("utf-8", "surrogateescape")
        .decode("utf-8", "backslashreplace")
        for path in files
    ]

    limit = DEFAULT_MAX_PIXEL_BYTES if max_pixel_bytes is None else max_pixel_bytes
    decisions = select_instances(
        zip(shown, scanned, strict=True), SelectionOptions(modalities, limit)
    )
    exclusions: dict[int, dict[str, str]] = {}
    tasks: list[tuple[int, Path, bool]] = []
    for index, why in enumerate(decisions):
        if why is not None:
            exclusions[index] = {"path": shown[index], "code": why.code, "reason": why.reason}
        else:
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
            header = scanned[index]
            assert isinstance(header, InstanceHeader)  # only selected instances are decoded
            rows[index] = _row(header, decoded["frames"], probs, trained, secret)
        if on_file is not None:
            on_file(len(pending))
        pending.clear()

    # Workers decode while this process classifies: at most 2 * workers files in flight.
    decoded_files = map_files(
        _decode,
        tasks,
        workers=n_workers,
        batch_size=DECODE_BATCH_SIZE,
        on_crash=decode_crashed,
        on_timeout=decode_timed_out,
        cluster=cluster,
    )
    for (index, _path, _color), decoded in decoded_files:
        if decoded["status"] != "decoded":
            exclusions[index] = {
                "path": shown[index],
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
    in_path_order = sorted(range(len(files)), key=files.__getitem__)
    return SourcePredictions(
        rows=[rows[index] for index in in_path_order if index in rows],
        excluded=[exclusions[index] for index in in_path_order if index in exclusions],
    )


def _row(
    header: InstanceHeader, frames: int, probs: Any, trained: Classifier, secret: Any
) -> dict[str, Any]:
    """One output row: pseudonymous keys, scanner, frames, coarse demographics (a sex code,
    a 10-year age band, a year), probabilities, predicted class."""
    row: dict[str, Any] = {
        "image_id": secret.pseudonym(header.sop_instance_uid, namespace="image"),
        "patient_key": header.patient_key,
        "study_key": secret.pseudonym(header.study_instance_uid, namespace="study"),
        "series_key": secret.pseudonym(header.series_instance_uid, namespace="series"),
        "manufacturer": header.manufacturer,
        "model": header.model,
        "frames": frames,
        "sex": header.sex,
        "age_band": header.age_band,
        "study_year": header.study_year,
    }
    for name, value in zip(trained.classes, probs, strict=True):
        row[f"prob_{name}"] = float(value)
    row["predicted"] = trained.classes[int(np.argmax(probs))]
    return row
