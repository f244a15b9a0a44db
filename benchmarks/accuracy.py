"""Accuracy on real data: ingest -> train -> evaluate, per model and recipe, on one fixed split.

Datasets (each wrapped as a DICOM export and ingested once into ``OUT/<dataset>/data``):

- **busi**: BUSI, 778 real breast ultrasound images (``benchmarks/_busi.py``), benign+normal
  vs malignant. One synthetic patient per image: the split is an **image-level split**, and
  since the real patient grouping is unknown, images of one woman may fall on both sides.
- **synth**: a synthetic cine export of ``usdcm.synth`` (normal vs abnormal; a small lesion at a
  random place), split by patient; an external export of other seeds is evaluated as well.

The split is fixed once per dataset and written into the manifest's ``split`` column
(usdcm's grouped, label-stratified split; BUSI 70/10/20 as MedMNIST's BreastMNIST, synth
60/20/20, seed 0), so every row trains and tests on the same images. The pseudonym secret
is derived from a fixed string (public data only: never do this for real patients), so the
split is the same on every machine.

Rows (each a ``usdcm train`` + ``usdcm evaluate`` run of the CLI, as a user runs it):

- **seed_cnn** (baseline): the seed 2-conv CNN, 128 px, 10 epochs (``benchmarks/accuracy/``).
- **resnet18**: ResNet-18, random initialisation, 128 px, 10 epochs.
- **plan**: ``usdcm train MANIFEST`` with no config (the self-configuring plan); skipped
  with a note until ``usdcm.plan`` provides ``make_plan``.
- **pretrained**: EfficientNet-Lite0 with ImageNet weights, 224 px, 8 epochs; skipped until
  the model registry has ``efficientnet_lite0``.
- **<base>+<piece>** / **<base>-<piece>**: recipe ablations, one piece of issue 9's recipe
  turned on (or off) over a base row: warmup, smooth, ema, mixup, cutmix, clip, tta,
  onecycle, sampler, or recipe (warmup, smooth, ema, clip and tta together). Over a fixed
  row the config extends the row's; over ``plan`` it holds the piece's keys only, which
  override the plan's matching choices (``plan-smooth``: the plan without label
  smoothing). A piece is skipped while no code outside ``usdcm/config.py`` reads its key.
- **pinned** and **pinned+<piece>** / **pinned-<piece>**: the plan of ``--time-budget``
  made with the reference machine's step times and without its time limit, written as a
  full config once per dataset: the ablations over it train the same plan on a busy machine
  as on a quiet one, and differ only by their piece.

Per row: the test AUC with its DeLong 95% CI, accuracy (at the threshold chosen on
validation) and balanced accuracy, all from usdcm's ``metrics.json``; minutes of training
and of evaluation; and the ratio of the AUC and of the time against the **seed_cnn** row of
the same dataset and split. Results accumulate in ``OUT/results.json`` (a row run alone
reuses the baseline measured earlier in the same OUT, on the same manifest: its sha256 is
checked), so rows can run one at a time.

Run: ``python benchmarks/accuracy.py --rows seed_cnn,resnet18 [--datasets busi,synth]
[--epochs N] [--quick] [--out /tmp/usdcm-accuracy]``; ``--list`` shows the rows and
whether each can run.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _busi import DEFAULT_BUSI, write_busi_export
from _machine import describe

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src" / "usdcm"
"""The usdcm measured: the working tree's, or a snapshot of a commit (see ``--code``)."""
CONFIGS = HERE / "accuracy"
"""The row configs: the working tree's, or the snapshot's (see ``snapshot_code``)."""
SNAPSHOT_FOLDERS = ("src", "configs", "benchmarks/accuracy")
BASELINE = "seed_cnn"
CODE = "working tree"
"""The commit measured, for the results (set by ``--code``)."""


@dataclass(frozen=True)
class Piece:
    """One recipe piece of issue 9: the config keys that turn it on, and the key to look for."""

    name: str
    overrides: dict[str, Any]
    """The keys that turn it on (``BASE+PIECE``)."""
    off: dict[str, Any]
    """The keys that turn it off (``BASE-PIECE``, e.g. ``plan-smooth``)."""
    key: str
    """A config key name whose use outside ``config.py`` means the piece has landed."""


PIECES: tuple[Piece, ...] = (
    Piece(
        "warmup", {"optim": {"warmup_epochs": 1}}, {"optim": {"warmup_epochs": 0}}, "warmup_epochs"
    ),
    Piece(
        "smooth",
        {"optim": {"label_smoothing": 0.1}},
        {"optim": {"label_smoothing": 0.0}},
        "label_smoothing",
    ),
    Piece("ema", {"optim": {"ema_decay": 0.99}}, {"optim": {"ema_decay": 0.0}}, "ema_decay"),
    Piece(
        "mixup", {"augment": {"mixup_alpha": 0.2}}, {"augment": {"mixup_alpha": 0.0}}, "mixup_alpha"
    ),
    Piece(
        "cutmix",
        {"augment": {"cutmix_alpha": 1.0}},
        {"augment": {"cutmix_alpha": 0.0}},
        "cutmix_alpha",
    ),
    Piece("clip", {"optim": {"grad_clip": 1.0}}, {"optim": {"grad_clip": 0.0}}, "grad_clip"),
    Piece("tta", {"data": {"tta_flip": True}}, {"data": {"tta_flip": False}}, "tta_flip"),
    Piece(
        "onecycle",
        {"optim": {"schedule": "onecycle"}},
        {"optim": {"schedule": "cosine"}},
        "schedule",
    ),
    Piece(
        "sampler",
        {"optim": {"class_weighting": "sampler"}},
        {"optim": {"class_weighting": "loss"}},
        "class_weighting",
    ),
    Piece(
        "earlystop",
        {"optim": {"patience": 5}},
        {"optim": {"patience": 1000}},
        "patience",
    ),
    Piece(
        "recipe",
        {
            "optim": {
                "warmup_epochs": 1,
                "label_smoothing": 0.1,
                "ema_decay": 0.99,
                "grad_clip": 1.0,
            },
            "data": {"tta_flip": True},
        },
        {
            "optim": {
                "warmup_epochs": 0,
                "label_smoothing": 0.0,
                "ema_decay": 0.0,
                "grad_clip": 0.0,
            },
            "data": {"tta_flip": False},
        },
        "warmup_epochs",
    ),
)
"""``recipe`` turns on warmup, label smoothing, EMA, clipping and TTA together (not mixup or
cutmix, which the issue calls optional)."""
PIECE_BY_NAME = {piece.name: piece for piece in PIECES}
OPTIONAL = ("mixup", "cutmix", "onecycle", "sampler")
"""Pieces the plan leaves off: over ``--base plan`` they are ablated on, the rest off."""


@dataclass(frozen=True)
class Dataset:
    """An ingested dataset: its manifest, and how to evaluate it."""

    name: str
    manifest: Path
    positive_class: str
    external: Path | None = None
    """A manifest evaluated with ``--manifest`` as well (synth only)."""
    notes: tuple[str, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _usdcm(*args: str) -> list[str]:
    return [sys.executable, "-m", "usdcm", *args]


def snapshot_code(revision: str, out: Path) -> tuple[str, Path]:
    """Export ``src/`` of a commit to ``out/code-<sha>`` (git archive); return (sha, src dir).

    Several people edit the working tree at once: measuring a commit keeps their unfinished
    edits out of the numbers and names the code each number belongs to. The commit's
    ``configs/`` and ``benchmarks/accuracy/`` (the row configs, which extend
    ``configs/default.yaml``) come with it, so that the code reads the configs of its own
    time, not keys that a later commit added.
    """
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", revision], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = out / f"code-{sha[:12]}"
    if not (target / "src" / "usdcm").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for folder in SNAPSHOT_FOLDERS:
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", sha, folder], capture_output=True, check=False
            )
            if archive.returncode != 0:  # a commit from before the folder existed
                continue
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return sha, target / "src"


def _use_code(src: Path) -> None:
    """Make ``src`` the usdcm of this process and of the CLI commands it starts."""
    global SRC
    SRC = src / "usdcm"
    sys.path.insert(0, str(src))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(src), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def _shown(command: list[str]) -> str:
    """The command as a user would type it (``usdcm ...``)."""
    words = ["usdcm", *command[3:]] if command[1:3] == ["-m", "usdcm"] else command
    return " ".join(words)


def _run(command: list[str], log: Path) -> float:
    """Run a CLI command, its output appended to ``log``; return its wall seconds."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {_shown(command)}\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8").splitlines()[-5:]
        message = f"`{_shown(command)}` failed ({done.returncode}); see {log}:\n" + "\n".join(tail)
        raise RuntimeError(message)
    return seconds


def _secret(path: Path, name: str) -> Path:
    """A pseudonym secret derived from ``name`` (public data only), so splits are reproducible."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(f"usdcm accuracy benchmark, {name}".encode()).hexdigest()
        path.write_text(key + "\n", encoding="ascii")
        path.chmod(0o600)
    return path


def _ingest(source: Path, out: Path, labels: Path, secret: Path) -> Path:
    from usdcm.ingest import IngestOptions, ingest

    result = ingest(source, out, IngestOptions(labels=labels, secret_path=secret))
    return result.manifest_path


def _stamp_split(manifest: Path, *, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Write usdcm's grouped, stratified split (seed 0) into the manifest's ``split`` column."""
    from usdcm.artifacts.manifest import read_manifest
    from usdcm.data.splits import assign_splits

    rows = read_manifest(manifest)
    for row in rows:
        row.pop("split", None)
    splits = assign_splits(rows, val_fraction=val_fraction, test_fraction=test_fraction, seed=0)
    columns = [*rows[0].keys(), "split"]
    tmp = manifest.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "split": splits.get(row["image_id"], "")})
    tmp.replace(manifest)
    counts: dict[str, int] = {}
    for value in splits.values():
        counts[value] = counts.get(value, 0) + 1
    return counts


def _done(folder: Path, settings: dict[str, Any]) -> bool:
    stamp = folder / "settings.json"
    return stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == settings


def _mark(folder: Path, settings: dict[str, Any]) -> None:
    (folder / "settings.json").write_text(json.dumps(settings), encoding="utf-8")


# ---------------------------------------------------------------------------- datasets


def prepare_busi(out: Path, *, per_class: int | None, root: Path) -> Dataset:
    """BUSI wrapped, ingested and split 70/10/20 once (reused while the settings match)."""
    folder = out / "busi"
    settings = {"per_class": per_class, "root": str(root), "split": [0.1, 0.2, 0]}
    manifest = folder / "data" / "manifest.csv"
    if not _done(folder, settings):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        export = write_busi_export(root, folder / "export", per_class=per_class)
        secret = _secret(folder / "secret", "busi")
        _ingest(export.dicom_dir, folder / "data", export.labels_csv, secret)
        counts = _stamp_split(manifest, val_fraction=0.1, test_fraction=0.2)
        print(f"busi: {len(export.images)} images {export.counts()}, split {counts}")
        _mark(folder, settings)
    return Dataset(
        name="busi",
        manifest=manifest,
        positive_class="malignant",
        notes=(
            "image-level split: one synthetic patient per image, the real patient grouping "
            "is unknown, so patients may leak across splits",
        ),
    )


def prepare_synth(out: Path, *, patients: int) -> Dataset:
    """A synthetic cine export (seed 0) split 60/20/20, and an external one (seed 1)."""
    from usdcm.synth import write_export

    folder = out / "synth"
    external_patients = max(patients // 2, 6)
    settings = {"patients": patients, "external": external_patients, "split": [0.2, 0.2, 0]}
    manifest = folder / "data" / "manifest.csv"
    external = folder / "external" / "manifest.csv"
    if not _done(folder, settings):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        secret = _secret(folder / "secret", "synth")
        train_export = write_export(folder / "pacs", patients=patients, seed=0)
        _ingest(train_export.root, folder / "data", train_export.labels_path, secret)
        counts = _stamp_split(manifest, val_fraction=0.2, test_fraction=0.2)
        ext_export = write_export(folder / "pacs-external", patients=external_patients, seed=1)
        _ingest(ext_export.root, folder / "external", ext_export.labels_path, secret)
        print(f"synth: {patients} patients, split {counts}; external {external_patients} patients")
        _mark(folder, settings)
    return Dataset(
        name="synth",
        manifest=manifest,
        positive_class="abnormal",
        external=external,
        notes=("synthetic cine (usdcm.synth, difficulty 0.3), split by patient",),
    )


# ---------------------------------------------------------------------------- rows


def _used_outside_config(key: str) -> bool:
    """Whether any module of usdcm other than ``config.py`` mentions ``key``."""
    pattern = re.compile(rf"\b{re.escape(key)}\b")
    for path in SRC.rglob("*.py"):
        if path.name != "config.py" and pattern.search(path.read_text(encoding="utf-8")):
            return True
    return False


def _plan_ready() -> str | None:
    for path in (SRC / "plan").rglob("*.py"):
        if re.search(r"^def make_plan\(", path.read_text(encoding="utf-8"), re.MULTILINE):
            return None
    return "the default plan has not landed (no usdcm.plan.make_plan): skipped"


def _pretrained_ready() -> str | None:
    registry = (SRC / "models" / "registry.py").read_text(encoding="utf-8")
    if "efficientnet_lite0" not in registry:
        return "efficientnet_lite0 is not in the model registry yet: skipped"
    return None


@dataclass(frozen=True)
class Row:
    name: str
    config: Path | None
    """``None``: no --config (the plan)."""
    blocked: str | None
    description: str
    pinned: dict[str, Any] | None = None
    """A row over the pinned plan: the keys it sets over it (``{}`` for ``pinned`` itself);
    its config is written per dataset when it runs (:func:`_pinned_config`)."""


def _yaml(values: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(values, sort_keys=False))


def make_row(name: str, out: Path) -> Row:
    """The row called ``name``: a base row, or ``BASE+PIECE`` (an ablation, config generated)."""
    fixed = {
        "seed_cnn": (None, "seed 2-conv CNN, random init, 128 px, 10 epochs (baseline)"),
        "resnet18": (None, "ResNet-18, random init, 128 px, 10 epochs"),
        "pretrained": (_pretrained_ready(), "EfficientNet-Lite0, ImageNet weights, 224 px, 8 ep"),
    }
    if name in fixed:
        blocked, description = fixed[name]
        return Row(name, CONFIGS / f"{name}.yaml", blocked, description)
    if name == "plan":
        return Row(name, None, _plan_ready(), "`usdcm train MANIFEST`: the default plan")
    if name == "pinned":
        description = "the default plan, pinned: reference step times, no time limit"
        return Row(name, None, _plan_ready(), description, pinned={})
    match = re.fullmatch(r"(\w+)([+-])(\w+)", name)
    bases = (*fixed, "plan", "pinned")
    if match is None or match[3] not in PIECE_BY_NAME or match[1] not in bases:
        message = f"unknown row {name!r}; see --list"
        raise SystemExit(message)
    base, sign, piece_name = match.groups()
    piece = PIECE_BY_NAME[piece_name]
    base_row = make_row(base, out)
    blocked = base_row.blocked
    if blocked is None and not _used_outside_config(piece.key):
        blocked = f"{piece.key} is read nowhere outside config.py yet: skipped"
    values = piece.overrides if sign == "+" else piece.off
    state = "on" if sign == "+" else "off"
    if base == "pinned":
        description = f"{base_row.description}, {piece_name} {state}"
        return Row(name, None, blocked, description, pinned=values)
    if base_row.config is not None:
        values = {"extends": str(base_row.config), **values}
    # for the plan: a config of these keys only, which override the plan's matching choices
    config = out / "configs" / f"{name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    text = (
        f"# {name}: the {base} row with {piece_name} {state} (written by benchmarks/accuracy.py)\n"
    )
    config.write_text(text + _yaml(values), encoding="utf-8")
    return Row(name, config, blocked, f"{base_row.description}, {piece_name} {state}")


def all_row_names(base: str) -> list[str]:
    """Every row: the four base rows, then each piece on over ``base`` (a plan: off)."""
    planned = base in ("plan", "pinned")
    sign = "-" if planned else "+"
    pieces = (f"{base}{sign}{p.name}" for p in PIECES if not (sign == "-" and p.name in OPTIONAL))
    on = (f"{base}+{name}" for name in OPTIONAL) if planned else ()
    return ["seed_cnn", "resnet18", "plan", "pretrained", *pieces, *on]


# ---------------------------------------------------------------------------- measuring


def _train_summary(run: Path) -> dict[str, Any]:
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(epochs, key=lambda e: e.get("val_auc") or 0.0)
    counts: dict[str, int] = {}
    with (run / "splits.csv").open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            counts[record["split"]] = counts.get(record["split"], 0) + 1
    return {
        "epochs_run": len(epochs),
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_auc": best.get("val_auc"),
        "split_images": counts,
    }


def _metrics(path: Path) -> dict[str, Any]:
    values = json.loads(path.read_text(encoding="utf-8"))
    return {
        "level": values["level"],
        "n": values["n"],
        "n_positive": values["n_positive"],
        "auc": values["auc"]["value"],
        "auc_ci95": values["auc"]["ci95"],
        "accuracy": values["accuracy"]["value"],
        "balanced_accuracy": values["balanced_accuracy"]["value"],
        "sensitivity": values["sensitivity"]["value"],
        "specificity": values["specificity"]["value"],
    }


_PIN = """\
import dataclasses, sys
from pathlib import Path
from usdcm.config import dump_config
from usdcm.plan import make_plan
from usdcm.plan.probe import reference_probe
plan = make_plan(Path(sys.argv[1]), time_budget_s=float(sys.argv[2]), device="cpu",
                 probe=reference_probe)
config = plan.config
config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, time_limit_s=0.0))
Path(sys.argv[3]).write_text(dump_config(config), encoding="utf-8")
"""
"""Writes the plan ``usdcm train MANIFEST --time-budget B`` makes on the reference machine
(its step times, not this machine's), as a full config without the time limit."""


def _pinned_config(row: Row, data: Dataset, out: Path, budget: str) -> Path:
    """The config of a row over the pinned plan of ``data`` at ``budget`` (written once).

    Pinned, the plan's choices do not depend on how busy the machine is while probing, and
    without the time limit every row trains the same epochs however loaded the cores are:
    the rows differ only by the piece they change.
    """
    from usdcm.plan import parse_time_budget

    folder = out / data.name / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    seconds = parse_time_budget(budget)
    pinned = folder / f"plan-{seconds:.0f}s-reference.yaml"
    if not pinned.exists():
        script = [sys.executable, "-c", _PIN, str(data.manifest), str(seconds), str(pinned)]
        subprocess.run(script, check=True)
    assert row.pinned is not None
    config = folder / f"{row.name}-{seconds:.0f}s.yaml"
    text = f"# {row.name}: {row.description} (written by benchmarks/accuracy.py)\n"
    config.write_text(text + _yaml({"extends": str(pinned), **row.pinned}), encoding="utf-8")
    return config


def measure(
    row: Row,
    data: Dataset,
    out: Path,
    *,
    epochs: int | None,
    bootstrap: int,
    budget: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    run = out / data.name / "runs" / row.name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    log = run.parent / f"{row.name}.log"
    log.write_text("", encoding="utf-8")
    train = _usdcm("train", str(data.manifest), "--out", str(run), "--quiet")
    config = row.config
    if row.pinned is not None:
        config = _pinned_config(row, data, out, budget or "20m")
    elif config is None and budget is not None:
        train += ["--time-budget", budget]
    if config is not None:
        train += ["--config", str(config)]
    if epochs is not None:
        train += ["--epochs", str(epochs)]
    if seed is not None:
        train += ["--seed", str(seed)]
    evaluate = _usdcm(
        "evaluate", str(run), "--out", str(run / "eval"), "--positive-class",
        data.positive_class, "--bootstrap", str(bootstrap), "--quiet",
    )  # fmt: skip
    train_s = _run(train, log)
    eval_s = _run(evaluate, log)
    result: dict[str, Any] = {
        "row": row.name,
        "description": row.description,
        "manifest_sha256": _sha256(data.manifest),
        "train_command": _shown(train),
        "evaluate_command": _shown(evaluate),
        "train_minutes": train_s / 60,
        "evaluate_minutes": eval_s / 60,
        "test": _metrics(run / "eval" / "metrics.json"),
        **_train_summary(run),
        "code": CODE,
        "machine": describe(gpu=True),
        "load_average": os.getloadavg(),
        "notes": list(data.notes),
    }
    if (run / "plan.json").exists():
        result["plan"] = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    if data.external is not None:
        external = _usdcm(
            "evaluate", str(run), "--out", str(run / "external"), "--manifest",
            str(data.external), "--positive-class", data.positive_class,
            "--bootstrap", str(bootstrap), "--quiet",
        )  # fmt: skip
        _run(external, log)
        result["external_command"] = _shown(external)
        result["external"] = _metrics(run / "external" / "metrics.json")
    return result


# ---------------------------------------------------------------------------- report


def _load(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _auc(metrics: dict[str, Any]) -> str:
    """``0.812 (0.75-0.87)``, or ``n/a`` where the split holds one class only."""
    if metrics["auc"] is None:
        return "n/a"
    low, high = metrics["auc_ci95"]
    return f"{metrics['auc']:.3f} ({low:.2f}-{high:.2f})"


def _ratio(value: float | None, base: float | None, digits: int) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.{digits}f}x"


def table(results: dict[str, dict[str, Any]], dataset: str, manifest_sha: str) -> str:
    """The markdown table of every row of ``dataset`` measured on this manifest."""
    rows = {
        name: r
        for name, r in results.get(dataset, {}).items()
        if r["manifest_sha256"] == manifest_sha
    }
    base = rows.get(BASELINE)
    lines = [
        "| row | test AUC (95% CI) | accuracy | bal. acc. | train min | eval min | epochs (best) "
        f"| AUC vs {BASELINE} | time vs {BASELINE} | code |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, r in rows.items():
        t = r["test"]
        auc_ratio = time_ratio = "-"
        if base is not None:
            auc_ratio = _ratio(t["auc"], base["test"]["auc"], 2)
            time_ratio = _ratio(r["train_minutes"], base["train_minutes"], 1)
        extra = f"; external {_auc(r['external'])}" if "external" in r else ""
        lines.append(
            f"| {name} | {_auc(t)}{extra} | {_num(t['accuracy'])} "
            f"| {_num(t['balanced_accuracy'])} | {r['train_minutes']:.1f} "
            f"| {r['evaluate_minutes']:.1f} | {r['epochs_run']} ({r['best_epoch']}) "
            f"| {auc_ratio} | {time_ratio} | {r.get('code', '?')[:7]} |"
        )
    if base is None:
        lines.append(f"\n(no {BASELINE} row measured on this split yet: no ratios)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="seed_cnn,resnet18,plan,pretrained",
                        help="comma-separated rows (see --list); 'all' for every row")  # fmt: skip
    parser.add_argument("--datasets", default="busi,synth", help="busi, synth or both")
    parser.add_argument("--base", default="pretrained", help="base row of the ablations")
    parser.add_argument("--epochs", type=int, default=None, help="override every row's epochs")
    seed = "override every row's runtime.seed (seed repeats; use with --suffix, e.g. @seed1)"
    parser.add_argument("--seed", type=int, default=None, help=seed)
    budget = "--time-budget of the plan rows and of the pinned plan (default: the plan's, 20m)"
    parser.add_argument("--time-budget", default=None, help=budget)
    quick = "smoke run: 12 BUSI images a folder, 20 synth patients, 1 epoch"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--out", type=Path, default=Path("/tmp/usdcm-accuracy"))
    parser.add_argument("--busi", type=Path, default=DEFAULT_BUSI, help="the BUSI folder")
    parser.add_argument("--synth-patients", type=int, default=60)
    parser.add_argument("--bootstrap", type=int, default=2000)
    code = "the commit whose src/ is measured (git archive), or 'worktree'"
    parser.add_argument("--code", default="HEAD", help=code)
    suffix = "appended to the rows' names in the results (e.g. @f373e56 with --code f373e56)"
    parser.add_argument("--suffix", default="", help=suffix)
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--report", action="store_true", help="print the tables and exit")
    args = parser.parse_args()

    out = args.out.resolve() / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    global CODE, CONFIGS
    if args.code != "worktree":
        sha, src = snapshot_code(args.code, args.out.resolve())
        _use_code(src)
        CODE = sha
        if (src.parent / "benchmarks" / "accuracy").is_dir():
            CONFIGS = src.parent / "benchmarks" / "accuracy"
    names = all_row_names(args.base) if args.rows == "all" else args.rows.split(",")
    if args.list:
        for name in all_row_names(args.base):
            row = make_row(name, out)
            print(f"{name:22} {row.blocked or 'ready'}: {row.description}")
        return
    rows = [make_row(name, out) for name in names]
    if args.suffix:
        rows = [dataclasses.replace(row, name=f"{row.name}{args.suffix}") for row in rows]
    epochs = 1 if args.quick and args.epochs is None else args.epochs
    bootstrap = 200 if args.quick else args.bootstrap
    print(f"machine: {describe(gpu=True)}; load average {os.getloadavg()[0]:.1f}; code {CODE}")

    results_path = out / "results.json"
    for dataset_name in args.datasets.split(","):
        if dataset_name == "busi":
            data = prepare_busi(out, per_class=12 if args.quick else None, root=args.busi)
        elif dataset_name == "synth":
            data = prepare_synth(out, patients=20 if args.quick else args.synth_patients)
        else:
            raise SystemExit(f"unknown dataset {dataset_name!r}: busi or synth")
        if not args.report:
            for row in rows:
                if row.blocked:
                    print(f"{data.name}/{row.name}: {row.blocked}")
                    continue
                print(f"{data.name}/{row.name}: training ({row.description})", flush=True)
                try:
                    result = measure(
                        row,
                        data,
                        out,
                        epochs=epochs,
                        bootstrap=bootstrap,
                        budget=args.time_budget,
                        seed=args.seed,
                    )
                except RuntimeError as err:
                    print(f"{data.name}/{row.name}: FAILED, {err}", flush=True)
                    continue
                results = _load(results_path)  # re-read: another row may have finished meanwhile
                results.setdefault(data.name, {})[row.name] = result
                results_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
                print(
                    f"{data.name}/{row.name}: test AUC {_auc(result['test'])}, accuracy "
                    f"{_num(result['test']['accuracy'])}, "
                    f"{result['train_minutes']:.1f} min train",
                    flush=True,
                )
        print(f"\n{data.name} ({'; '.join(data.notes)}):")
        print(table(_load(results_path), data.name, _sha256(data.manifest)))
    print(f"\nresults: {results_path}")


if __name__ == "__main__":
    main()
