"""Training input pipeline: usdcm's cached MONAI pipeline against decode-per-access.

Both pipelines read the same ingested NIfTI images and yield ``(B, 1, 128, 128)`` batches.

- **usdcm**: ``build_cached_dataset`` (MONAI ``CacheDataset``: load, resize every frame,
  normalize, once) -> ``TrainFramesDataset`` (random frame + augmentation per access) ->
  ``make_loader`` (the config's defaults: ``ThreadDataLoader``, ``num_workers: 0``).
  Epoch 1 includes building the cache.
  A third row turns augmentation off (``augment.prob: 0``), as the baseline has none.
- **tutorial (baseline)**: a torch ``Dataset`` that on every access reads the ``.nii.gz``
  with nibabel, picks a random frame, resizes it to 128x128 with PIL and converts it like
  torchvision's ``ToTensor`` (uint8 -> float in [0, 1]; torchvision itself is not a
  dependency), in a plain ``DataLoader`` with ``num_workers=0``.

Each pipeline is measured twice: with a no-op step (the loader alone: samples/s, epoch time
for epoch 1 and the later epochs) and with the seed CNN's forward/backward/AdamW step, where
the time spent waiting for the next batch is compared with the time of the step itself (a
ratio above 1 means the loader starves the model). GPU utilisation is reported only on CUDA.
Last, ``dataset[i]`` alone (no loader, no batching) is timed per sample, best of 3 passes
over the data: the cost of usdcm's per-sample augmentation against the baseline's decode,
less sensitive to other load on the machine than the short later epochs.

Run: ``python benchmarks/train_pipeline.py [--patients 40] [--epochs 3]`` (``make bench``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from _machine import describe
from usdcm.artifacts.manifest import read_manifest
from usdcm.config import config_from_dict
from usdcm.data.datasets import (
    TrainFramesDataset,
    build_cached_dataset,
    dataset_items,
    make_loader,
    seed_epoch,
)
from usdcm.data.normalization import compute_stats
from usdcm.data.splits import label_map, labelled_rows
from usdcm.data.transforms import preprocess_transforms, train_transforms
from usdcm.ingest import IngestOptions, ingest
from usdcm.models.factory import build_model
from usdcm.synth import write_export

SIZE = 128


class TutorialDataset(Dataset[tuple[torch.Tensor, int]]):
    """Decode per access: nibabel read, random frame, PIL resize, ToTensor."""

    def __init__(self, items: list[dict[str, Any]], seed: int) -> None:
        self.items = items
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        volume = np.asarray(nib.load(item["image"]).get_fdata())  # (W, H, F)
        frame = volume[..., self.rng.randrange(volume.shape[-1])] if volume.ndim == 3 else volume
        low, high = float(frame.min()), float(frame.max())
        scaled = (frame - low) / (high - low or 1.0) * 255.0
        image = Image.fromarray(scaled.astype(np.uint8).T).resize((SIZE, SIZE))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]
        return tensor, int(item["label"])


def images_of(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["image"], torch.as_tensor(batch["label"])
    return batch[0], torch.as_tensor(batch[1])


def run_epoch(
    loader: Iterable[Any], step: Callable[[torch.Tensor, torch.Tensor], None]
) -> tuple[float, float, float, int]:
    """One pass: (seconds, seconds waiting for batches, seconds in steps, samples)."""
    waited = stepped = 0.0
    samples = 0
    started = time.perf_counter()
    iterator = iter(loader)
    while True:
        before = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        between = time.perf_counter()
        images, labels = images_of(batch)
        step(images, labels)
        waited += between - before
        stepped += time.perf_counter() - between
        samples += len(labels)
    return time.perf_counter() - started, waited, stepped, samples


def per_sample_ms(dataset: Dataset[Any], passes: int = 3) -> float:
    """Milliseconds per ``dataset[i]``, the best of ``passes`` passes over every item."""
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        for index in range(len(dataset)):  # type: ignore[arg-type]
            dataset[index]
        best = min(best, (time.perf_counter() - started) / len(dataset))  # type: ignore[arg-type]
    return best * 1e3


def no_op(images: torch.Tensor, labels: torch.Tensor) -> None:
    float(images.sum())  # touch the batch so that nothing is lazily skipped


def model_step(device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[SIZE, SIZE])
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images.to(device)), labels.to(device))
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def gpu_utilisation() -> str:
    if not torch.cuda.is_available():
        return "no GPU present: GPU utilisation not measured (CPU only)"
    try:
        return f"GPU utilisation at the end: {torch.cuda.utilization()}%"
    except Exception as err:  # pynvml missing, or no NVML
        return f"GPU present, utilisation unavailable ({type(err).__name__})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--frames", type=int, default=8, help="typical cine length")
    parser.add_argument("--epochs", type=int, default=3, help="at least 2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = max(args.epochs, 2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        export = write_export(
            root / "pacs", patients=args.patients, seed=args.seed, frames=args.frames
        )
        data = root / "data"
        ingest(export.root, data, IngestOptions(labels=export.labels_path))
        rows = labelled_rows(read_manifest(data / "manifest.csv"))
        labels = label_map(rows)
        splits = {row["image_id"]: "train" for row in rows}
        items = dataset_items(rows, splits, root=data, labels=labels)["train"]
        config = config_from_dict({"data": {"image_size": [SIZE, SIZE]}})
        frames = sum(int(row["frames"]) for row in rows)
        print(f"machine: {describe(gpu=True)}")
        print(
            f"data: {len(items)} ingested images ({frames} frames), batch {args.batch_size}, "
            f"{SIZE}x{SIZE}, {epochs} epochs, loader {config.data.loader}, "
            f"num_workers {config.data.num_workers}\n"
        )

        def usdcm_loader(augment: bool = True) -> tuple[Any, float]:
            started = time.perf_counter()
            stats = compute_stats(
                [item["image"] for item in items],
                mode="percentile",
                lower_percentile=0.5,
                upper_percentile=99.5,
                sample_images=64,
                seed=args.seed,
            )
            cache = build_cached_dataset(
                items,
                preprocess_transforms([SIZE, SIZE], stats, 1),
                cache_rate=config.data.cache_rate,
                persistent_cache_dir=None,
                num_workers=max(config.data.num_workers, 1),
            )
            strengths = config.augment if augment else replace(config.augment, prob=0.0)
            dataset = TrainFramesDataset(cache, train_transforms(strengths, 1))
            loader = make_loader(
                dataset,
                batch_size=args.batch_size,
                shuffle=True,
                seed=args.seed,
                num_workers=config.data.num_workers,
                loader=config.data.loader,
                device=device,
            )
            return loader, time.perf_counter() - started

        def tutorial_loader() -> tuple[Any, float]:
            generator = torch.Generator().manual_seed(args.seed)
            dataset = TutorialDataset(items, args.seed)
            loader = DataLoader(
                dataset, batch_size=args.batch_size, shuffle=True, generator=generator
            )
            return loader, 0.0

        results: dict[tuple[str, str], dict[str, float]] = {}
        datasets: dict[str, Dataset[Any]] = {}
        pipelines: list[tuple[str, Callable[[], tuple[Any, float]], tuple[str, ...]]] = [
            ("tutorial (baseline)", tutorial_loader, ("loader only", "seed CNN step")),
            ("usdcm", usdcm_loader, ("loader only", "seed CNN step")),
            ("usdcm, augment.prob 0", lambda: usdcm_loader(augment=False), ("loader only",)),
        ]
        for name, build, modes in pipelines:
            for mode in modes:
                loader, setup = build()
                datasets[name] = loader.dataset
                step = no_op if mode == "loader only" else model_step(device)
                times, waits, steps = [], [], []
                samples = 0
                for epoch in range(epochs):
                    if name.startswith("usdcm"):
                        seed_epoch(loader, seed=args.seed, epoch=epoch)
                    seconds, waited, stepped, samples = run_epoch(loader, step)
                    times.append(seconds + (setup if epoch == 0 else 0.0))
                    waits.append(waited + (setup if epoch == 0 else 0.0))
                    steps.append(stepped)
                later = statistics.mean(times[1:])
                results[(name, mode)] = {
                    "setup": setup,
                    "epoch1": times[0],
                    "later": later,
                    "sps1": samples / times[0],
                    "sps": samples / later,
                    "wait": statistics.mean(waits[1:]),
                    "step": statistics.mean(steps[1:]),
                }

        print(
            "| pipeline | step | epoch 1 s | later epochs s | samples/s epoch 1 | "
            "samples/s later | loader wait / step time (later) |"
        )
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for (name, mode), r in results.items():
            ratio = f"{r['wait'] / r['step']:.2f}" if mode != "loader only" else "-"
            print(
                f"| {name} | {mode} | {r['epoch1']:.2f} | {r['later']:.2f} | "
                f"{r['sps1']:.0f} | {r['sps']:.0f} | {ratio} |"
            )
        base = results[("tutorial (baseline)", "loader only")]
        ours = results[("usdcm", "loader only")]
        print(f"\nusdcm cache build (stats + CacheDataset), in epoch 1: {ours['setup']:.2f} s")
        print(f"loader only, epoch 1: usdcm {base['epoch1'] / ours['epoch1']:.2f}x the baseline")
        print(f"loader only, later epochs: usdcm {base['later'] / ours['later']:.2f}x the baseline")
        plain = results[("usdcm, augment.prob 0", "loader only")]
        print(
            "loader only, later epochs, augmentation off (like the baseline): usdcm "
            f"{base['later'] / plain['later']:.2f}x the baseline"
        )
        for name in ("tutorial (baseline)", "usdcm"):
            r = results[(name, "seed CNN step")]
            share = r["wait"] / (r["wait"] + r["step"])
            verdict = "starves the model" if r["wait"] > r["step"] else "keeps up with the model"
            print(
                f"{name} with the seed CNN, later epochs: waiting {r['wait']:.2f} s vs stepping "
                f"{r['step']:.2f} s per epoch ({share:.0%} of the epoch waiting): {verdict}"
            )
        timed = {name: per_sample_ms(dataset) for name, dataset in datasets.items()}
        base_ms = timed["tutorial (baseline)"]
        print(
            "dataset[i] alone, ms per sample (best of 3 passes): "
            + ", ".join(f"{name} {ms:.3f}" for name, ms in timed.items())
        )
        print(
            f"dataset[i] alone: usdcm {base_ms / timed['usdcm']:.2f}x the baseline, "
            f"{base_ms / timed['usdcm, augment.prob 0']:.2f}x with augment.prob 0"
        )
        print(gpu_utilisation())


if __name__ == "__main__":
    main()
