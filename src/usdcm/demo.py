"""``usdcm demo``: the whole job on built-in synthetic data, in one call.

Owns the order of the steps (synth, ingest, plan, train, evaluate), the demo's time budget
(:data:`DEMO_TIME_BUDGET_S`), the keys it sets over its plan (:data:`DEMO_OVERRIDES`, which
``configs/demo.yaml`` mirrors for reading) and the timing of each step. Every step is the
same function its own command runs; nothing here computes, decodes or trains by itself.

The demo trains the default plan, as ``usdcm train MANIFEST`` does, with one difference: it
plans with the reference machine's step times (2 CPU cores) instead of a timing probe, so
that it trains the same model on every machine and its numbers repeat. The plan goes to
``run/plan.json``; the resolved config it gives is written beside the export as
``demo.yaml``, which the recorded ``usdcm train ... --config demo.yaml`` command names, so
the run and the report repeat it outside the demo.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usdcm.atomic import atomic_write_bytes, atomic_write_text
from usdcm.errors import DemoError

DEMO_OVERRIDES: dict[str, Any] = {
    "intended_use": "Demonstration on synthetic data only; not for clinical use.",
    "reference_standard": (
        "Synthetic ground truth: each study's label is whether the generator drew a lesion "
        "into it; no reader was involved."
    ),
    "optim.time_limit_s": 0.0,
}
"""What the demo sets over its plan (mirrored by configs/demo.yaml): the intended use, the
reference standard, and no time limit: planned with the reference machine's step times, the
demo trains the same epochs on every machine, busy or not, so that its numbers repeat."""

DEMO_TIME_BUDGET_S = 3.5 * 60
"""The demo's ``--time-budget``: 3.5 minutes of training on 2 CPU cores (by the reference
machine's step times), which keeps ``make demo`` well under 10 minutes there."""

DEMO_JSON = "demo.json"
DEMO_YAML = "demo.yaml"
"""The config the demo trained with, written so that its recorded train command runs."""


@dataclass
class DemoResult:
    """Where everything went, and how long each step took."""

    out: Path
    seconds: dict[str, float] = field(default_factory=dict)
    report_html: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    train_result: Any = None
    plan: Any = None
    """The :class:`usdcm.plan.Plan` the demo trained with."""


Step = Callable[[str], None]


def _write_demo_secret(data: Path, seed: int) -> None:
    """Give the demo a pseudonym secret that follows from ``seed``, where none exists yet.

    Splits are drawn over keyed pseudonyms, so a random secret (what ingest creates for
    real data) would give every demo run another split and other numbers. The demo's data
    are synthetic, so a derived secret hides nothing and makes the demo reproducible.
    Never do this for real patients.
    """
    from usdcm.ingest.pipeline import STATE_DIR

    path = data / STATE_DIR / "secret"
    if not path.exists():
        key = hashlib.sha256(f"usdcm demo secret, seed {seed}".encode()).hexdigest()
        atomic_write_bytes(path, key.encode("ascii") + b"\n", mode=0o600)


def run_demo(
    out: Path,
    *,
    patients: int = 60,
    seed: int = 0,
    progress: Any = None,
    on_step: Step | None = None,
    epochs: int | None = None,
) -> DemoResult:
    """Write ``out/pacs``, ingest it into ``out/data``, train ``out/run``, evaluate it.

    An existing ``out/pacs`` written by an earlier demo with the same ``patients`` and
    ``seed`` is reused (the export is deterministic); ingest then converts nothing new.
    """
    from usdcm.config import dump_config
    from usdcm.evaluation.evaluate import evaluate_run
    from usdcm.evaluation.reporting import ReportOptions, build_report
    from usdcm.ingest import IngestOptions, ingest
    from usdcm.plan import format_duration, make_plan
    from usdcm.plan.probe import reference_probe
    from usdcm.synth import write_export
    from usdcm.training.run import train

    result = DemoResult(out=out)
    say = on_step or (lambda _text: None)
    out.mkdir(parents=True, exist_ok=True)
    pacs, data, run = out / "pacs", out / "data", out / "run"
    settings = {"patients": patients, "seed": seed}
    marker = out / DEMO_JSON

    started = time.perf_counter()
    if pacs.exists() and any(pacs.iterdir()):
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if previous != settings:
            message = (
                f"{pacs} exists and was not written by `usdcm demo` with --patients "
                f"{patients} --seed {seed}; pass another folder, or delete it."
            )
            raise DemoError(message)
        say(f"1/4 synth: reusing {pacs}")
    else:
        say(f"1/4 synth: {patients} patients into {pacs}")
        write_export(pacs, patients=patients, seed=seed)
        atomic_write_text(marker, json.dumps(settings))
    result.seconds["synth"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"2/4 ingest: {pacs} -> {data}")
    _write_demo_secret(data, seed)
    ingest(pacs, data, IngestOptions(labels=pacs / "labels.csv"), progress)
    result.seconds["ingest"] = time.perf_counter() - started

    started = time.perf_counter()
    manifest = data / "manifest.csv"
    overrides: dict[str, Any] = dict(DEMO_OVERRIDES)
    sources = dict.fromkeys(overrides, "usdcm demo")
    if epochs is not None:
        overrides["optim.epochs"] = epochs
        sources["optim.epochs"] = "--epochs"
    plan = make_plan(
        manifest,
        time_budget_s=DEMO_TIME_BUDGET_S,
        overrides=overrides,
        override_sources=sources,
        probe=reference_probe,
    )
    result.plan = plan
    plan.write(run)
    config = plan.config
    config_path = out / DEMO_YAML
    atomic_write_text(config_path, dump_config(config))
    train_command = ["train", str(manifest), "--config", str(config_path), "--out", str(run)]
    side = "x".join(str(s) for s in config.data.image_size)
    say(
        f"3/4 train: {config.model.name} ({config.model.weights} weights), {side} px, "
        f"{config.optim.epochs} epochs, planned for {format_duration(DEMO_TIME_BUDGET_S)} "
        f"(estimated {format_duration(plan.estimated_seconds)}; {run / 'plan.json'}) "
        f"on {manifest} -> {run}"
    )
    result.train_result = train(
        manifest,
        config,
        run,
        progress=progress,
        command=shlex.join(["usdcm", *train_command]),
    )
    result.seconds["train"] = time.perf_counter() - started

    started = time.perf_counter()
    say(f"4/4 evaluate: {run} -> {run / 'eval'}")
    evaluate = shlex.join(["usdcm", "evaluate", str(run), "--out", str(run / "eval")])
    predictions, _ = evaluate_run(run, run / "eval", command=evaluate)
    report = build_report(predictions, run / "eval", ReportOptions(), command=evaluate)
    result.seconds["evaluate"] = time.perf_counter() - started
    result.metrics = report.metrics
    result.report_html = report.files.get("html")
    return result
