"""The report as a format-free document: sections of paragraphs, tables, figures and code.

Owns what the report says and in which order, so the HTML and the Markdown report hold the
same content; never escapes text, never renders a figure's pixels itself and never writes a
file. Every text here is plain: the renderers escape it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from usdcm.report._format import (
    NA,
    count_items,
    flatten,
    fmt_ci,
    fmt_estimate,
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
    return Table(("Item", "Value"), tuple((name, fmt_value(value)) for name, value in pairs))


def _extras(mapping: Mapping[str, Any], known: set[str]) -> list[Block]:
    """Keys the caller passed that the section has no place for, as a key-value table."""
    extra = [(name, value) for name, value in flatten(mapping) if name.split(".")[0] not in known]
    return [Subheading("Other details"), _key_values(extra)] if extra else []


def _counts_table(header: str, value: object) -> Table | None:
    items = count_items(value)
    if not items:
        return None
    return Table((header, "Count"), tuple(items), align="lr")


def _exploratory_note(threshold: object) -> str:
    """``""`` for a threshold fixed before the test set, else what the reader must know.

    >>> _exploratory_note({"exploratory": False}), _exploratory_note({"exploratory": True})
    ('', '; exploratory')
    >>> _exploratory_note({})
    '; exploratory: n/a'
    """
    exploratory = get(threshold, "exploratory")
    if exploratory is False:
        return ""
    return "; exploratory" if exploratory is True else f"; exploratory: {NA}"


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


def _summary(metrics: Mapping[str, Any], n_limitations: int, context: ReportContext) -> Section:
    threshold = metrics.get("threshold")
    rows: list[tuple[Cell, ...]] = [
        ("AUC", fmt_estimate(metrics.get("auc"))),
        ("Sensitivity", f"{fmt_estimate(metrics.get('sensitivity'))}"),
        ("Specificity", f"{fmt_estimate(metrics.get('specificity'))}"),
        (
            "Threshold",
            f"{fmt_num(get(threshold, 'value'))} ({fmt_value(get(threshold, 'rule'))}, "
            f"chosen on {fmt_value(get(threshold, 'chosen_on'))}"
            f"{_exploratory_note(threshold)})",
        ),
        ("n", f"{fmt_int(metrics.get('n'))} ({fmt_int(metrics.get('n_positive'))} positive)"),
        ("Prevalence", fmt_percent(metrics.get("prevalence"))),
        ("Level", fmt_value(metrics.get("level"))),
        ("Positive class", fmt_value(metrics.get("positive_class"))),
    ]
    blocks: list[Block] = [Table(("Measure", "Estimate"), tuple(rows))]
    if get(threshold, "exploratory") is True:
        blocks.insert(
            0,
            Paragraph(
                "EXPLORATORY: the threshold was not fixed on independent data before the test "
                "set was seen; results at the threshold are optimistic and not a validation.",
                "banner",
            ),
        )
    blocks.append(Paragraph(f"Aggregation: {fmt_value(metrics.get('aggregation'))}"))
    leakage = leakage_status(context.split)
    if leakage is not None and leakage.failed:
        blocks.insert(0, Paragraph(leakage_banner(leakage), "banner"))  # the first thing said
    elif leakage is not None and not leakage.passed:
        blocks.append(
            Paragraph(
                f"Leakage check: {leakage.status or NA}; whether test patients were also "
                "trained or validated on is not known. See Limitations.",
                "warning",
            )
        )
    manifest = manifest_status(context.model)
    if manifest is not None and manifest.changed:
        blocks.append(
            Paragraph(
                "The training manifest changed after training (the checkpoint recorded sha256 "
                f"{manifest.expected_sha256 or NA}, evaluation read "
                f"{manifest.actual_sha256 or NA}); labels or splits may differ from those the "
                "model was trained on. See Limitations.",
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
    text = context.intended_use.strip() or f"Not stated ({NA})."
    return _section("intended-use", [Paragraph(text)])


def _data(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    data = context.data
    blocks: list[Block] = []
    sources = data.get("sources")
    blocks.append(Subheading("Sources"))
    if isinstance(sources, Sequence) and not isinstance(sources, str) and sources:
        blocks.append(Bullets(tuple(fmt_value(source) for source in sources)))
    else:
        blocks.append(Paragraph(fmt_value(sources) if sources else f"Not stated ({NA})."))
    for key, title, header in (
        ("manufacturers", "Manufacturers", "Manufacturer"),
        ("models", "Scanner models", "Model"),
        ("labels", "Labels", "Label"),
    ):
        table = _counts_table(header, data.get(key))
        if table is not None:
            blocks.extend([Subheading(title), table])
    counts = metrics.get("counts")
    if isinstance(counts, Mapping) and counts:
        blocks.append(Subheading("Test set counts per level"))
        blocks.append(
            Table(
                ("Level", "Count"),
                tuple((str(level), fmt_int(count)) for level, count in counts.items()),
                align="lr",
            )
        )
    level = fmt_value(metrics.get("level"))
    blocks.append(
        Paragraph(
            f"At the {level} level the test set holds {fmt_int(metrics.get('n'))} cases, "
            f"{fmt_int(metrics.get('n_positive'))} of them "
            f"{fmt_value(metrics.get('positive_class'))} (prevalence "
            f"{fmt_percent(metrics.get('prevalence'))})."
        )
    )
    blocks.append(Subheading("Ingest exclusions"))
    exclusions = _counts_table("Reason", data.get("exclusions"))
    blocks.append(exclusions if exclusions is not None else Paragraph(f"None reported ({NA})."))
    blocks.append(Paragraph(PRIVACY_STATEMENT, "note"))
    blocks.extend(_extras(data, {"sources", "manufacturers", "models", "labels", "exclusions"}))
    return _section("data", blocks)


def _leakage_rows(check: LeakageStatus | None) -> list[tuple[Cell, ...]]:
    """The leakage check as table rows: status, then detail and counts where recorded."""
    if check is None:
        return [("Leakage check", NA)]
    rows: list[tuple[Cell, ...]] = [("Leakage check", check.status or NA)]
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
                ("Split source", fmt_value(split.get("split_source"))),
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
                (str(name), *(fmt_int(get(value, column)) for column in columns))
                for name, value in counts.items()
            )
            table = Table(("Split", *columns), rows, align="l" + "r" * len(columns))
        else:
            rows = tuple((str(name), fmt_int(value)) for name, value in counts.items())
            table = Table(("Split", "Count"), rows, align="lr")
        blocks.extend([Subheading("Counts per split"), table])
    if context.prevalence_by_split:
        blocks.extend(
            [
                Subheading("Prevalence per split"),
                Table(
                    ("Split", "Prevalence"),
                    tuple(
                        (str(name), fmt_percent(value))
                        for name, value in context.prevalence_by_split.items()
                    ),
                    align="lr",
                ),
            ]
        )
    blocks.extend(_extras(split, {"split_source", "leakage_check", "counts"}))
    return _section("split", blocks)


def _model(context: ReportContext) -> Section:
    model = context.model
    blocks: list[Block] = [
        _key_values(
            [
                ("Architecture", model.get("architecture")),
                ("Checkpoint SHA-256", model.get("checkpoint_sha256")),
                ("Best epoch", model.get("best_epoch")),
                ("Validation AUC", fmt_num(model.get("val_auc"))),
            ]
        )
    ]
    manifest = manifest_status(model)
    if manifest is not None:
        blocks.extend(
            [
                Subheading("Training manifest check"),
                _key_values(
                    [
                        ("Status", manifest.status or NA),
                        ("SHA-256 recorded by the checkpoint", manifest.expected_sha256 or NA),
                        ("SHA-256 read at evaluation", manifest.actual_sha256 or NA),
                    ]
                ),
            ]
        )
    blocks.extend(_folds_blocks(model))
    config = model.get("config")
    if isinstance(config, Mapping) and config:
        blocks.extend([Subheading("Configuration"), _key_values(flatten(config))])
    versions = model.get("versions")
    if isinstance(versions, Mapping) and versions:
        blocks.extend([Subheading("Versions"), _key_values(list(versions.items()))])
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
    blocks.extend(_extras(model, known))
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
    """A metric row; ``has_k`` False for a statistic with no ``k/n`` (left blank, not n/a)."""
    k_of_n = fmt_fraction(entry) if has_k else ""
    return (name, fmt_num(get(entry, "value")), _ci_text(entry), k_of_n)


def _ci_text(entry: object) -> str:
    return fmt_ci(get(entry, "ci95"))


def _results(metrics: Mapping[str, Any]) -> Section:
    auc = metrics.get("auc")
    rows: list[tuple[Cell, ...]] = [
        (f"AUC ({fmt_value(get(auc, 'method'))})", fmt_num(get(auc, "value")), _ci_text(auc), ""),
    ]
    bootstrap_ci = get(auc, "bootstrap_ci95")
    rows.append(
        ("AUC (bootstrap)", fmt_num(get(auc, "value")), _ci_text({"ci95": bootstrap_ci}), "")
    )
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
    rows.append(("Average precision", fmt_num(get(metrics, "pr", "ap")), "", ""))
    blocks: list[Block] = [
        Table(("Metric", "Estimate", "95% CI", "k/n"), tuple(rows), align="lrrr"),
    ]
    threshold = metrics.get("threshold")
    exploratory = get(threshold, "exploratory") is True
    blocks.append(
        Paragraph(
            f"Threshold {fmt_num(get(threshold, 'value'))} on the predicted probability of "
            f"{fmt_value(metrics.get('positive_class'))}, rule "
            f"{fmt_value(get(threshold, 'rule'))}, chosen on "
            f"{fmt_value(get(threshold, 'chosen_on'))}"
            + (" (exploratory)." if exploratory else "."),
            "warning" if exploratory else "text",
        )
    )
    blocks.extend(_confusion_blocks(metrics.get("confusion_matrix")))
    blocks.append(FigureRef("confusion", "Confusion matrix: counts and row-normalised rates."))
    blocks.append(FigureRef("roc", f"ROC curve; AUC {fmt_estimate(auc)}. Dashed line: chance."))
    blocks.append(
        FigureRef(
            "pr",
            f"Precision-recall curve; AP {fmt_num(get(metrics, 'pr', 'ap'))}. Dashed line: "
            f"prevalence {fmt_num(metrics.get('prevalence'))}.",
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
        return [Subheading("Confusion matrix"), Paragraph(f"Not available ({NA}).")]
    header = ("True \\ predicted", *labels)
    count_rows = tuple(
        (label, *(fmt_int(cell) for cell in row)) for label, row in zip(labels, counts, strict=True)
    )
    rate_rows = tuple(
        (label, *(fmt_num(cell) for cell in _matrix_row(rates, index, len(labels))))
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
            (str(name), fmt_num(get(entry, "value")), _ci_text(entry))
            for name, entry in per_class.items()
        )
    macro = multiclass.get("macro")
    rows.append(("macro average", fmt_num(get(macro, "value")), _ci_text(macro)))
    return [
        Subheading(f"One-vs-rest AUC per class ({fmt_value(multiclass.get('method'))})"),
        Table(("Class", "AUC", "95% CI"), tuple(rows), align="lrr"),
    ]


def _subgroups(metrics: Mapping[str, Any]) -> Section:
    subgroups = metrics.get("subgroups")
    rows: list[tuple[Cell, ...]] = []
    if isinstance(subgroups, Mapping):
        for attribute, groups in subgroups.items():
            if not isinstance(groups, Sequence):
                continue
            for group in groups:
                too_small = get(group, "too_small") is True
                reason = fmt_value(get(group, "reason")) if get(group, "reason") else ""
                note = ("too small" + (f": {reason}" if reason else "")) if too_small else reason
                rows.append(
                    (
                        str(attribute),
                        fmt_value(get(group, "group")),
                        fmt_int(get(group, "n")),
                        fmt_int(get(group, "n_positive")),
                        fmt_percent(get(group, "prevalence")),
                        fmt_estimate(get(group, "auc")),
                        note,
                    )
                )
    if not rows:
        return _section("subgroups", [Paragraph(f"No subgroup analysis ({NA}).")])
    table = Table(
        ("Attribute", "Group", "n", "Positives", "Prevalence", "AUC (95% CI)", "Note"),
        tuple(rows),
        align="llrrrrl",
    )
    return _section(
        "subgroups",
        [
            table,
            Paragraph(
                "Groups marked too small have too few cases or positives for a stable "
                "estimate; do not read their AUC as evidence either way.",
                "note",
            ),
        ],
    )


def _calibration(metrics: Mapping[str, Any]) -> Section:
    bins = get(metrics, "ece", "bins")
    rows: tuple[tuple[Cell, ...], ...] = (
        ("Brier score", fmt_num(metrics.get("brier"))),
        (
            f"Expected calibration error ({fmt_value(bins)} bins)",
            fmt_num(get(metrics, "ece", "value")),
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
        ],
    )


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
            shown or NA,
        ]
        if with_thumbnails:
            png = thumbnails.get(case_id)
            if png is not None and png.startswith(PNG_SIGNATURE):
                figure = thumbnail_name(len(figures), "case" if name == WITHHELD_UID else name)
                figures[figure] = png
                row.append(FigureRef(figure, f"thumbnail of {name}", thumbnail=True))
            else:
                row.append(NA)
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
            "training manifest changed since training; AUC undefined.",
            "note",
        )
    )
    return _section("limitations", blocks)


def _reproducibility(metrics: Mapping[str, Any], context: ReportContext) -> Section:
    blocks: list[Block] = [Subheading("Commands")]
    if context.commands:
        blocks.append(Code(tuple(str(command) for command in context.commands)))
    else:
        blocks.append(Paragraph(f"Not recorded ({NA})."))
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
    versions = context.model.get("versions")
    blocks.append(Subheading("Versions"))
    if isinstance(versions, Mapping) and versions:
        blocks.append(_key_values(list(versions.items())))
    else:
        blocks.append(Paragraph(f"Not recorded ({NA})."))
    blocks.append(_key_values([("Checkpoint SHA-256", context.model.get("checkpoint_sha256"))]))
    provenance = metrics.get("provenance")
    if isinstance(provenance, Mapping) and provenance:
        blocks.extend([Subheading("Provenance"), _key_values(flatten(provenance))])
    return _section("reproducibility", blocks)


def build_document(
    metrics: Mapping[str, Any],
    context: ReportContext | None = None,
    *,
    figures: Mapping[str, bytes] | None = None,
) -> Document:
    """Lay out the report: every section of :data:`~usdcm.report.checklist.SECTIONS`, in order.

    Parameters
    ----------
    metrics : mapping
        The dict of :func:`usdcm.metrics.summarize`; missing keys and ``None`` values show
        as ``"n/a"``.
    context : ReportContext, optional
        Intended use, data, split, model and commands.
    figures : mapping of str to bytes, optional
        PNGs by name; by default :func:`~usdcm.report.figures.render_figures` of ``metrics``.
        Failure thumbnails from ``context`` are added to them.

    Returns
    -------
    Document
        The sections and every PNG they reference.

    Examples
    --------
    >>> document = build_document({}, figures={})
    >>> [section.title for section in document.sections][:3]
    ['Summary', 'Intended use', 'Data']
    """
    context = context or ReportContext()
    all_figures = dict(render_figures(metrics) if figures is None else figures)
    flags = flag_limitations(metrics, context)
    subtitle = (
        f"{fmt_value(metrics.get('level'))}-level validation; positive class "
        f"{fmt_value(metrics.get('positive_class'))}; n = {fmt_int(metrics.get('n'))}"
    )
    leakage = leakage_status(context.split)
    if leakage is not None and leakage.failed:
        subtitle = f"LEAKAGE CHECK FAILED (see Summary). {subtitle}"
    sections = (
        _summary(metrics, len(flags), context),
        _intended_use(context),
        _data(metrics, context),
        _split(context),
        _model(context),
        _results(metrics),
        _subgroups(metrics),
        _calibration(metrics),
        _failures(metrics, context, all_figures),
        _limitations(flags),
        _reproducibility(metrics, context),
    )
    return Document(
        title=context.title or "Clinical validation report",
        subtitle=subtitle,
        sections=sections,
        figures=all_figures,
    )
