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
from usdcm.metrics.decision_curve import decision_curve
from usdcm.metrics.recalibration import fit_logistic
from usdcm.metrics.sample_size import buderer
from usdcm.metrics.threshold import THRESHOLD_CONVENTION

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
    "sample_size",
    "decision_curve",
    "recalibration",
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
    assert set(summary["auc"]) == {
        "value",
        "ci95",
        "method",
        "delong_ci95",
        "bootstrap_ci95",
        "direction",
    }
    for name in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        assert set(summary[name]) == {"value", "ci95", "k", "n"}
    assert set(summary["balanced_accuracy"]) == {"value", "ci95"}
    assert set(summary["threshold"]) == {
        "value",
        "rule",
        "chosen_on",
        "exploratory",
        "convention",
    }
    assert set(summary["confusion_matrix"]) == {"labels", "counts", "normalized"}
    assert set(summary["pr"]) == {"precision", "recall", "ap"}
    assert set(summary["reliability"]) == {"bin_edges", "mean_predicted", "observed", "count"}
    assert set(summary["counts"]) == {"patients", "studies", "series", "images", "frames"}
    assert set(summary["bootstrap"]) == {"resamples", "seed", "cluster", "stratified", "skipped"}
    assert set(summary["failures"]) == {"false_positives", "false_negatives"}
    entry = summary["subgroups"]["manufacturer"][0]
    assert set(entry) == {"group", "n", "n_positive", "prevalence", "auc", "too_small", "reason"}
    assert summary["multiclass"] is None
    assert set(summary["sample_size"]) == {
        "method",
        "confidence",
        "target_width",
        "expected_sensitivity",
        "expected_specificity",
        "needed_positive",
        "needed_negative",
        "needed_total",
        "n_positive",
        "n_negative",
        "achieved_width",
        "below_target",
        "explanation",
    }
    assert set(summary["sample_size"]["achieved_width"]) == {"sensitivity", "specificity", "auc"}
    assert set(summary["decision_curve"]) == {
        "thresholds",
        "model",
        "treat_all",
        "treat_none",
        "n",
        "prevalence",
        "reference",
    }
    assert summary["recalibration"] is None  # no calibration rows given
    assert set(summary["subgroups"]) == {"manufacturer", "model", "sex", "age_band"}
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
    assert summary["auc"]["delong_ci95"] == summary["auc"]["ci95"]
    assert summary["auc"]["method"] == "delong"
    assert summary["auc"]["direction"] == (
        "as given (higher score = positive class); never flipped"
    )
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
        "convention": THRESHOLD_CONVENTION,
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
        "delong_ci95": [None, None],
        "bootstrap_ci95": [None, None],
        "direction": "as given (higher score = positive class); never flipped",
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


def test_image_and_series_level_auc_interval_is_the_patient_clustered_bootstrap(
    rows: list[dict[str, str]],
) -> None:
    for level in ("image", "series"):
        summary = run(rows, level=level)
        auc = summary["auc"]
        assert auc["method"] == "patient-clustered bootstrap"
        assert auc["ci95"] == auc["bootstrap_ci95"]
        assert auc["delong_ci95"] != auc["ci95"]
        assert auc["delong_ci95"][0] < auc["value"] < auc["delong_ci95"][1]
        # patients hold several correlated images: DeLong's interval, which takes them as
        # independent, is the narrower one here
        width = auc["ci95"][1] - auc["ci95"][0]
        assert width > auc["delong_ci95"][1] - auc["delong_ci95"][0]
        assert summary["sample_size"]["achieved_width"]["auc"] == pytest.approx(width)
    patient = run(rows, level="patient")["auc"]
    assert patient["method"] == "delong"
    assert patient["ci95"] == patient["delong_ci95"]


def test_sample_size_block_uses_the_reports_estimates(summary: dict[str, Any]) -> None:
    block = summary["sample_size"]
    sensitivity, specificity = summary["sensitivity"], summary["specificity"]
    expected = buderer(
        min(max(sensitivity["value"], 0.5), 0.99),
        min(max(specificity["value"], 0.5), 0.99),
        summary["prevalence"],
    )
    assert block["method"] == "Buderer 1996"
    assert (block["confidence"], block["target_width"]) == (0.95, 0.20)
    assert block["needed_positive"] == expected.needed_positive
    assert block["needed_negative"] == expected.needed_negative
    assert block["needed_total"] == expected.needed_total
    assert block["n_positive"] == summary["n_positive"]
    assert block["n_negative"] == summary["n"] - summary["n_positive"]
    low, high = sensitivity["ci95"]
    assert block["achieved_width"]["sensitivity"] == pytest.approx(high - low)
    assert block["below_target"] == (
        block["n_positive"] < block["needed_positive"]
        or block["n_negative"] < block["needed_negative"]
    )


def test_decision_curve_block_is_on_the_case_scores(
    rows: list[dict[str, str]], summary: dict[str, Any]
) -> None:
    means = study_means(rows, "prob_abnormal")
    y = np.array([label == "abnormal" for label, _ in means.values()])
    s = np.array([score for _, score in means.values()])
    curve = decision_curve(y, s)
    block = summary["decision_curve"]
    assert block["model"] == pytest.approx(curve.model)
    assert block["treat_all"] == pytest.approx(curve.treat_all)
    assert block["thresholds"][0] == 0.01 and block["thresholds"][-1] == 0.99
    assert (block["n"], block["prevalence"]) == (summary["n"], summary["prevalence"])
    assert block["reference"] == "Vickers & Elkin 2006"


def test_recalibration_is_fitted_on_the_calibration_rows_only(
    rows: list[dict[str, str]],
) -> None:
    val = make_rows(n_patients=50, seed=7)
    for entry in val:
        entry.update(split="val", image_id="v" + entry["image_id"])
    base = run(rows, calibration_rows=val)
    block = base["recalibration"]
    assert block["fitted_on"] == "val"
    assert block["n_fit"] == len({r["study_key"] for r in val})  # study level
    means = study_means(val, "prob_abnormal")
    fit = fit_logistic(
        [label == "abnormal" for label, _ in means.values()],
        [score for _, score in means.values()],
    )
    assert block["logistic"]["intercept"] == pytest.approx(fit.intercept)
    assert block["logistic"]["slope"] == pytest.approx(fit.slope)
    assert block["uncalibrated"] == {"brier": base["brier"], "ece": base["ece"]["value"]}
    # the uncalibrated figures of the report are untouched by recalibration
    plain = run(rows)
    assert {k: v for k, v in base.items() if k != "recalibration"} == {
        k: v for k, v in plain.items() if k != "recalibration"
    }

    # move the evaluated rows (other scores, other labels): the fit stays
    moved_rows = [
        {
            **r,
            "prob_abnormal": repr(1 - float(r["prob_abnormal"])),
            "prob_normal": r["prob_abnormal"],
        }
        for r in rows[: len(rows) // 2]
    ]
    moved = run(moved_rows, calibration_rows=val)["recalibration"]
    assert moved["logistic"]["intercept"] == block["logistic"]["intercept"]
    assert moved["logistic"]["slope"] == block["logistic"]["slope"]
    assert moved["n_fit"] == block["n_fit"]
    assert moved["uncalibrated"] != block["uncalibrated"]

    # change the val rows: the fit changes
    changed = [{**r, "label": "normal" if r["label"] == "abnormal" else "abnormal"} for r in val]
    refit = run(rows, calibration_rows=changed)["recalibration"]
    assert refit["logistic"]["slope"] != block["logistic"]["slope"]
    assert refit["uncalibrated"] == block["uncalibrated"]

    oof = run(rows, calibration_rows=val, calibration_on="out-of-fold predictions (oof)")
    assert oof["recalibration"]["fitted_on"] == "out-of-fold predictions (oof)"
    assert run(rows, calibration_rows=[])["recalibration"] is None


def test_rows_with_sex_and_age_band_give_their_subgroups(rows: list[dict[str, str]]) -> None:
    banded = [
        {**r, "sex": "FM"[int(r["patient_key"][-1]) % 2], "age_band": "40-49"}
        if not r["patient_key"].endswith("7")
        else dict(r)
        for r in rows
    ]
    summary = run(banded)
    sexes = {entry["group"]: entry for entry in summary["subgroups"]["sex"]}
    assert sorted(sexes) == ["F", "M", "unknown"]  # patients ...7 have no sex column
    assert sum(entry["n"] for entry in sexes.values()) == summary["n"]
    bands = {entry["group"] for entry in summary["subgroups"]["age_band"]}
    assert bands == {"40-49", "unknown"}


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
