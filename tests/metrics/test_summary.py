"""The report summary: contract keys, values against independent computations, edge cases."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from usdcm.metrics import MetricsError, ThresholdRuleError, delong_auc, summarize

TOP_KEYS = {
    "level",
    "positive_class",
    "classes",
    "n",
    "n_positive",
    "prevalence",
    "aggregation",
    "auc",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "accuracy",
    "balanced_accuracy",
    "threshold",
    "confusion_matrix",
    "roc",
    "pr",
    "brier",
    "ece",
    "reliability",
    "counts",
    "bootstrap",
    "subgroups",
    "failures",
    "multiclass",
    "provenance",
}


def make_rows(
    n_patients: int = 60, seed: int = 0, classes: tuple[str, ...] = ("abnormal", "normal")
) -> list[dict[str, str]]:
    """Patients with 1-2 studies of 1-3 images; a shared patient effect on the score."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_patients):
        label = classes[p % len(classes)] if p % 5 else classes[0]
        effect = rng.gauss(0, 0.8)
        for s in range(rng.randint(1, 2)):
            manufacturer = "Tiny" if p % 10 == 0 else ("GE", "Philips")[(p + s) % 2]
            for i in range(rng.randint(1, 3)):
                logits = [rng.gauss(0, 0.6) for _ in classes]
                logits[classes.index(label)] += 1.2 + effect
                weights = [math.exp(value) for value in logits]
                probs = {c: w / sum(weights) for c, w in zip(classes, weights, strict=True)}
                rows.append(
                    {
                        "image_id": f"img-{p}-{s}-{i}",
                        "label": label,
                        **{f"prob_{c}": repr(probs[c]) for c in classes},
                        "patient_key": f"pat-{p:03d}",
                        "study_key": f"1.2.{p}.{s}",
                        "series_key": f"1.2.{p}.{s}.{i % 2}",
                        "manufacturer": manufacturer,
                        "model": "M1",
                        "frames": str(1 + i * 4),
                        "split": "test",
                    }
                )
    return rows


def run(rows: list[dict[str, str]], **overrides: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "level": "study",
        "classes": ["abnormal", "normal"],
        "positive_class": "abnormal",
        "threshold": 0.5,
        "threshold_rule": "youden",
        "threshold_chosen_on": "val",
        "exploratory": False,
        "n_bootstrap": 200,
        "seed": 0,
    }
    options.update(overrides)
    return summarize(rows, **options)


def study_means(rows: list[dict[str, str]], column: str) -> dict[str, tuple[str, float]]:
    """Independent study-level aggregation: label and mean of ``column`` per study."""
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row["study_key"]].append(row)
    return {
        key: (members[0]["label"], float(np.mean([float(r[column]) for r in members])))
        for key, members in groups.items()
    }


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return make_rows()


@pytest.fixture(scope="module")
def summary(rows: list[dict[str, str]]) -> dict[str, Any]:
    return run(rows, provenance={"model": "seed_cnn"})


def test_keys_are_the_contract_and_the_result_is_strict_json(summary: dict[str, Any]) -> None:
    assert set(summary) == TOP_KEYS
    assert set(summary["auc"]) == {"value", "ci95", "method", "bootstrap_ci95"}
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        assert set(summary[name]) == {"value", "ci95", "k", "n"}
    assert set(summary["balanced_accuracy"]) == {"value", "ci95"}
    assert set(summary["threshold"]) == {"value", "rule", "chosen_on", "exploratory"}
    assert set(summary["confusion_matrix"]) == {"labels", "counts", "normalized"}
    assert set(summary["pr"]) == {"precision", "recall", "ap"}
    assert set(summary["reliability"]) == {"bin_edges", "mean_predicted", "observed", "count"}
    assert set(summary["counts"]) == {"patients", "studies", "series", "images", "frames"}
    assert set(summary["bootstrap"]) == {"resamples", "seed", "cluster", "stratified", "skipped"}
    assert set(summary["failures"]) == {"false_positives", "false_negatives"}
    entry = summary["subgroups"]["manufacturer"][0]
    assert set(entry) == {"group", "n", "n_positive", "prevalence", "auc", "too_small", "reason"}
    assert summary["multiclass"] is None
    assert summary["provenance"] == {"model": "seed_cnn"}
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_binary_statistics_match_independent_computations(
    rows: list[dict[str, str]], summary: dict[str, Any]
) -> None:
    means = study_means(rows, "prob_abnormal")
    y = np.array([label == "abnormal" for label, _ in means.values()])
    s = np.array([score for _, score in means.values()])
    assert (summary["n"], summary["n_positive"]) == (len(means), int(y.sum()))
    assert summary["prevalence"] == pytest.approx(y.mean())
    assert summary["auc"]["value"] == pytest.approx(roc_auc_score(y, s))
    assert summary["auc"]["ci95"] == pytest.approx(list(delong_auc(y, s).ci95))
    assert summary["auc"]["method"] == "delong"
    low, high = summary["auc"]["bootstrap_ci95"]
    assert low < summary["auc"]["value"] < high

    (tn, fp), (fn, tp) = confusion_matrix(y, s >= 0.5, labels=[False, True]).tolist()
    assert summary["confusion_matrix"]["counts"] == [[tn, fp], [fn, tp]]
    assert summary["confusion_matrix"]["labels"] == ["normal", "abnormal"]
    assert summary["confusion_matrix"]["normalized"] == [
        [tn / (tn + fp), fp / (tn + fp)],
        [fn / (fn + tp), tp / (fn + tp)],
    ]
    for name, k, n in (
        ("sensitivity", tp, tp + fn),
        ("specificity", tn, tn + fp),
        ("ppv", tp, tp + fp),
        ("npv", tn, tn + fn),
        ("accuracy", tp + tn, len(y)),
    ):
        block = summary[name]
        assert (block["k"], block["n"]) == (k, n)
        assert block["value"] == pytest.approx(k / n)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        assert block["ci95"] == pytest.approx([ci.low, ci.high])
    balanced = summary["balanced_accuracy"]
    assert balanced["value"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert balanced["ci95"][0] < balanced["value"] < balanced["ci95"][1]

    fpr, tpr, _ = roc_curve(y, s)
    assert summary["roc"]["fpr"] == pytest.approx(fpr.tolist())
    assert summary["roc"]["tpr"] == pytest.approx(tpr.tolist())
    assert summary["pr"]["ap"] == pytest.approx(average_precision_score(y, s))
    assert summary["pr"]["recall"][0] == 1.0 and summary["pr"]["precision"][-1] == 1.0
    assert summary["brier"] == pytest.approx(brier_score_loss(y, s))
    assert summary["ece"]["bins"] == 10
    assert sum(summary["reliability"]["count"]) == len(y)
    assert summary["aggregation"] == "mean of image probabilities per study (grouped by study_key)"


def test_counts_threshold_and_bootstrap_blocks(
    rows: list[dict[str, str]], summary: dict[str, Any]
) -> None:
    assert summary["counts"] == {
        "patients": len({r["patient_key"] for r in rows}),
        "studies": len({r["study_key"] for r in rows}),
        "series": len({r["series_key"] for r in rows}),
        "images": len(rows),
        "frames": sum(int(r["frames"]) for r in rows),
    }
    assert summary["threshold"] == {
        "value": 0.5,
        "rule": "youden",
        "chosen_on": "val",
        "exploratory": False,
    }
    assert summary["bootstrap"] == {
        "resamples": 200,
        "seed": 0,
        "cluster": "patient_key",
        "stratified": True,
        "skipped": 0,
    }


def test_same_seed_gives_the_same_summary_and_another_seed_moves_only_bootstrap_cis(
    rows: list[dict[str, str]], summary: dict[str, Any]
) -> None:
    assert run(rows, provenance={"model": "seed_cnn"}) == summary
    other = run(rows, seed=1)
    assert other["auc"]["value"] == summary["auc"]["value"]
    assert other["auc"]["ci95"] == summary["auc"]["ci95"]
    assert other["auc"]["bootstrap_ci95"] != summary["auc"]["bootstrap_ci95"]


def test_subgroups_flag_small_groups_with_reasons(summary: dict[str, Any]) -> None:
    groups = {entry["group"]: entry for entry in summary["subgroups"]["manufacturer"]}
    assert sorted(groups) == ["GE", "Philips", "Tiny"]
    assert sum(entry["n"] for entry in groups.values()) == summary["n"]
    tiny = groups["Tiny"]
    assert tiny["too_small"]
    assert f"{tiny['n']} cases, fewer than 20" in tiny["reason"]
    assert tiny["auc"]["value"] is None  # patients 0, 10, 20, ...: all abnormal
    big = groups["GE"]
    assert not big["too_small"] and big["reason"] == ""
    assert big["auc"]["ci95"][0] < big["auc"]["value"] < big["auc"]["ci95"][1]
    (model,) = summary["subgroups"]["model"]
    assert (model["group"], model["n"]) == ("M1", summary["n"])


def test_too_small_counts_each_class() -> None:
    rows = make_rows(n_patients=60)
    summary = run(rows, min_subgroup_n=5, min_subgroup_class_n=1000, subgroup_columns=["model"])
    (entry,) = summary["subgroups"]["model"]
    n_negative = entry["n"] - entry["n_positive"]
    assert entry["too_small"]
    assert entry["reason"] == (
        f"{entry['n_positive']} positive cases, fewer than 1000; "
        f"{n_negative} negative cases, fewer than 1000"
    )


def test_failures_list_the_most_confident_errors_with_their_images(
    rows: list[dict[str, str]],
) -> None:
    summary = run(rows, threshold=0.6, threshold_rule="0.6", n_failures=3)
    means = study_means(rows, "prob_abnormal")
    false_positives = sorted(
        ((score, key) for key, (label, score) in means.items() if label == "normal"),
        reverse=True,
    )
    expected = [key for score, key in false_positives if score >= 0.6][:3]
    listed = summary["failures"]["false_positives"]
    assert [entry["id"] for entry in listed] == expected
    assert all(entry["label"] == "normal" for entry in listed)
    first = listed[0]
    assert first["prob"] == pytest.approx(means[first["id"]][1])
    assert first["image_ids"] == [r["image_id"] for r in rows if r["study_key"] == first["id"]]
    negatives = summary["failures"]["false_negatives"]
    assert len(negatives) == min(3, summary["confusion_matrix"]["counts"][1][0])
    probs = [entry["prob"] for entry in negatives]
    assert probs == sorted(probs) and all(prob < 0.6 for prob in probs)


def test_multiclass_fills_one_vs_rest_aucs() -> None:
    classes = ("a", "b", "c")
    rows = make_rows(n_patients=60, classes=classes)
    summary = run(rows, classes=list(classes), positive_class="b", level="patient")
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row["patient_key"]].append(row)
    labels = np.array([classes.index(members[0]["label"]) for members in groups.values()])
    probs = np.array(
        [
            [np.mean([float(r[f"prob_{c}"]) for r in members]) for c in classes]
            for members in groups.values()
        ]
    )
    multiclass = summary["multiclass"]
    assert multiclass["method"] == "one-vs-rest, bootstrap CI"
    for index, name in enumerate(classes):
        block = multiclass["per_class"][name]
        assert block["value"] == pytest.approx(roc_auc_score(labels == index, probs[:, index]))
        assert block["ci95"][0] < block["value"] < block["ci95"][1]
    macro = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert multiclass["macro"]["value"] == pytest.approx(macro)
    assert multiclass["macro"]["ci95"][0] < macro < multiclass["macro"]["ci95"][1]
    # the binary blocks are b against the rest
    assert summary["auc"]["value"] == pytest.approx(roc_auc_score(labels == 1, probs[:, 1]))
    assert summary["confusion_matrix"]["labels"] == ["rest", "b"]
    assert summary["n_positive"] == int(np.sum(labels == 1))


def test_one_class_data_gives_none_not_nan() -> None:
    rows = [r for r in make_rows() if r["label"] == "abnormal"]
    summary = run(rows, n_bootstrap=50)
    assert summary["auc"] == {
        "value": None,
        "ci95": [None, None],
        "method": "delong",
        "bootstrap_ci95": [None, None],
    }
    assert summary["bootstrap"]["skipped"] == 50
    assert summary["specificity"] == {"value": None, "ci95": [None, None], "k": 0, "n": 0}
    assert summary["balanced_accuracy"] == {"value": None, "ci95": [None, None]}
    assert summary["roc"] == {"fpr": [], "tpr": []}
    assert summary["confusion_matrix"]["normalized"][0] == [None, None]
    json.dumps(summary, allow_nan=False)


def test_image_level_summary_counts_every_image(rows: list[dict[str, str]]) -> None:
    summary = run(rows, level="image", exploratory=True, threshold_chosen_on="test")
    assert summary["n"] == len(rows)
    assert summary["aggregation"] == "one case per image; no aggregation"
    assert summary["threshold"]["exploratory"] is True


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"positive_class": "tumour"}, MetricsError, "positive_class 'tumour'"),
        ({"classes": ["abnormal"]}, MetricsError, "at least two classes"),
        ({"threshold": float("nan")}, MetricsError, "finite probability"),
        ({"threshold_rule": "0.3"}, MetricsError, "fixes it at 0.3"),
        ({"threshold_rule": "best"}, ThresholdRuleError, "'best' is not understood"),
        ({"level": "exam"}, MetricsError, "level 'exam'"),
        ({"min_subgroup_n": 0}, MetricsError, "min_subgroup_n is 0"),
    ],
)
def test_bad_options_are_rejected(overrides: dict[str, Any], error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        run(make_rows(n_patients=10), **overrides)


def test_no_rows_is_an_error() -> None:
    with pytest.raises(MetricsError, match="no prediction rows"):
        run([])
