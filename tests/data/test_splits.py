"""Splits: grouped by patient and study, stratified by label, deterministic, leak-checked."""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from usdcm.data.splits import (
    SPLIT_COLUMNS,
    SPLITS,
    LeakageError,
    SplitError,
    assign_folds,
    assign_splits,
    check_leakage,
    fold_splits,
    label_map,
    write_splits,
)


def make_rows(n_patients: int = 60, seed: int = 1) -> list[dict[str, str]]:
    """Rows of ``n_patients`` patients, 30% abnormal, 1-2 studies of 1-3 images each."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for p in range(n_patients):
        label = "abnormal" if p % 10 < 3 else "normal"
        for s in range(rng.randint(1, 2)):
            for i in range(rng.randint(1, 3)):
                rows.append(
                    {
                        "image_id": f"img-{p:03d}-{s}-{i}",
                        "patient_key": f"pat-{p:03d}",
                        "study_uid": f"1.2.3.{p}.{s}",
                        "label": label,
                    }
                )
    return rows


def split_of_patients(rows: list[dict[str, str]], splits: dict[str, str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        found[row["patient_key"]].add(splits[row["image_id"]])
    return found


def test_every_patient_lands_in_exactly_one_split() -> None:
    rows = make_rows()
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert set(splits) == {row["image_id"] for row in rows}
    assert set(splits.values()) == set(SPLITS)
    assert all(len(found) == 1 for found in split_of_patients(rows, splits).values())
    check_leakage(rows, splits)


def test_split_is_stratified_by_label_and_follows_the_fractions() -> None:
    rows = make_rows()
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=3)
    patients = {row["patient_key"]: row["label"] for row in rows}
    by_split: dict[str, list[str]] = defaultdict(list)
    for patient, found in split_of_patients(rows, splits).items():
        by_split[found.pop()].append(patients[patient])
    assert {split: len(labels) for split, labels in by_split.items()} == {
        "train": 36,
        "val": 12,
        "test": 12,
    }
    for labels in by_split.values():
        prevalence = labels.count("abnormal") / len(labels)
        assert prevalence == pytest.approx(0.3, abs=0.05)


def test_same_seed_same_split_whatever_the_row_order() -> None:
    rows = make_rows()
    first = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=5)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(shuffled, val_fraction=0.2, test_fraction=0.2, seed=5) == first
    other = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=6)
    assert other != first


def test_small_strata_still_give_val_and_test_a_patient() -> None:
    rows = [
        {"image_id": f"i{p}", "patient_key": f"p{p}", "label": "abnormal" if p < 3 else "normal"}
        for p in range(10)
    ]
    splits = assign_splits(rows, val_fraction=0.1, test_fraction=0.1, seed=0)
    abnormal = Counter(splits[f"i{p}"] for p in range(3))
    assert abnormal == {"train": 1, "val": 1, "test": 1}


def test_a_study_shared_by_two_patients_keeps_them_together() -> None:
    rows = make_rows(20)
    # an image of patient 0 filed under a study of patient 1
    bridge = {"patient_key": "pat-000", "study_uid": "1.2.3.1.0", "label": "abnormal"}
    rows.append({"image_id": "bridge", **bridge})
    splits = assign_splits(rows, val_fraction=0.3, test_fraction=0.3, seed=0)
    together = {splits[r["image_id"]] for r in rows if r["patient_key"] in ("pat-000", "pat-001")}
    assert len(together) == 1
    check_leakage(rows, splits)


def test_unlabelled_rows_are_in_no_split() -> None:
    rows = make_rows(10)
    rows[0]["label"] = ""
    rows[1]["label"] = "  "
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert rows[0]["image_id"] not in splits
    assert rows[1]["image_id"] not in splits
    assert len(splits) == len(rows) - 2


def test_given_split_column_is_honoured() -> None:
    rows = make_rows(10)
    wanted = {}
    for row in rows:
        number = int(row["patient_key"][-3:])
        wanted[row["image_id"]] = SPLITS[number % 3]
        row["split"] = " " + wanted[row["image_id"]].upper()
    assert assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0) == wanted


def test_bad_split_value_names_the_value_and_the_image() -> None:
    rows = make_rows(4)
    for row in rows:
        row["split"] = "train"
    rows[2]["split"] = "validation"
    with pytest.raises(SplitError, match=rf"{rows[2]['image_id']} has split 'validation'"):
        assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_partly_filled_split_column_is_refused() -> None:
    rows = make_rows(4)
    rows[0]["split"] = "train"
    with pytest.raises(SplitError, match="split column is empty for image"):
        assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_missing_patient_key_is_refused() -> None:
    rows = make_rows(4)
    rows[1]["patient_key"] = ""
    with pytest.raises(SplitError, match=f"Image {rows[1]['image_id']} has an empty patient_key"):
        assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_leakage_through_a_shared_study_is_refused_with_its_key() -> None:
    columns = ("image_id", "patient_key", "study_key", "study_uid", "label", "split")
    rows = [
        dict(zip(columns, values, strict=True))
        for values in [
            ("a", "pA", "skey1", "9.9.1", "x", "train"),
            ("b", "pB", "skey1", "9.9.1", "x", "test"),  # another patient, same study
            ("c", "pC", "skey2", "9.9.2", "y", "val"),
        ]
    ]
    with pytest.raises(
        LeakageError, match=r"1 study_key in more than one split: skey1 \(test"
    ) as e:
        assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert "9.9.1" not in str(e.value)


def test_leakage_through_a_study_known_by_uid_only_is_counted_never_shown() -> None:
    columns = ("image_id", "patient_key", "study_uid", "label", "split")
    rows = [
        dict(zip(columns, values, strict=True))
        for values in [
            ("a", "pA", "9.9.1", "x", "train"),
            ("b", "pB", "9.9.1", "x", "test"),  # hand-written manifest: no study_key
            ("c", "pC", "9.9.2", "y", "val"),
        ]
    ]
    with pytest.raises(LeakageError, match=r"1 study_uid in more than one split \(not listed") as e:
        assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert "9.9.1" not in str(e.value)


def test_grouping_by_study_key_gives_the_split_grouping_by_uid_gave() -> None:
    with_uids = make_rows(40)
    keyed = [
        {**{k: v for k, v in row.items() if k != "study_uid"}, "study_key": f"k{row['study_uid']}"}
        for row in with_uids
    ]
    first = assign_splits(with_uids, val_fraction=0.2, test_fraction=0.2, seed=2)
    assert assign_splits(keyed, val_fraction=0.2, test_fraction=0.2, seed=2) == first


def test_leakage_message_lists_sorted_keys_and_counts_the_rest() -> None:
    rows = []
    splits = {}
    for p in range(12):
        for split in ("train", "val"):
            image_id = f"{p}-{split}"
            rows.append({"image_id": image_id, "patient_key": f"k{p:02d}"})
            splits[image_id] = split
    with pytest.raises(LeakageError) as caught:
        check_leakage(rows, splits)
    message = str(caught.value)
    assert message.startswith("12 patient_key in more than one split: k00 (train, val), k01")
    assert "k09 (train, val) and 2 more" in message
    assert "k10" not in message


def test_label_map_is_sorted_and_skips_unlabelled_rows() -> None:
    rows = [{"label": "normal"}, {"label": ""}, {"label": "abnormal"}, {"label": "normal"}]
    assert label_map(rows) == {"abnormal": 0, "normal": 1}


def test_majority_label_ties_are_broken_the_same_way_every_time() -> None:
    rows = [
        {"image_id": "a", "patient_key": "p", "label": "zeta"},
        {"image_id": "b", "patient_key": "p", "label": "alpha"},
    ]
    results = {
        tuple(sorted(assign_splits(order, val_fraction=0.3, test_fraction=0.3, seed=0).items()))
        for order in (rows, rows[::-1])
    }
    assert len(results) == 1


def test_write_splits_writes_one_row_per_split_image(tmp_path: Path) -> None:
    rows = make_rows(6)
    rows[0]["label"] = ""
    for row in rows[2:]:
        row["study_key"] = "key-" + row["study_uid"].replace(".", "")
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    path = tmp_path / "run" / "splits.csv"
    assert write_splits(path, rows, splits) == len(rows) - 1
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == SPLIT_COLUMNS
        written = list(reader)
    assert {row["image_id"]: row["split"] for row in written} == splits
    assert written[0]["patient_key"] == rows[1]["patient_key"]
    # keys are copied; a row without one gets an empty cell, never its UID
    assert written[0]["study_key"] == ""
    assert [row["study_key"] for row in written[1:]] == [row["study_key"] for row in rows[2:]]
    text = path.read_text(encoding="utf-8")
    assert not any(row["study_uid"] in text for row in rows)


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.6, 0.5)])
def test_fractions_out_of_range_are_refused(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        assign_splits(make_rows(4), val_fraction=val, test_fraction=test, seed=0)


def _shared_studies(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` where every 7th patient shares its first study with the next patient."""
    linked = [dict(row) for row in rows]
    for row in linked:
        patient = int(row["patient_key"].split("-")[1])
        if patient % 7 == 1:
            row["study_uid"] = f"1.2.3.{patient - 1}.0"
    return linked


def test_folds_keep_every_patient_and_study_in_one_fold_and_test_as_assign_splits() -> None:
    rows = _shared_studies(make_rows(60))
    folds = assign_folds(rows, folds=4, val_fraction=0.2, test_fraction=0.2, seed=3)
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=3)

    assert {i for i, f in folds.items() if f == 0} == {i for i, s in splits.items() if s == "test"}
    assert set(folds) == {row["image_id"] for row in rows}
    by_patient: dict[str, set[int]] = defaultdict(set)
    by_study: dict[str, set[int]] = defaultdict(set)
    for row in rows:
        by_patient[row["patient_key"]].add(folds[row["image_id"]])
        by_study[row["study_uid"]].add(folds[row["image_id"]])
    assert all(len(found) == 1 for found in by_patient.values())
    assert all(len(found) == 1 for found in by_study.values())
    assert any(len({r["patient_key"] for r in rows if r["study_uid"] == s}) > 1 for s in by_study)
    # each fold of the check is also what check_leakage accepts
    check_leakage(rows, {image_id: f"fold-{fold}" for image_id, fold in folds.items()})


def test_folds_are_stratified_balanced_and_independent_of_row_order() -> None:
    rows = [
        {"image_id": f"i{n}", "patient_key": f"p{n}", "label": "abnormal" if n % 4 == 0 else "b"}
        for n in range(80)
    ]
    folds = assign_folds(rows, folds=4, val_fraction=0.2, test_fraction=0.2, seed=0)
    per_fold = Counter((f, row["label"]) for row in rows if (f := folds[row["image_id"]]))
    assert sorted({per_fold[(f, "abnormal")] for f in range(1, 5)}) in ([4], [3, 4], [4, 5])
    assert (
        max(per_fold[(f, "b")] for f in range(1, 5)) - min(per_fold[(f, "b")] for f in range(1, 5))
        <= 1
    )
    assert assign_folds(rows[::-1], folds=4, val_fraction=0.2, test_fraction=0.2, seed=0) == folds
    other = assign_folds(rows, folds=4, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert other != folds


def test_fold_splits_validate_on_one_fold_and_train_on_the_others() -> None:
    rows = make_rows(30)
    folds = assign_folds(rows, folds=3, val_fraction=0.2, test_fraction=0.2, seed=0)
    vals = []
    for k in (1, 2, 3):
        split = fold_splits(folds, k)
        assert {i for i, s in split.items() if s == "val"} == {
            i for i, f in folds.items() if f == k
        }
        assert {i for i, s in split.items() if s == "test"} == {
            i for i, f in folds.items() if f == 0
        }
        vals.append({i for i, s in split.items() if s == "val"})
    assert set().union(*vals) == {i for i, f in folds.items() if f}
    assert sum(len(v) for v in vals) == len(set().union(*vals))
    with pytest.raises(SplitError, match="no fold 4"):
        fold_splits(folds, 4)


def test_too_few_patients_for_the_folds_is_a_clear_error() -> None:
    rows = make_rows(5)
    with pytest.raises(SplitError, match="6 folds need at least 6 patients"):
        assign_folds(rows, folds=6, val_fraction=0.2, test_fraction=0.2, seed=0)
    with pytest.raises(SplitError, match="2 folds or more"):
        assign_folds(rows, folds=1, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_write_splits_records_the_fold_of_each_training_image(tmp_path: Path) -> None:
    from usdcm.artifacts.splits import read_splits_file

    rows = make_rows(12)
    folds = assign_folds(rows, folds=2, val_fraction=0.2, test_fraction=0.2, seed=0)
    splits = {i: "test" if f == 0 else "train" for i, f in folds.items()}
    write_splits(tmp_path / "splits.csv", rows, splits, folds)
    written = read_splits_file(tmp_path / "splits.csv")
    assert {row.image_id: row.fold for row in written} == folds
    assert {row.split for row in written if row.fold} == {"train"}
