"""The report as a format-free document: sections of paragraphs, tables, figures and code.

Owns what the report says and in which order, so the HTML and the Markdown report hold the
same content; never escapes text, never renders a figure's pixels itself and never writes a
file. Every text here is plain: the renderers escape it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from usdcm.report._format import (
    NA,
    as_float,
    as_int,
    ci_bounds,
    count_items,
    flatten,
    fmt_ci,
    fmt_fraction,
    fmt_int,
    fmt_num,
    fmt_percent,
    fmt_value,
    get,
)
from usdcm.report.checklist import SECTION_BY_KEY
from usdcm.report.checks import LeakageStatus, leakage_status, manifest_status
from usdcm.report.context import ReportContext
from usdcm.report.figures import render_figures
from usdcm.report.limitations import (
    MAX_AUC_CI_WIDTH,
    MAX_PREVALENCE_SHIFT,
    MIN_N,
    MIN_POSITIVES,
    flag_limitations,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PRIVACY_STATEMENT = (
    "This report holds no patient identifiers (names, IDs, birth dates, accession numbers) "
    "and no DICOM UIDs: patients, studies, series and images are named by the keyed "
    "pseudonyms ingest assigned (patient_key, study_key, series_key, image_id)."
)

WITHHELD_UID = "(DICOM UID withheld)"
"""Shown instead of a case or image id that is a DICOM UID (from an older metrics file)."""

_DICOM_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))+")

_MAX_IMAGE_IDS = 3
_MAX_FAILURES = 10


@dataclass(frozen=True)
class FigureRef:
    """A figure by name (its PNG is in :attr:`Document.figures`), with a caption."""

    name: str
    caption: str
    thumbnail: bool = False


@dataclass(frozen=True)
class Paragraph:
    """Plain text; ``style`` ``"note"``, ``"warning"`` or ``"banner"`` sets it apart."""

    text: str
    style: Literal["text", "note", "warning", "banner"] = "text"


@dataclass(frozen=True)
class Subheading:
    """A heading one level below the section's."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """An unordered list of plain-text items."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Code:
    """Lines shown verbatim (commands)."""

    lines: tuple[str, ...]


Cell = str | FigureRef


@dataclass(frozen=True)
class Table:
    """A table with a header row; ``align`` holds ``"l"`` or ``"r"`` per column."""

    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    align: str = ""

    def alignment(self, column: int) -> str:
        """``"l"`` or ``"r"`` for ``column`` (left when not given).

        >>> Table(("a", "b"), (), align="lr").alignment(1), Table(("a",), ()).alignment(0)
        ('r', 'l')
        """
        return self.align[column] if column < len(self.align) else "l"


Block = Paragraph | Subheading | Bullets | Code | Table | FigureRef


@dataclass(frozen=True)
class Section:
    """One section: ``key``, heading, the checklist items it answers, and its blocks."""

    key: str
    title: str
    checklist: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Document:
    """The whole report, ready for :func:`~usdcm.report.to_html.render_html` or Markdown."""

    title: str
    subtitle: str
    sections: tuple[Section, ...]
    figures: Mapping[str, bytes] = field(default_factory=dict)
    footer: str = PRIVACY_STATEMENT


def _section(key: str, blocks: Sequence[Block]) -> Section:
    spec = SECTION_BY_KEY[key]
    return Section(spec.key, spec.title, spec.checklist, tuple(blocks))


def _key_values(pairs: Sequence[tuple[str, object]]) -> Table:
    return Table(("Item", "Value"), tuple((name, _or(fmt_value(value))) for name, value in pairs))


def _counts_table(header: str, value: object) -> Table | None:
    items = [(name, count if count != NA else "not counted") for name, count in count_items(value)]
    if not items:
        return None
    return Table((header, "Count"), tuple(items), align="lr")


def leakage_banner(check: LeakageStatus) -> str:
    """The sentence that opens the Summary of a report whose leakage check failed.

    >>> leakage_banner(LeakageStatus("failed", "Fix the splits.", 2, 1))
    'LEAKAGE CHECK FAILED: 2 patients and 1 study of the evaluated data were also in training or validation. Fix the splits. These results do not validate the model on unseen patients.'
    """  # noqa: E501
    shared = f"{check.counts()} of the evaluated data" if check.counts() else "evaluated data"
    detail = check.detail.strip()
    if detail and not detail.endswith((".", "!", "?")):
        detail += "."
    return " ".join(
        part
        for part in (
            f"LEAKAGE CHECK FAILED: {shared} were also in training or validation.",
            detail,
            "These results do not validate the model on unseen patients.",
        )
        if part
    )


NOT_RECORDED = "not recorded"
"""Shown instead of ``n/a`` where a value is legitimately absent (an older file)."""

_LEVEL_WORDS = {"image": "images", "series": "series", "study": "studies", "patient": "patients"}


def _or(text: str, fallback: str = NOT_RECORDED) -> str:
    """``text``, or ``fallback`` where ``text`` is the missing-value marker.

    >>> _or("0.912"), _or(NA), _or(NA, "none")
    ('0.912', 'not recorded', 'none')
    """
    return fallback if text == NA else text


def _units(metrics: Mapping[str, Any]) -> str:
    """The plural noun of the report's level: ``studies``, ``images``..."""
    level = metrics.get("level")
    return _LEVEL_WORDS.get(str(level), "cases") if isinstance(level, str) else "cases"


def _estimate(entry: object, *, interval: str = "") -> str:
    """``value (95% CI low–high)``, saying so plainly where the value or interval is missing.

    >>> _estimate({"value": 0.9, "ci95": [0.85, 0.94]}, interval="DeLong")
    '0.900 (95% CI 0.850–0.940, DeLong)'
    >>> _estimate({"value": 0.9}), _estimate(None)
    ('0.900 (no confidence interval computed)', 'not computed')
    """
    value = as_float(get(entry, "value"))
    if value is None:
        return "not computed"
    bounds = ci_bounds(get(entry, "ci95"))
    if bounds is None:
        return f"{value:.3f} (no confidence interval computed)"
    suffix = f", {interval}" if interval else ""
    return f"{value:.3f} (95% CI {bounds[0]:.3f}–{bounds[1]:.3f}{suffix})"


def interval_name(method: object) -> str:
    """A plain name of an AUC interval method as metrics.json records it.

    >>> interval_name("delong"), interval_name("patient-clustered bootstrap"), interval_name(None)
    ('DeLong', 'patient-clustered bootstrap', '')
    """
    if not isinstance(method, str):
        return ""
    return "DeLong" if method.lower() == "delong" else method


def _negative_names(metrics: Mapping[str, Any]) -> str:
    positive = str(metrics.get("positive_class") or "")
    labels = get(metrics, "confusion_matrix", "labels") or metrics.get("classes") or []
    others = [str(label) for label in labels if str(label) != positive]
    if not others:
        return "negative"
    return " or ".join(others)


def _chosen_where(threshold: object) -> str:
    """Where the threshold was chosen, in words for the result sentence.

    >>> _chosen_where({"chosen_on": "val", "exploratory": False})
    'chosen on validation'
    >>> _chosen_where({"chosen_on": "val"})
    'chosen on validation (whether before the test set was seen is not recorded)'
    """
    chosen_on = get(threshold, "chosen_on")
    exploratory = get(threshold, "exploratory")
    if exploratory is True:
        return f"chosen on the evaluated {chosen_on or 'rows'} themselves (exploratory)"
    if exploratory is not False:
        where = _chosen_where({"chosen_on": chosen_on, "exploratory": False})
        return f"{where} (whether before the test set was seen is not recorded)"
    if chosen_on == "val":
        return "chosen on validation"
    if chosen_on == "oof":
        return "chosen on the out-of-fold predictions"
    if isinstance(chosen_on, str) and chosen_on:
        return chosen_on if chosen_on.startswith("fixed") else f"chosen on {chosen_on}"
    return "chosen"


def result_sentence(metrics: Mapping[str, Any]) -> str | None:
    """The one-sentence plain statement of the result, or ``None`` without the counts.

    >>> result_sentence({"level": "study", "positive_class": "malignant",
    ...     "classes": ["benign", "malignant"], "threshold": {"chosen_on": "val", "exploratory": False},
    ...     "sensitivity": {"k": 45, "n": 50}, "specificity": {"k": 80, "n": 100}})
    'At the threshold chosen on validation, the model found 45 of 50 malignant studies and cleared 80 of 100 benign ones.'
    """  # noqa: E501
    tp, positives = (
        as_int(get(metrics, "sensitivity", "k")),
        as_int(get(metrics, "sensitivity", "n")),
    )
    tn, negatives = (
        as_int(get(metrics, "specificity", "k")),
        as_int(get(metrics, "specificity", "n")),
    )
    if tp is None or positives is None or tn is None or negatives is None:
        return None
    positive = str(metrics.get("positive_class") or "positive")
    threshold = metrics.get("threshold")
    where = _chosen_where(threshold)
    at = "At the threshold " if not where.startswith("fixed") else "At a threshold "
    return (
        f"{at}{where}, the model found {tp:,} of {positives:,} {positive} {_units(metrics)} "
        f"and cleared {tn:,} of {negatives:,} {_negative_names(metrics)} ones."
    )


def _threshold_text(metrics: Mapping[str, Any]) -> str:
    threshold = metrics.get("threshold")
    value = as_float(get(threshold, "value"))
    if value is None:
        return "no threshold recorded"
    rule = get(threshold, "rule")
    rule_text = f"rule {rule}, " if rule else ""
    return (
        f"{value:.3f} on the predicted probability of "
        f"{metrics.get('positive_class') or 'the positive class'} ({rule_text}"
        f"{_chosen_where(threshold)})"
    )


def _proportion_text(entry: object) -> str:
    text = _estimate(entry)
    k, n = as_int(get(entry, "k")), as_int(get(entry, "n"))
    return f"{text}; {k:,}/{n:,}" if k is not None and n is not None else text


def _cases_text(metrics: Mapping[str, Any]) -> str:
    n, positives = as_int(metrics.get("n")), as_int(metrics.get("n_positive"))
    if n is None:
        return NOT_RECORDED
    text = f"{n:,} {_units(metrics)}"
    if not metrics.get("level"):
        text += " (level not recorded)"
    if positives is not None:
        text += (
            f", {positives:,} {metrics.get('positive_class') or 'positive (class not recorded)'}"
        )
    prevalence = as_float(metrics.get("prevalence"))
    if prevalence is not None:
        text += f" (prevalence {fmt_percent(prevalence)})"
    return text


def _summary(metrics: Mapping[str, Any], n_limitations: int, context: ReportContext) -> Section:
    threshold = metrics.get("threshold")
    auc = metrics.get("auc")
    rows: list[tuple[Cell, ...]] = [
        ("AUC", _estimate(auc, interval=interval_name(get(auc, "method")))),
        ("Sensitivity", _proportion_text(metrics.get("sensitivity"))),
        ("Specificity", _proportion_text(metrics.get("specificity"))),
        ("Threshold", _threshold_text(metrics)),
        ("Evaluated", _cases_text(metrics)),
    ]
    blocks: list[Block] = []
    if get(threshold, "exploratory") is True:
        blocks.append(
            Paragraph(
                "EXPLORATORY: the threshold was not fixed on independent data before the test "
                "set was seen; results at the threshold are optimistic and not a validation.",
                "banner",
            )
        )
    leakage = leakage_status(context.split)
    if leakage is not None and leakage.failed:
        blocks.insert(0, Paragraph(leakage_banner(leakage), "banner"))  # the first thing said
    sentence = result_sentence(metrics)
    if sentence is not None:
        blocks.append(Paragraph(sentence))
    blocks.append(Table(("Measure", "Estimate"), tuple(rows)))
    blocks.append(
        FigureRef(
            "roc",
            f"ROC curve; AUC {_estimate(auc)}. Shaded: pointwise 95% band of the sensitivity "
            "at each false positive rate. Dashed line: chance.",
        )
    )
    blocks.append(
        FigureRef(
            "confusion",
            "Confusion matrix at the threshold: counts and row-normalised rates "
            "(rows: reference standard).",
        )
    )
    if leakage is not None and not leakage.passed and not leakage.failed:
        blocks.append(
            Paragraph(
                f"Leakage check: {leakage.status or NOT_RECORDED}; whether test patients were "
                "also trained or validated on is not known. See Limitations.",
                "warning",
            )
        )
    manifest = manifest_status(context.model)
    if manifest is not None and manifest.changed:
        blocks.append(
            Paragraph(
                "The training manifest changed after training (the checkpoint recorded sha256 "
                f"{manifest.expected_sha256 or NOT_RECORDED}, evaluation read "
                f"{manifest.actual_sha256 or NOT_RECORDED}); labels or splits may differ from "
                "those the model was trained on. See Limitations.",
                "warning",
            )
        )
    flagged = (
        f"{n_limitations} limitation(s) flagged automatically; see Limitations."
        if n_limitations
        else "No limitation was flagged automatically; see Limitations."
    )
    blocks.append(Paragraph(flagged, "warning" if n_limitations else "note"))
    return _section("summary", blocks)


def _intended_use(context: ReportContext) -> Section:
    text = context.intended_use.strip() or (
        "Not stated: set intended_use in the training config or pass --intended-use."
    )
    return _section("intended-use", [Paragraph(text)])


_DATA_KEYS = {
    "sources",
    "manufacturers",
    "models",
    "labels",
    "exclusions",
    "files_in_export",
    "label_key",
    "label_counts_by_split",
}


def _humanise(key: str) -> str:
    """A context key as a row label: ``label_key`` -> ``Label key``.

    >>> _humanise("label_key")
    'Label key'
    """
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _plain(value: object) -> str:
    """Any value as a short text, nested mappings as ``name: value`` pairs, never JSON."""
    if isinstance(value, Mapping):
        return "; ".join(f"{name}: {_plain(item)}" for name, item in value.items()) or "none"
    return _or(fmt_value(value))


def _labelled_rows(mapping: Mapping[str, Any], known: set[str]) -> list[Block]:
    """Keys the section has no place for, one labelled row each (no dotted key dump)."""
    rows = tuple(
        (_humanise(str(name)), _plain(value))
        for name, value in mapping.items()
        if str(name) not in known
    )
    return [Subheading("More about the data"), Table(("Item", "Value"), rows)] if rows else []


def _years_text(years: Mapping[str, Any]) -> str:
    known = sorted(
        (str(year), count) for year, raw in years.items() if (count := as_int(raw)) is not None
    )
    if not known:
        return (
            "The study years of the evaluated images were not recorded (evaluation.json was "
            "written before usdcm recorded them)."
        )
    named = [(year, count) for year, count in known if year and year != "(unknown)"]
    unknown = sum(count for year, count in known if not year or year == "(unknown)")
    text = "Evaluated images by study year (years only, never dates): " + ", ".join(
        f"{year}: {count:,}" for year, count in named
    )
    if named:
        text += f"; acquired {named[0][0]}" + (
            f" to {named[-1][0]}." if named[-1][0] != named[0][0] else "."
        )
    if unknown:
        text += f" {unknown:,} images have no recorded study date."
    return text


def _flow_rows(flow: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[tuple[Cell, ...]]:
    rows: list[tuple[Cell, ...]] = []

    def add(name: str, value: object) -> None:
        count = as_int(value)
        if count is not None:
            rows.append((name, f"{count:,}"))

    add("Files in the export", flow.get("files_in_export"))
    excluded = flow.get("excluded")
    if isinstance(excluded, Mapping):
        add("Excluded at ingest", sum(as_int(n) or 0 for n in excluded.values()))
    add("Images (manifest rows)", flow.get("images"))
    add("Unlabelled images", flow.get("unlabelled"))
    add("Labelled images", flow.get("labelled"))
    by_split = flow.get("by_split")
    if isinstance(by_split, Mapping):
        for name, count in by_split.items():
            add(f"Labelled images in {name}", count)
    split = flow.get("evaluated_split")
    label = (
        f"Evaluated images ({split})" if isinstance(split, str) and split else "Evaluated images"
    )
    add(label, flow.get("evaluated_images"))
    unscored = flow.get("unscored")
    if isinstance(unscored, Mapping):
        add("Evaluated images not scored", sum(as_int(n) or 0 for n in unscored.values()))
    add("Scored images", flow.get("scored_images"))
    by_level = flow.get("scored_by_level")
    if isinstance(by_level, Mapping):
        for level in ("series", "study", "patient"):
            add(f"Scored images: distinct {_LEVEL_WORDS[level]}", by_level.get(level))
    add(
        f"Analysed {_units(metrics)} (at the {metrics.get('level') or 'report'} level)",
        metrics.get("n"),
    )
    add(f"of them {metrics.get('positive_class') or 'positive'}", metrics.get("n_positive"))
    return rows


def _deidentification_blocks(deid: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Subheading("De-identification")]
    if not deid:
        blocks.append(
            Paragraph(
                "What ingest did to de-identify the data was not recorded (evaluation.json was "
                "written before usdcm recorded it). Patients, studies, series and images are "
                "named by keyed pseudonyms throughout this report.",
            )
        )
        return blocks
    pseudonyms = deid.get("pseudonyms")
    if isinstance(pseudonyms, str) and pseudonyms.strip():
        fingerprint = deid.get("secret_fingerprint")
        blocks.append(
            Paragraph(
                f"Pseudonyms: {_sentence(pseudonyms)}"
                + (
                    f" Secret fingerprint: {fingerprint}."
                    if isinstance(fingerprint, str) and fingerprint
                    else ""
                )
            )
        )
    crop = deid.get("region_crop")
    images, cropped = as_int(get(crop, "images")), as_int(get(crop, "cropped"))
    without = as_int(get(crop, "without_region"))
    if images is not None and cropped is not None:
        text = f"Crop to the ultrasound region: {cropped:,} of {images:,} images were cropped"
        if without is not None:
            text += (
                f"; {without:,} had no region recorded and keep the whole frame, with any "
                "burned-in text in it."
                if without
                else "; every image had a region."
            )
        else:
            text += "."
        blocks.append(Paragraph(text, "warning" if without else "text"))
    uids = deid.get("uids_in_outputs")
    if uids is False:
        blocks.append(
            Paragraph(
                "No DICOM UID is written to any output (manifest, predictions, metrics, report)."
            )
        )
    elif uids is True:
        blocks.append(Paragraph("DICOM UIDs are present in the outputs.", "warning"))
    for key, title in (("done", "Done"), ("not_done", "Not done")):
        items = deid.get(key)
        if isinstance(items, Sequence) and not isinstance(items, str) and items:
            blocks.append(Paragraph(f"{title}:"))
            blocks.append(Bullets(tuple(str(item) for item in items)))
    return blocks


def _data(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    data = context.data
    blocks: list[Block] = []
    sources = data.get("sources")
    blocks.append(Subheading("Sources"))
    if isinstance(sources, Sequence) and not isinstance(sources, str) and sources:
        blocks.append(Bullets(tuple(_or(fmt_value(source)) for source in sources)))
    else:
        blocks.append(Paragraph(_or(fmt_value(sources)) if sources else "Not stated."))
    blocks.append(Paragraph(_years_text(context.study_years)))
    blocks.append(Subheading("Participant flow"))
    flow_rows = _flow_rows(context.flow, metrics)
    if not context.flow:
        blocks.append(
            Paragraph(
                "The flow from export to analysis was not recorded (evaluation.json was "
                "written before usdcm recorded it); the counts below are those of the analysis.",
            )
        )
    blocks.append(
        FigureRef(
            "flow",
            "Participant flow (STARD 2015 item 19): from the files in the export to the cases "
            "analysed at the report's level; exclusions and unscored images to the side.",
        )
    )
    if flow_rows:
        blocks.append(Table(("Step", "Count"), tuple(flow_rows), align="lr"))
    for key, title, header in (
        ("manufacturers", "Scanner manufacturers (evaluated images)", "Manufacturer"),
        ("models", "Scanner models (evaluated images)", "Model"),
        ("labels", "Labels (evaluated images)", "Label"),
    ):
        table = _counts_table(header, data.get(key))
        if table is not None:
            blocks.extend([Subheading(title), table])
    counts = metrics.get("counts")
    if isinstance(counts, Mapping) and counts:
        blocks.append(Subheading("Evaluated set per level"))
        blocks.append(
            Table(
                ("Level", "Count"),
                tuple((str(level), _or(fmt_int(count))) for level, count in counts.items()),
                align="lr",
            )
        )
    blocks.append(Paragraph(f"Analysed: {_cases_text(metrics)}."))
    exclusions = data.get("exclusions")
    if isinstance(context.flow.get("excluded"), Mapping):
        exclusions = None  # by reason in the flow above and under Missing data
    else:
        blocks.append(Subheading("Ingest exclusions"))
    table = _counts_table("Reason", exclusions)
    if table is not None:
        blocks.append(table)
    elif isinstance(exclusions, Mapping):
        blocks.append(Paragraph("None: ingest excluded no file."))
    elif not isinstance(context.flow.get("excluded"), Mapping):
        blocks.append(Paragraph("Not recorded."))
    files = as_int(data.get("files_in_export"))
    label_key = data.get("label_key")
    rows: list[tuple[Cell, ...]] = []
    if files is not None:
        rows.append(("Files in the export", f"{files:,}"))
    if isinstance(label_key, str) and label_key:
        rows.append(("Labels matched to images by", label_key))
    if rows:
        blocks.append(Table(("Item", "Value"), tuple(rows)))
    blocks.extend(_deidentification_blocks(context.deidentification))
    blocks.append(Paragraph(PRIVACY_STATEMENT, "note"))
    blocks.extend(_labelled_rows(data, _DATA_KEYS))
    return _section("data", blocks)


def _reference_standard(context: ReportContext) -> Section:
    text = context.reference_standard.strip()
    if text:
        blocks: list[Block] = [Paragraph(text)]
    else:
        blocks = [
            Paragraph(
                "Not stated: how the labels were established, and by whom, is not recorded. "
                "Set reference_standard in the training config, or pass --reference-standard "
                "to usdcm evaluate or usdcm report. See Limitations.",
                "warning",
            )
        ]
    blocks.append(
        Paragraph(
            "A complete statement names the reference standard and why it was chosen, who "
            "labelled the images and their qualifications, the tools used, how disagreements "
            "were resolved, and whether the labellers saw the model's output.",
            "note",
        )
    )
    return _section("reference-standard", blocks)


def _missing_data(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    flow = context.flow
    blocks: list[Block] = []
    if not flow:
        blocks.append(
            Paragraph(
                "Unlabelled, excluded and unscored images were not recorded (evaluation.json "
                "was written before usdcm recorded them).",
            )
        )
    else:
        unlabelled = as_int(flow.get("unlabelled"))
        if unlabelled is not None:
            blocks.append(
                Paragraph(
                    f"{unlabelled:,} images had no label (no reference standard result); they "
                    "are not part of any split and not evaluated."
                )
            )
        excluded = _counts_table("Reason", flow.get("excluded"))
        blocks.append(Subheading("Files excluded at ingest, by reason"))
        blocks.append(excluded if excluded is not None else Paragraph("None."))
        unscored = _counts_table("Reason", flow.get("unscored"))
        blocks.append(Subheading("Evaluated images that could not be scored (indeterminate)"))
        blocks.append(
            unscored
            if unscored is not None
            else Paragraph("None: every evaluated image was scored.")
        )
        threshold_split = flow.get("threshold_split")
        threshold_unscored = _counts_table("Reason", flow.get("threshold_unscored"))
        if isinstance(threshold_split, str) and threshold_split:
            blocks.append(
                Subheading(
                    f"Images of the threshold split ({threshold_split}) that could not be scored"
                )
            )
            blocks.append(
                threshold_unscored
                if threshold_unscored is not None
                else Paragraph(f"None: every {threshold_split} image was scored.")
            )
    blocks.append(
        Paragraph(
            "Nothing is imputed: an image without a label or a score is counted here and left "
            "out of the analysis, never dropped silently. Cases are aggregated to the "
            f"{metrics.get('level') or 'report'} level from the images that were scored.",
            "note",
        )
    )
    return _section("missing-data", blocks)


def _leakage_rows(check: LeakageStatus | None) -> list[tuple[Cell, ...]]:
    """The leakage check as table rows: status, then detail and counts where recorded."""
    if check is None:
        return [("Leakage check", NOT_RECORDED)]
    rows: list[tuple[Cell, ...]] = [("Leakage check", check.status or NOT_RECORDED)]
    if check.detail:
        rows.append(("Leakage check detail", check.detail))
    if check.shared_patients is not None:
        rows.append(("Patients also in training or validation", fmt_int(check.shared_patients)))
    if check.shared_studies is not None:
        rows.append(("Studies also in training or validation", fmt_int(check.shared_studies)))
    return rows


def _split(context: ReportContext) -> Section:
    split = context.split
    blocks: list[Block] = [
        Table(
            ("Item", "Value"),
            (
                ("Split source", _or(fmt_value(split.get("split_source")))),
                *_leakage_rows(leakage_status(split)),
            ),
        )
    ]
    counts = split.get("counts")
    if isinstance(counts, Mapping) and counts:
        columns: list[str] = []
        for value in counts.values():
            if isinstance(value, Mapping):
                columns.extend(str(key) for key in value if str(key) not in columns)
        if columns:
            rows = tuple(
                (str(name), *(_or(fmt_int(get(value, column)), "0") for column in columns))
                for name, value in counts.items()
            )
            table = Table(("Split", *columns), rows, align="l" + "r" * len(columns))
        else:
            rows = tuple((str(name), _or(fmt_int(value))) for name, value in counts.items())
            table = Table(("Split", "Images"), rows, align="lr")
        blocks.extend([Subheading("Counts per split"), table])
    by_label = context.data.get("label_counts_by_split")
    if isinstance(by_label, Mapping) and by_label:
        labels: list[str] = []
        for value in by_label.values():
            if isinstance(value, Mapping):
                labels.extend(str(key) for key in value if str(key) not in labels)
        if labels:
            rows = tuple(
                (str(name), *(_or(fmt_int(get(value, label)), "0") for label in labels))
                for name, value in by_label.items()
            )
            blocks.extend(
                [
                    Subheading("Images and outcomes in each analysis (per split and label)"),
                    Table(("Split", *labels), rows, align="l" + "r" * len(labels)),
                ]
            )
    if context.prevalence_by_split:
        blocks.extend(
            [
                Subheading("Prevalence per split"),
                Table(
                    ("Split", "Prevalence"),
                    tuple(
                        (str(name), _or(fmt_percent(value)))
                        for name, value in context.prevalence_by_split.items()
                    ),
                    align="lr",
                ),
            ]
        )
    blocks.extend(_labelled_rows(split, {"split_source", "leakage_check", "counts"}))
    return _section("split", blocks)


def _plain_method(metrics: Mapping[str, Any], context: ReportContext) -> list[Block]:
    """The statistical method in plain words: threshold, AUC direction and interval."""
    level = metrics.get("level")
    threshold = metrics.get("threshold")
    auc = metrics.get("auc")
    method = get(auc, "method")
    items: list[str] = []
    rule = get(threshold, "rule")
    convention = get(threshold, "convention")
    items.append(
        f"Threshold: rule {rule or NOT_RECORDED}, {_chosen_where(threshold)}. "
        + (
            str(convention)
            if isinstance(convention, str) and convention
            else "A case is predicted positive when its score is at or above the threshold; "
            "candidate thresholds are the observed scores (pROC places them at midpoints "
            "between consecutive scores instead; the classifications are the same)."
        )
    )
    direction = get(auc, "direction")
    items.append(
        "AUC direction: "
        + (
            str(direction)
            if isinstance(direction, str) and direction
            else "as given (a higher score means the positive class); never flipped"
        )
        + '. An inverted score shows as an AUC below 0.5, unlike pROC\'s direction="auto", '
        "which would flip it silently."
    )
    clustered = level in ("image", "series")
    name = interval_name(method) or NOT_RECORDED
    if clustered and "bootstrap" in name:
        items.append(
            f"AUC interval: {name} (primary). At the {level} level a patient contributes "
            "several correlated cases; resampling whole patients keeps them together, whereas "
            "DeLong's interval treats every case as independent and comes out too narrow."
        )
    elif clustered:
        items.append(
            f"AUC interval: {name}. At the {level} level a patient contributes several "
            "correlated cases, so an interval that treats them as independent is too narrow; "
            "read the patient-clustered bootstrap interval, where given, as the primary one."
        )
    elif level == "study":
        items.append(
            f"AUC interval: {name}, one case per study. A patient's several studies are "
            "correlated; the patient-clustered bootstrap interval given beside it allows for "
            "that, DeLong's does not."
        )
    else:
        items.append(
            f"AUC interval: {name}, one case per {level or 'case'}; the patient-clustered "
            "bootstrap interval is given beside it."
        )
    items.append(
        "Sensitivity, specificity, predictive values and accuracy: Wilson score 95% intervals."
    )
    bootstrap = metrics.get("bootstrap")
    resamples = as_int(get(bootstrap, "resamples"))
    if resamples is not None:
        items.append(
            f"Bootstrap: {resamples:,} resamples of whole patients"
            + (", stratified by label" if get(bootstrap, "stratified") is True else "")
            + (f", seed {get(bootstrap, 'seed')}" if get(bootstrap, "seed") is not None else "")
            + "."
        )
    aggregation = metrics.get("aggregation")
    items.append(
        f"Aggregation to the {level or 'report'} level: "
        f"{aggregation if isinstance(aggregation, str) and aggregation else NOT_RECORDED}."
    )
    return [Subheading("Statistical methods"), Bullets(tuple(items))]


def _model(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    model = context.model
    architecture = model.get("architecture")
    best_epoch = _one_based(model.get("best_epoch"))
    val_auc = as_float(model.get("val_auc"))
    sentence = (
        f"The model is {architecture}. " if isinstance(architecture, str) and architecture else ""
    )
    sentence += (
        "It was trained on the train split; the epoch kept was the one with the best AUC on "
        "the validation split"
    )
    if best_epoch is not None and val_auc is not None:
        sentence += f" (epoch {best_epoch}, validation AUC {val_auc:.3f})"
    sentence += (
        ". The evaluated split was not used to train the model or to choose the epoch. The "
        "full configuration, versions and hashes are in the appendix."
    )
    blocks: list[Block] = [Paragraph(sentence)]
    manifest = manifest_status(model)
    if manifest is not None:
        blocks.extend(
            [
                Subheading("Training manifest check"),
                _key_values(
                    [
                        ("Status", manifest.status or NOT_RECORDED),
                        (
                            "SHA-256 recorded by the checkpoint",
                            manifest.expected_sha256 or NOT_RECORDED,
                        ),
                        ("SHA-256 read at evaluation", manifest.actual_sha256 or NOT_RECORDED),
                    ]
                ),
            ]
        )
    blocks.extend(_folds_blocks(model))
    blocks.extend(_plain_method(metrics, context))
    return _section("model", blocks)


def _folds_blocks(model: Mapping[str, Any]) -> list[Block]:
    """A cross-validated run's folds: what the ensemble is, and each fold's training result."""
    folds = model.get("folds")
    if not isinstance(folds, Sequence) or not folds:
        return []
    rows = tuple(
        (
            fmt_value(get(fold, "fold")),
            fmt_int(_one_based(get(fold, "best_epoch"))),
            fmt_num(get(fold, "val_auc")),
            fmt_int(get(fold, "n_train")),
            fmt_int(get(fold, "n_val")),
        )
        for fold in folds
    )
    return [
        Subheading("Cross-validation folds"),
        Paragraph(
            f"An ensemble of {len(folds)} models: {fmt_value(model.get('ensemble'))}. Each "
            "fold's model trained on the other folds and was validated on its own; the test "
            "split was held out of every fold."
        ),
        Table(
            ("Fold", "Best epoch", "Validation AUC", "Training images", "Validation images"),
            rows,
            align="lrrrr",
        ),
    ]


def _one_based(epoch: object) -> object:
    """A 0-based epoch as training counts it, shown 1-based as ``usdcm train`` prints it."""
    return epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else epoch


def _cross_validation_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    """The out-of-fold result of a cross-validated run, beside the ensemble's test result."""
    cv = metrics.get("cross_validation")
    if not isinstance(cv, Mapping):
        return []
    auc = cv.get("auc")
    return [
        Subheading("Cross-validation (out-of-fold)"),
        Table(
            ("Result", "AUC", "95% CI", "Cases (positive)"),
            (
                (
                    f"Out-of-fold, {fmt_value(cv.get('level'))} level",
                    fmt_num(get(auc, "value")),
                    _ci_text(auc),
                    f"{fmt_int(cv.get('n'))} ({fmt_int(cv.get('n_positive'))})",
                ),
            ),
            align="lrrr",
        ),
        Paragraph(
            "Out-of-fold: every image outside the test split, predicted by the fold model "
            "that did not train on it (AUC with its DeLong interval). The results above are "
            "the ensemble's (the mean probability of the fold models) on the evaluated split; "
            "its threshold was chosen on the out-of-fold predictions."
        ),
    ]


def _proportion_row(name: str, entry: object, *, has_k: bool = True) -> tuple[Cell, ...]:
    """A metric row; ``has_k`` False for a statistic with no ``k/n`` (left blank)."""
    k_of_n = _or(fmt_fraction(entry), "") if has_k else ""
    return (name, _or(fmt_num(get(entry, "value")), "not computed"), _ci_text(entry), k_of_n)


def _ci_text(entry: object) -> str:
    return _or(fmt_ci(get(entry, "ci95")), "not computed")


def _auc_rows(auc: object) -> list[tuple[Cell, ...]]:
    """The AUC with its primary interval, then the other interval where it differs."""
    value = _or(fmt_num(get(auc, "value")), "not computed")
    method = interval_name(get(auc, "method"))
    auc_map = auc if isinstance(auc, Mapping) else {}
    rows: list[tuple[Cell, ...]] = [
        (f"AUC ({method}, primary)" if method else "AUC", value, _ci_text(auc), "")
    ]
    for key, name in (("delong_ci95", "DeLong"), ("bootstrap_ci95", "patient-clustered bootstrap")):
        if name.lower() in method.lower() or (key == "delong_ci95" and key not in auc_map):
            continue  # an older file's ci95 is DeLong's: not repeated
        rows.append((f"AUC ({name})", value, _ci_text({"ci95": get(auc, key)}), ""))
    return rows


def _results(metrics: Mapping[str, Any]) -> Section:
    rows: list[tuple[Cell, ...]] = _auc_rows(metrics.get("auc"))
    for key, name in (
        ("sensitivity", "Sensitivity"),
        ("specificity", "Specificity"),
        ("ppv", "PPV"),
        ("npv", "NPV"),
        ("accuracy", "Accuracy"),
    ):
        rows.append(_proportion_row(name, metrics.get(key)))
    rows.append(_proportion_row("Balanced accuracy", metrics.get("balanced_accuracy"), has_k=False))
    # no interval is computed for the average precision: a blank cell, not a missing value
    rows.append(
        ("Average precision", _or(fmt_num(get(metrics, "pr", "ap")), "not computed"), "", "")
    )
    blocks: list[Block] = [
        Table(("Metric", "Estimate", "95% CI", "k/n"), tuple(rows), align="lrrr"),
    ]
    threshold = metrics.get("threshold")
    exploratory = get(threshold, "exploratory") is True
    blocks.append(
        Paragraph(
            f"Threshold: {_threshold_text(metrics)}." + (" Exploratory." if exploratory else ""),
            "warning" if exploratory else "text",
        )
    )
    blocks.extend(_confusion_blocks(metrics.get("confusion_matrix")))
    prevalence = as_float(metrics.get("prevalence"))
    blocks.append(
        FigureRef(
            "pr",
            f"Precision-recall curve; AP {_or(fmt_num(get(metrics, 'pr', 'ap')), 'not computed')}."
            + (f" Dashed line: prevalence {prevalence:.3f}." if prevalence is not None else ""),
        )
    )
    blocks.extend(_multiclass_blocks(metrics.get("multiclass")))
    blocks.extend(_cross_validation_blocks(metrics))
    return _section("results", blocks)


def _confusion_blocks(matrix: object) -> list[Block]:
    labels = [str(label) for label in get(matrix, "labels") or []]
    counts = get(matrix, "counts") or []
    rates = get(matrix, "normalized") or []
    if not labels or len(counts) != len(labels):
        return [Subheading("Confusion matrix"), Paragraph("Not computed for these metrics.")]
    header = ("True \\ predicted", *labels)
    count_rows = tuple(
        (label, *(_or(fmt_int(cell), "not computed") for cell in row))
        for label, row in zip(labels, counts, strict=True)
    )
    rate_rows = tuple(
        (
            label,
            *(_or(fmt_num(cell), "undefined") for cell in _matrix_row(rates, index, len(labels))),
        )
        for index, label in enumerate(labels)
    )
    align = "l" + "r" * len(labels)
    return [
        Subheading("Confusion matrix (counts)"),
        Table(header, count_rows, align=align),
        Subheading("Confusion matrix (row-normalised)"),
        Table(header, rate_rows, align=align),
    ]


def _matrix_row(matrix: object, index: int, width: int) -> list[object]:
    """Row ``index`` of ``matrix``, padded with ``None`` (shown as n/a) where it is missing.

    >>> _matrix_row([[0.9, 0.1]], 0, 2), _matrix_row([[0.9, 0.1]], 1, 2), _matrix_row(None, 0, 1)
    ([0.9, 0.1], [None, None], [None])
    """
    row = matrix[index] if isinstance(matrix, Sequence) and index < len(matrix) else None
    cells = list(row) if isinstance(row, Sequence) and not isinstance(row, str) else []
    return (cells + [None] * width)[:width]


def _multiclass_blocks(multiclass: object) -> list[Block]:
    if not isinstance(multiclass, Mapping):
        return []
    per_class = multiclass.get("per_class")
    rows: list[tuple[Cell, ...]] = []
    if isinstance(per_class, Mapping):
        rows.extend(
            (str(name), _or(fmt_num(get(entry, "value")), "not computed"), _ci_text(entry))
            for name, entry in per_class.items()
        )
    macro = multiclass.get("macro")
    rows.append(
        ("macro average", _or(fmt_num(get(macro, "value")), "not computed"), _ci_text(macro))
    )
    return [
        Subheading(f"One-vs-rest AUC per class ({_or(fmt_value(multiclass.get('method')))})"),
        Table(("Class", "AUC", "95% CI"), tuple(rows), align="lrr"),
    ]


FAIRNESS_ATTRIBUTES = ("sex", "age_band")
"""Sociodemographic subgroup attributes (TRIPOD+AI item 14); every other is a scanner group."""


def _subgroup_rows(subgroups: object, attributes: Sequence[str]) -> list[tuple[Cell, ...]]:
    rows: list[tuple[Cell, ...]] = []
    if not isinstance(subgroups, Mapping):
        return rows
    for attribute in attributes:
        groups = subgroups.get(attribute)
        if not isinstance(groups, Sequence) or isinstance(groups, str):
            continue
        for group in groups:
            too_small = get(group, "too_small") is True
            reason = fmt_value(get(group, "reason")) if get(group, "reason") else ""
            note = ("too small" + (f": {reason}" if reason else "")) if too_small else reason
            rows.append(
                (
                    _humanise(str(attribute)),
                    _or(fmt_value(get(group, "group")), "(unknown)"),
                    _or(fmt_int(get(group, "n"))),
                    _or(fmt_int(get(group, "n_positive"))),
                    _or(fmt_percent(get(group, "prevalence")), "undefined"),
                    _estimate(get(group, "auc")),
                    note,
                )
            )
    return rows


_SUBGROUP_HEADER = ("Attribute", "Group", "n", "Positives", "Prevalence", "AUC (95% CI)", "Note")
_TOO_SMALL_NOTE = (
    "Groups marked too small have too few cases or positives for a stable estimate; do not "
    "read their AUC as evidence either way."
)


def _subgroups(metrics: Mapping[str, Any]) -> Section:
    subgroups = metrics.get("subgroups")
    attributes = (
        [str(name) for name in subgroups if str(name) not in FAIRNESS_ATTRIBUTES]
        if isinstance(subgroups, Mapping)
        else []
    )
    rows = _subgroup_rows(subgroups, attributes)
    if not rows:
        return _section(
            "subgroups", [Paragraph("No scanner subgroup analysis was requested for this report.")]
        )
    return _section(
        "subgroups",
        [
            Paragraph(
                "Performance by scanner (manufacturer and model): a check of robustness across "
                "acquisition equipment, not of fairness across patients."
            ),
            Table(_SUBGROUP_HEADER, tuple(rows), align="llrrrrl"),
            Paragraph(_TOO_SMALL_NOTE, "note"),
        ],
    )


_UNKNOWN_GROUPS = frozenset({"", "unknown", "(unknown)"})


def _all_unknown(groups: object) -> bool:
    """Whether every group of a subgroup list is the unknown group (or there is none).

    >>> _all_unknown([{"group": "(unknown)"}]), _all_unknown([{"group": "F"}]), _all_unknown([])
    (True, False, True)
    """
    if not isinstance(groups, Sequence) or isinstance(groups, str):
        return True
    return all(str(get(group, "group") or "").lower() in _UNKNOWN_GROUPS for group in groups)


def _fairness(metrics: Mapping[str, Any]) -> Section:
    subgroups = metrics.get("subgroups")
    rows = _subgroup_rows(subgroups, FAIRNESS_ATTRIBUTES)
    missing = [
        _humanise(name)
        for name in FAIRNESS_ATTRIBUTES
        if not isinstance(subgroups, Mapping) or name not in subgroups
    ]
    blocks: list[Block] = [
        Paragraph(
            "Performance by patient sex (DICOM PatientSex) and 10-year age band (from "
            "PatientAge, or the birth date at the study date; 90 and over grouped). Ingest "
            "records only the band, never a date; an empty value is grouped as (unknown)."
        )
    ]
    if rows:
        blocks.extend(
            [
                Table(_SUBGROUP_HEADER, tuple(rows), align="llrrrrl"),
                Paragraph(_TOO_SMALL_NOTE, "note"),
            ]
        )
    unknown = [
        _humanise(name)
        for name in FAIRNESS_ATTRIBUTES
        if name not in missing and _all_unknown(get(subgroups, name))
    ]
    if unknown:
        blocks.append(
            Paragraph(
                f"{' and '.join(unknown)}: unknown for every evaluated case (predictions "
                "written before usdcm recorded them, or headers without them), so fairness "
                "across these groups is not assessed here.",
                "warning",
            )
        )
    if missing:
        blocks.append(
            Paragraph(
                f"{' and '.join(missing)}: not in these metrics (metrics.json written before "
                "usdcm recorded them, or --subgroup chose other columns), so fairness across "
                "these groups is not assessed here.",
                "warning",
            )
        )
    return _section("fairness", blocks)


def _recalibration_blocks(metrics: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = [Subheading("Recalibration (model updating)")]
    if "recalibration" not in metrics:
        blocks.append(
            Paragraph(
                "Not computed for these metrics (metrics.json written before usdcm fitted "
                "recalibration)."
            )
        )
        return blocks
    recalibration = metrics.get("recalibration")
    if not isinstance(recalibration, Mapping):
        blocks.append(
            Paragraph(
                "Not fitted: the predictions hold no validation (or out-of-fold) rows to fit "
                "it on, and it is never fitted on the evaluated rows."
            )
        )
        return blocks
    rows: list[tuple[Cell, ...]] = []
    for key, name in (
        ("uncalibrated", "Uncalibrated (as reported above)"),
        ("logistic", "Logistic recalibration"),
        ("isotonic", "Isotonic recalibration"),
    ):
        entry = recalibration.get(key)
        if not isinstance(entry, Mapping):
            continue
        rows.append(
            (
                name,
                _or(fmt_num(entry.get("brier")), "not computed"),
                _or(fmt_num(entry.get("ece")), "not computed"),
                _or(fmt_num(entry.get("intercept")), ""),
                _or(fmt_num(entry.get("slope")), ""),
            )
        )
    if rows:
        blocks.append(
            Table(
                ("Probabilities", "Brier score", "ECE", "Intercept", "Slope"),
                tuple(rows),
                align="lrrrr",
            )
        )
    fitted_on = recalibration.get("fitted_on")
    n_fit = as_int(recalibration.get("n_fit"))
    text = f"Fitted on {fitted_on or 'the validation rows'}"
    text += f" ({n_fit:,} cases)" if n_fit is not None else ""
    text += f" and evaluated on the {_units(metrics)} above. "
    note = recalibration.get("note")
    text += (
        _sentence(str(note))
        if isinstance(note, str) and note
        else "Reported beside, never replacing, the uncalibrated figures."
    )
    blocks.append(Paragraph(text, "note"))
    return blocks


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else f"{text}."


def _calibration(metrics: Mapping[str, Any]) -> Section:
    bins = as_int(get(metrics, "ece", "bins"))
    rows: tuple[tuple[Cell, ...], ...] = (
        ("Brier score", _or(fmt_num(metrics.get("brier")), "not computed")),
        (
            f"Expected calibration error ({bins} bins)" if bins else "Expected calibration error",
            _or(fmt_num(get(metrics, "ece", "value")), "not computed"),
        ),
    )
    return _section(
        "calibration",
        [
            Table(("Measure", "Value"), rows, align="lr"),
            FigureRef(
                "reliability",
                "Reliability diagram: observed frequency of the positive class against the "
                "mean predicted probability per bin (top), cases per bin (bottom).",
            ),
            *_recalibration_blocks(metrics),
        ],
    )


_DECISION_POINTS = (0.05, 0.1, 0.2, 0.3, 0.5)


def _clinical_utility(metrics: Mapping[str, Any]) -> Section:
    curve = metrics.get("decision_curve")
    thresholds = get(curve, "thresholds")
    model = get(curve, "model")
    treat_all = get(curve, "treat_all")
    if not (
        isinstance(thresholds, Sequence)
        and isinstance(model, Sequence)
        and isinstance(treat_all, Sequence)
        and thresholds
        and len(thresholds) == len(model) == len(treat_all)
    ):
        return _section(
            "clinical-utility",
            [
                Paragraph(
                    "No decision curve in these metrics (metrics.json written before usdcm "
                    "computed one)."
                ),
                FigureRef("decision", "Decision curve: not computed for these metrics."),
            ],
        )
    points = [
        (as_float(t), as_float(m), as_float(a))
        for t, m, a in zip(thresholds, model, treat_all, strict=True)
    ]
    rows: list[tuple[Cell, ...]] = []
    for wanted in _DECISION_POINTS:
        for t, m, a in points:
            if t is not None and abs(t - wanted) < 1e-9:
                rows.append(
                    (
                        f"{wanted:.2f}",
                        _or(fmt_num(m), "undefined"),
                        _or(fmt_num(a), "undefined"),
                        "0.000",
                    )
                )
    useful = [
        t
        for t, m, a in points
        if t is not None and m is not None and a is not None and m > max(a, 0.0)
    ]
    if useful:
        summary = (
            f"The model's net benefit exceeds both treating everyone and treating no one at "
            f"threshold probabilities from {min(useful):.2f} to {max(useful):.2f} "
            f"({len(useful)} of {len(points)} thresholds examined)."
        )
    else:
        summary = (
            "At no threshold probability examined does the model's net benefit exceed both "
            "treating everyone and treating no one."
        )
    reference = get(curve, "reference") or "Vickers & Elkin 2006"
    blocks: list[Block] = [
        Paragraph(summary),
        FigureRef(
            "decision",
            "Decision curve: net benefit of acting on the model against acting on everyone "
            "(treat all) and no one (treat none), by the threshold probability at which one "
            f"would act ({reference}).",
        ),
    ]
    if rows:
        blocks.append(
            Table(
                ("Threshold probability", "Model", "Treat all", "Treat none"),
                tuple(rows),
                align="rrrr",
            )
        )
    blocks.append(
        Paragraph(
            "Net benefit = true positives/n - false positives/n x pt/(1 - pt), predicted "
            "positive when the probability is at or above pt. It is computed on the evaluated "
            "cases, at their prevalence; the threshold probability expresses how many false "
            "positives one accepts per true positive, not the classification threshold above.",
            "note",
        )
    )
    return _section("clinical-utility", blocks)


def _sample_size(metrics: Mapping[str, Any]) -> Section:
    size = metrics.get("sample_size")
    if not isinstance(size, Mapping):
        return _section(
            "sample-size",
            [
                Paragraph(
                    "The sample size needed for a target precision was not computed for these "
                    "metrics (metrics.json written before usdcm computed it). The achieved "
                    "intervals are in the Results: sensitivity "
                    f"{_ci_text(metrics.get('sensitivity'))}, "
                    f"specificity {_ci_text(metrics.get('specificity'))}, AUC "
                    f"{_ci_text(metrics.get('auc'))}."
                )
            ],
        )
    blocks: list[Block] = []
    explanation = size.get("explanation")
    if isinstance(explanation, str) and explanation:
        blocks.append(Paragraph(explanation))
    width = as_float(size.get("target_width"))
    confidence = as_float(size.get("confidence"))
    achieved = size.get("achieved_width")
    rows: list[tuple[Cell, ...]] = [
        ("Method", _or(fmt_value(size.get("method")))),
        (
            "Target",
            (
                f"{confidence:.0%} CI of full width {width:.2f} (±{width / 2:.2f}) for "
                "sensitivity and specificity"
            )
            if width is not None and confidence is not None
            else NOT_RECORDED,
        ),
        ("Expected sensitivity", _or(fmt_num(size.get("expected_sensitivity")))),
        ("Expected specificity", _or(fmt_num(size.get("expected_specificity")))),
        ("Positive cases needed", _or(fmt_int(size.get("needed_positive")))),
        ("Negative cases needed", _or(fmt_int(size.get("needed_negative")))),
        ("Total needed at this prevalence", _or(fmt_int(size.get("needed_total")))),
        ("Positive cases evaluated", _or(fmt_int(size.get("n_positive")))),
        ("Negative cases evaluated", _or(fmt_int(size.get("n_negative")))),
        ("Achieved CI width, sensitivity", _or(fmt_num(get(achieved, "sensitivity")), "undefined")),
        ("Achieved CI width, specificity", _or(fmt_num(get(achieved, "specificity")), "undefined")),
        ("Achieved CI width, AUC", _or(fmt_num(get(achieved, "auc")), "undefined")),
    ]
    blocks.append(Table(("Item", "Value"), tuple(rows), align="lr"))
    if size.get("below_target") is True:
        blocks.append(
            Paragraph(
                "The evaluated set is smaller than the target precision needs; see Limitations.",
                "warning",
            )
        )
    return _section("sample-size", blocks)


def is_dicom_uid(text: str) -> bool:
    """Whether ``text`` has the form of a DICOM UID (numbers joined by dots, up to 64 chars).

    A keyed pseudonym (24 hex characters) never has this form.

    >>> is_dicom_uid("1.2.826.0.1.3680043.8.498.1"), is_dicom_uid("9cd5f83443563b53e10581f1")
    (True, False)
    >>> is_dicom_uid("0.5"), is_dicom_uid("im_01")
    (True, False)
    """
    text = text.strip()
    return len(text) <= 64 and _DICOM_UID.fullmatch(text) is not None


def _case_name(value: object) -> str:
    """A failure case's or image's id as the report shows it: never a DICOM UID."""
    text = fmt_value(value)
    return WITHHELD_UID if is_dicom_uid(text) else text


def thumbnail_name(index: int, case_id: str) -> str:
    """A file-safe figure name for the thumbnail of failure case ``case_id``.

    >>> thumbnail_name(3, "pk_7f3a/study 2")
    'failure-03-pk_7f3a-study-2-57bf06'
    """
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", case_id).strip("-")[:40] or "case"
    digest = hashlib.sha256(case_id.encode("utf-8")).hexdigest()[:6]
    return f"failure-{index:02d}-{slug}-{digest}"


def _failure_table(
    cases: object, thumbnails: Mapping[str, bytes], figures: dict[str, bytes]
) -> Block:
    if not isinstance(cases, Sequence) or not cases:
        return Paragraph("None.")
    with_thumbnails = any(str(get(case, "id")) in thumbnails for case in cases)
    rows: list[tuple[Cell, ...]] = []
    for case in list(cases)[:_MAX_FAILURES]:
        case_id = fmt_value(get(case, "id"))
        image_ids = get(case, "image_ids") or []
        shown = ", ".join(_case_name(image) for image in list(image_ids)[:_MAX_IMAGE_IDS])
        if len(image_ids) > _MAX_IMAGE_IDS:
            shown += f" (+{len(image_ids) - _MAX_IMAGE_IDS} more)"
        name = _case_name(case_id)
        row: list[Cell] = [
            name,
            fmt_num(get(case, "prob")),
            fmt_value(get(case, "label")),
            shown or NOT_RECORDED,
        ]
        if with_thumbnails:
            png = thumbnails.get(case_id)
            if png is not None and png.startswith(PNG_SIGNATURE):
                figure = thumbnail_name(len(figures), "case" if name == WITHHELD_UID else name)
                figures[figure] = png
                row.append(FigureRef(figure, f"thumbnail of {name}", thumbnail=True))
            else:
                row.append("no thumbnail")
        rows.append(tuple(row))
    header: tuple[str, ...] = ("Case key", "Predicted probability", "True label", "Images")
    if with_thumbnails:
        header = (*header, "Thumbnail")
    return Table(header, tuple(rows), align="lrll" + ("l" if with_thumbnails else ""))


def _failures(
    metrics: Mapping[str, Any], context: ReportContext, figures: dict[str, bytes]
) -> Section:
    failures = metrics.get("failures")
    blocks: list[Block] = [
        Paragraph(
            f"The most confident errors at the threshold, at most {_MAX_FAILURES} of each kind, "
            "named by the keyed pseudonym of their level (image_id, series_key, study_key or "
            "patient_key), never by a patient identifier or a DICOM UID.",
        ),
        Subheading("False positives"),
        _failure_table(get(failures, "false_positives"), context.failure_thumbnails, figures),
        Subheading("False negatives"),
        _failure_table(get(failures, "false_negatives"), context.failure_thumbnails, figures),
    ]
    return _section("failures", blocks)


def _limitations(flags: Sequence[Any]) -> Section:
    blocks: list[Block] = []
    if flags:
        blocks.append(Bullets(tuple(f"{flag.message} [{flag.code}]" for flag in flags)))
    else:
        blocks.append(
            Paragraph(
                "No limitation was flagged automatically. This does not mean the study has "
                "none: read the intended use, data and split sections.",
                "note",
            )
        )
    blocks.append(
        Paragraph(
            f"Checked automatically: n < {MIN_N} or positives < {MIN_POSITIVES}; AUC 95% CI "
            f"wider than {MAX_AUC_CI_WIDTH}; a single manufacturer or model; prevalence "
            f"differing by more than {MAX_PREVALENCE_SHIFT} between splits; an exploratory "
            "threshold; subgroups too small; leakage check failed, not checkable or not run; "
            "training manifest changed since training; AUC undefined; no reference standard "
            "stated; fewer cases than the target precision needs.",
            "note",
        )
    )
    return _section("limitations", blocks)


def _reproducibility(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    model = context.model
    blocks: list[Block] = [
        Paragraph(
            "The full record of this run: enough to reproduce it and to check that a later run "
            "is the same one."
        ),
        Subheading("Commands"),
    ]
    if context.commands:
        blocks.append(Code(tuple(str(command) for command in context.commands)))
    else:
        blocks.append(Paragraph("Not recorded."))
    hashes: list[tuple[str, object]] = [
        ("Checkpoint SHA-256", model.get("checkpoint_sha256") or NOT_RECORDED),
        ("Architecture", model.get("architecture") or NOT_RECORDED),
    ]
    manifest = manifest_status(model)
    if manifest is not None:
        hashes.append(("Training manifest SHA-256", manifest.actual_sha256 or NOT_RECORDED))
    blocks.extend([Subheading("Model and hashes"), _key_values(hashes)])
    config = model.get("config")
    blocks.append(Subheading("Configuration"))
    if isinstance(config, Mapping) and config:
        blocks.append(_key_values(flatten(config)))
    else:
        blocks.append(Paragraph("Not recorded."))
    versions = model.get("versions")
    blocks.append(Subheading("Versions"))
    if isinstance(versions, Mapping) and versions:
        blocks.append(_key_values(list(versions.items())))
    else:
        blocks.append(Paragraph("Not recorded."))
    bootstrap = metrics.get("bootstrap")
    blocks.append(Subheading("Bootstrap"))
    blocks.append(
        _key_values(
            [
                ("Resamples", get(bootstrap, "resamples")),
                ("Seed", get(bootstrap, "seed")),
                ("Cluster", get(bootstrap, "cluster")),
                ("Stratified", get(bootstrap, "stratified")),
                ("Skipped resamples", get(bootstrap, "skipped")),
            ]
        )
    )
    provenance = metrics.get("provenance")
    if isinstance(provenance, Mapping) and provenance:
        blocks.extend([Subheading("Provenance"), _key_values(flatten(provenance))])
    known = {
        "architecture",
        "checkpoint_sha256",
        "best_epoch",
        "val_auc",
        "config",
        "versions",
        "manifest_check",
        "ensemble",
        "folds",
    }
    extra = [(name, value) for name, value in flatten(model) if name.split(".")[0] not in known]
    if extra:
        blocks.extend([Subheading("More about the model"), _key_values(extra)])
    return _section("reproducibility", blocks)


def _tested_externally(metrics: Mapping[str, Any], context: ReportContext) -> bool:
    """Whether the evaluated rows are an external set (CLAIM 33) rather than internal (32)."""
    split = context.flow.get("evaluated_split") or get(metrics, "provenance", "evaluated_split")
    return bool(split == "external")


def build_document(
    metrics: Mapping[str, Any],
    context: ReportContext | None = None,
    *,
    figures: Mapping[str, bytes] | None = None,
) -> Document:
    """Lay out the report: every section of :data:`~usdcm.report.checklist.SECTIONS`, in order.

    The result comes first, then the data, the method in plain words and the limitations;
    the full configuration, versions and hashes close the report as an appendix.

    Parameters
    ----------
    metrics : mapping
        The dict of :func:`usdcm.metrics.summarize`; a missing key is stated in words
        (not recorded, not computed) where the report needs it.
    context : ReportContext, optional
        Intended use, data, split, model, commands, reference standard, flow counts,
        de-identification and study years.
    figures : mapping of str to bytes, optional
        PNGs by name; by default :func:`~usdcm.report.figures.render_figures` of ``metrics``
        and ``context.flow``. Failure thumbnails from ``context`` are added to them.

    Returns
    -------
    Document
        The sections and every PNG they reference.

    Examples
    --------
    >>> document = build_document({}, figures={})
    >>> [section.title for section in document.sections][:3]
    ['Summary', 'Intended use', 'Results']
    """
    context = context or ReportContext()
    all_figures = dict(render_figures(metrics, context.flow) if figures is None else figures)
    flags = flag_limitations(metrics, context)
    level = metrics.get("level")
    n = as_int(metrics.get("n"))
    subtitle = "; ".join(
        part
        for part in (
            f"{level}-level validation" if isinstance(level, str) and level else "validation",
            f"positive class {metrics.get('positive_class')}"
            if metrics.get("positive_class")
            else "",
            f"n = {n:,}" if n is not None else "",
        )
        if part
    )
    leakage = leakage_status(context.split)
    if leakage is not None and leakage.failed:
        subtitle = f"LEAKAGE CHECK FAILED (see Summary). {subtitle}"
    external = _tested_externally(metrics, context)
    sections: tuple[Section, ...] = (
        _summary(metrics, len(flags), context),
        _intended_use(context),
        _results(metrics),
        _subgroups(metrics),
        _fairness(metrics),
        _calibration(metrics),
        _clinical_utility(metrics),
        _failures(metrics, context, all_figures),
        _data(metrics, context),
        _reference_standard(context),
        _missing_data(metrics, context),
        _split(context),
        _sample_size(metrics),
        _model(metrics, context),
        _limitations(flags),
        _reproducibility(metrics, context),
    )
    sections = tuple(
        replace(section, checklist=SECTION_BY_KEY[section.key].tested_on(external).checklist)
        for section in sections
    )
    return Document(
        title=context.title or "Clinical validation report",
        subtitle=subtitle,
        sections=sections,
        figures=all_figures,
    )
