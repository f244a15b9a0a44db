from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.evaluation.conftest import Evaluated

from usdcm.artifacts.predictions import DEMOGRAPHIC_COLUMNS
from usdcm.errors import CheckpointError, RunError
from usdcm.inference.model import load_trained_model
from usdcm.inference.predict import SourcePredictions, predict_source
from usdcm.ingest import IngestOptions, ingest
from usdcm.privacy import ProjectSecret


@pytest.mark.parametrize("workers", [1, 2])
def test_predict_on_the_raw_export_matches_evaluate(evaluated_run: Evaluated, workers: int) -> None:
    export = evaluated_run.ingested.export
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(evaluated_run.ingested.root / ".usdcm" / "secret")
    found = predict_source(trained, export.root, secret=secret, chunk=5, workers=workers)

    n_files = sum(1 for p in export.root.rglob("*") if p.is_file())
    assert len(found.rows) + len(found.excluded) == n_files
    assert len(found.rows) == len(evaluated_run.ingested.rows)

    with evaluated_run.predictions.open(encoding="utf-8") as handle:
        evaluated = {r["image_id"]: r for r in csv.DictReader(handle)}
    by_id = {r["image_id"]: r for r in found.rows}
    assert evaluated and set(evaluated) <= set(by_id)
    for image_id, row in evaluated.items():
        for name in trained.classes:
            assert by_id[image_id][f"prob_{name}"] == pytest.approx(
                float(row[f"prob_{name}"]), abs=1e-5
            )
    manifest = {r["image_id"]: r for r in evaluated_run.ingested.rows}
    for image_id, row in manifest.items():  # the manifest's coarse demographics, never more
        assert {k: by_id[image_id][k] for k in DEMOGRAPHIC_COLUMNS} == {
            k: row[k] for k in DEMOGRAPHIC_COLUMNS
        }
    assert all(
        by_id[i]["sex"] and by_id[i]["age_band"] and by_id[i]["study_year"] for i in manifest
    )
    text = repr(found.rows) + repr(found.excluded)
    for phi in export.phi:
        assert phi not in text


def read_excluded(out: Path) -> dict[str, tuple[str, str]]:
    with (out / "excluded.csv").open(encoding="utf-8", newline="") as handle:
        return {row["path"]: (row["code"], row["reason"]) for row in csv.DictReader(handle)}


def predicted_exclusions(found: SourcePredictions) -> dict[str, tuple[str, str]]:
    return {row["path"]: (row["code"], row["reason"]) for row in found.excluded}


def test_predict_and_ingest_exclude_every_file_of_a_synth_export_alike(
    evaluated_run: Evaluated,
) -> None:
    export = evaluated_run.ingested.export
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(evaluated_run.ingested.root / ".usdcm" / "secret")
    found = predict_source(trained, export.root, secret=secret, workers=1)
    by_ingest = read_excluded(evaluated_run.ingested.root)
    codes = {code for code, _ in by_ingest.values()}
    assert {"duplicate", "not_dicom", "modality", "sop_class", "dicomdir"} <= codes
    assert predicted_exclusions(found) == by_ingest
    assert [row["path"] for row in found.excluded] == sorted(by_ingest)


def test_a_slow_header_is_a_timeout_in_predict_as_in_ingest(
    evaluated_run: Evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.ingest.conftest import write_us

    from usdcm.ingest import scan as scan_module

    source = tmp_path / "export"
    write_us(source / "slow", np.zeros((8, 8), np.uint8), seed=1)
    write_us(source / "quick", np.zeros((8, 8), np.uint8), seed=2)
    real = scan_module.read_header

    def read_slowly(path: Path) -> Any:
        if path.name == "slow":
            time.sleep(30)
        return real(path)

    monkeypatch.setattr(scan_module, "read_header", read_slowly)
    monkeypatch.setattr(scan_module, "HEADER_TIMEOUT_S", 0.5)
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(tmp_path / "secret")
    found = predict_source(trained, source, secret=secret, workers=1)
    ingest(source, tmp_path / "out", IngestOptions(workers=1, secret_path=tmp_path / "secret"))
    slow = ("timeout", "reading the header took over 0.5 s")
    assert predicted_exclusions(found) == read_excluded(tmp_path / "out") == {"slow": slow}
    assert len(found.rows) == 1


def test_a_folder_without_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="No checkpoint"):
        load_trained_model(tmp_path, "cpu")


class _Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch PWNED",))


def test_a_checkpoint_carrying_code_is_refused_and_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    crafted = tmp_path / "best.pt"
    torch.save({"model_state": _Payload()}, crafted)
    with pytest.raises(CheckpointError, match="nothing in it was executed"):
        load_trained_model(tmp_path, "cpu")
    assert not (tmp_path / "PWNED").exists()


def test_predict_survives_the_trap_tree_and_accounts_for_every_entry(
    evaluated_run: Evaluated, tmp_path: Path
) -> None:
    from tests.hostile.test_traps import N_REAL_IN_BIG, build_trap_tree, expected_entries

    root = tmp_path / "export"
    tree = build_trap_tree(root)
    trained = load_trained_model(evaluated_run.run, "cpu")
    secret = ProjectSecret.load_or_create(tmp_path / "secret")
    found = predict_source(trained, root, secret=secret)
    ingest(root, tmp_path / "out", IngestOptions(workers=1, secret_path=tmp_path / "secret"))
    # one selection path: every code and reason as ingest gives it, duplicates included
    by_ingest = read_excluded(tmp_path / "out")
    pair = {"alias", tree["linked"]}  # the link and its target: one of them is the duplicate
    assert [by_ingest[path][0] for path in pair & set(by_ingest)] == ["duplicate"]
    assert predicted_exclusions(found) == by_ingest

    entries = expected_entries(root)
    assert len(found.rows) + len(found.excluded) == len(entries)
    excluded = {row["path"]: row["code"] for row in found.excluded}
    assert set(excluded) <= set(entries)
    assert excluded["fifo"] == "unreadable"
    assert excluded["loop"] == excluded["up"] == "symlink"
    assert tree["moved"] not in excluded  # the image with a non-UTF-8 name is classified
    # every image of the export (the "alias" link is a duplicate), "sealed/inner", "big/real*"
    assert len(found.rows) == len(tree["summary"].image_paths) + 1 + N_REAL_IN_BIG
