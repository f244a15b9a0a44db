"""Inference throughput: ``usdcm predict`` on a raw export against a naive per-file loop.

A run is trained first (1 epoch, seed CNN, 64x64, ``eval_frames: 4``, on an ingested
synthetic export); then a second, raw synthetic export (another seed) is classified by:

- **naive per-file loop (baseline)**: for each file, ``dcmread`` -> ``pixel_array`` ->
  gray by averaging colour -> the same ``eval_frames`` evenly spaced frames, resized (area)
  and normalized with the run's statistics -> one forward pass per file, no batching across
  files, no region crop, no selection (it classifies the CT and the screen capture too),
  skipping what fails to read;
- **usdcm predict** (``predict_source``: header scan, selection, decode, crop, batched
  forward passes, pseudonymous rows), exactly what ``usdcm predict RUN SOURCE`` runs;
- as a reference without decoding, ``predict_items`` on the same export already ingested
  to NIfTI (the path ``usdcm evaluate`` takes; the ingest time is not counted).

Run: ``python benchmarks/predict.py [--patients 40]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import torch

from _machine import describe
from usdcm.artifacts.manifest import read_manifest
from usdcm.config import config_from_dict
from usdcm.data.normalization import normalize
from usdcm.data.transforms import evaluation_starts
from usdcm.inference.model import TrainedModel, load_trained_model
from usdcm.inference.predict import predict_items, predict_source
from usdcm.ingest import IngestOptions, ingest
from usdcm.privacy import ProjectSecret
from usdcm.synth import write_export
from usdcm.training.run import train

SMALL_CONFIG = {
    "data": {"image_size": [64, 64], "eval_frames": 4},
    "optim": {"epochs": 1, "batch_size": 32},
    "runtime": {"device": "cpu"},
}


@torch.no_grad()
def naive_loop(trained: TrainedModel, files: list[Path]) -> tuple[float, set[Path]]:
    """dcmread + pixel_array + model per file; returns (seconds, files classified)."""
    height, width = trained.config.data.image_size
    n_frames = trained.config.data.eval_frames
    classified: set[Path] = set()
    started = time.perf_counter()
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pixels = np.asarray(pydicom.dcmread(path).pixel_array, dtype=np.float32)
        except Exception:
            continue
        frames = pixels if pixels.ndim >= 3 and pixels.shape[-1] != 3 else pixels[None]
        if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] == 3):
            frames = (pixels if pixels.ndim == 4 else pixels[None]).mean(axis=-1)
        starts = evaluation_starts(frames.shape[0], n_frames, 1)
        batch = torch.from_numpy(np.ascontiguousarray(frames[starts]))[:, None]
        batch = torch.nn.functional.interpolate(batch, size=(width, height), mode="area")
        logits = trained.network(normalize(batch, trained.stats).to(trained.device))
        torch.softmax(logits, dim=1).mean(dim=0)
        classified.add(path)
    return time.perf_counter() - started, classified


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40, help="of each export")
    parser.add_argument("--frames", type=int, default=8, help="typical cine length")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train_export = write_export(root / "train-pacs", patients=args.patients, seed=0)
        data = root / "data"
        ingest(train_export.root, data, IngestOptions(labels=train_export.labels_path))
        started = time.perf_counter()
        train(data / "manifest.csv", config_from_dict(SMALL_CONFIG), root / "run")
        train_s = time.perf_counter() - started

        source = write_export(root / "new-pacs", patients=args.patients, seed=1, frames=args.frames)
        files = sorted(p for p in source.root.rglob("*") if p.is_file())
        trained = load_trained_model(root / "run", "auto")
        secret = ProjectSecret.load_or_create(data / ".usdcm" / "secret")
        print(f"machine: {describe(gpu=True)}; model on {trained.device}")
        print(
            f"run: seed_cnn, 64x64, eval_frames 4, trained 1 epoch in {train_s:.1f} s; "
            f"source: {len(files)} files, {len(source.image_paths)} valid images\n"
        )

        naive_s, naive_done = naive_loop(trained, files)
        naive_n = len(naive_done)
        started = time.perf_counter()
        found = predict_source(trained, source.root, secret=secret)
        usdcm_s = time.perf_counter() - started
        ingested = root / "new-data"
        ingest(source.root, ingested, IngestOptions(secret_path=data / ".usdcm" / "secret"))
        rows = read_manifest(ingested / "manifest.csv")
        items = [
            {"image": str(ingested / row["image_path"]), "label": -1, "image_id": row["image_id"]}
            for row in rows
        ]
        started = time.perf_counter()
        predict_items(trained, items)
        nifti_s = time.perf_counter() - started

        print("| pipeline | seconds | images classified | images/s | speed vs naive |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, seconds, count in (
            ("naive per-file loop (baseline)", naive_s, naive_n),
            ("usdcm predict (predict_source)", usdcm_s, len(found.rows)),
            ("predict_items on ingested NIfTI (reference)", nifti_s, len(items)),
        ):
            rate = count / seconds
            print(
                f"| {name} | {seconds:.2f} | {count} | {rate:.1f} | "
                f"{rate / (naive_n / naive_s):.2f}x |"
            )
        valid = set(source.image_paths)
        print(
            f"\nusdcm predict classified {len(found.rows)} of the {len(valid)} valid images and "
            f"excluded {len(found.excluded)} files with a reason; the naive loop classified "
            f"{len(naive_done & valid)} valid images (it cannot read files without preamble) "
            f"and {len(naive_done - valid)} files that are not valid US images "
            f"({', '.join(sorted(k for k, p in source.junk.items() if p in naive_done))})"
        )


if __name__ == "__main__":
    main()
