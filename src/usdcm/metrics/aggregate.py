"""Group image-level prediction rows into cases: images, series, studies or patients.

Owns the grouping rule (mean of the images' probabilities), the checks that a group is
consistent (one label, one patient) and the subgroup values of a group. Works on rows
(``dict[str, str]``) as read from a predictions CSV; never reads a file and computes no
statistic.

A predictions row has ``image_id``, ``label``, ``prob_<class>`` for every class,
``patient_key``, ``study_key``, ``series_key``, ``frames`` and subgroup columns such as
``manufacturer`` and ``model``. Errors name the pseudonymous ``image_id`` or group key,
never anything else from the row.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from usdcm.artifacts.metrics import Level
from usdcm.errors import AggregationError, MetricsError

Row = Mapping[str, str]

MIXED = "mixed"
"""Subgroup value of a group whose images disagree on it."""

UNKNOWN = "unknown"
"""Subgroup value of an image whose column is empty or missing."""

DEFAULT_SUBGROUP_COLUMNS: tuple[str, ...] = ("manufacturer", "model", "sex", "age_band")
"""Columns whose values define subgroups unless told otherwise.

``sex`` and ``age_band`` are the manifest's bands (never dates); prediction files written
before they existed lack them, and their cases count as ``"unknown"``.
"""


KEY_COLUMNS: dict[Level, str] = {
    Level.IMAGE: "image_id",
    Level.SERIES: "series_key",
    Level.STUDY: "study_key",
    Level.PATIENT: "patient_key",
}
"""The column that identifies a case at each level: keyed pseudonyms, never DICOM UIDs."""


@dataclass(frozen=True)
class AggregatedCase:
    """One case at the chosen level: a group of images with one label.

    Attributes
    ----------
    id : str
        The group's key: ``image_id``, ``series_key``, ``study_key`` or ``patient_key``.
    label : str
        The label shared by all images of the group.
    probs : dict of str to float
        Mean of the images' ``prob_<class>``, for every class.
    patient_key : str
        The patient the group belongs to (the bootstrap's cluster).
    n_images : int
        Number of images (rows) in the group.
    n_frames : int
        Sum of the images' ``frames``.
    subgroups : dict of str to str
        For each subgroup column, the value its images share, ``"mixed"`` when they
        disagree, ``"unknown"`` when it is empty.
    image_ids : tuple of str
        The ``image_id`` of every image, in row order.
    """

    id: str
    label: str
    probs: dict[str, float]
    patient_key: str
    n_images: int
    n_frames: int
    subgroups: dict[str, str] = field(default_factory=dict)
    image_ids: tuple[str, ...] = ()


def parse_level(level: str | Level) -> Level:
    """The :class:`Level` named by ``level`` (case and spaces ignored).

    >>> parse_level(" Study ")
    <Level.STUDY: 'study'>
    """
    try:
        return Level(level.strip().lower())
    except ValueError as err:
        choices = ", ".join(repr(str(choice)) for choice in Level)
        message = f"level {level!r} is not known; expected one of {choices}."
        raise MetricsError(message) from err


def aggregation_rule(level: str | Level) -> str:
    """One sentence saying how image predictions became cases at ``level``.

    >>> aggregation_rule("study")
    'mean of image probabilities per study (grouped by study_key)'
    >>> aggregation_rule("image")
    'one case per image; no aggregation'
    """
    parsed = parse_level(level)
    if parsed is Level.IMAGE:
        return "one case per image; no aggregation"
    return f"mean of image probabilities per {parsed} (grouped by {KEY_COLUMNS[parsed]})"


def check_classes(classes: Sequence[str]) -> list[str]:
    """The class names as a list, checked to be non-empty, unique and not blank.

    >>> check_classes(("abnormal", "normal"))
    ['abnormal', 'normal']
    """
    names = list(classes)
    if isinstance(classes, str) or not names or any(not name.strip() for name in names):
        message = f"classes are {classes!r}; expected a list of class names such as ['a', 'b']."
        raise MetricsError(message)
    if len(set(names)) != len(names):
        message = f"classes {names!r} repeat a name; list every class once."
        raise MetricsError(message)
    return names


def aggregate(
    rows: Iterable[Row],
    level: str | Level,
    classes: Sequence[str],
    *,
    subgroup_columns: Sequence[str] = DEFAULT_SUBGROUP_COLUMNS,
) -> list[AggregatedCase]:
    """Group image rows into cases at ``level`` by the mean of their probabilities.

    Parameters
    ----------
    rows : iterable of mapping
        Image-level prediction rows.
    level : {"image", "series", "study", "patient"}
        Unit of a case; grouped by ``image_id``, ``series_key``, ``study_key`` or
        ``patient_key``.
    classes : sequence of str
        Class names; every row needs ``prob_<class>`` for each, and a label among them.
    subgroup_columns : sequence of str, default ("manufacturer", "model", "sex", "age_band")
        Columns copied into :attr:`AggregatedCase.subgroups`; a missing or empty column
        gives ``"unknown"``.

    Returns
    -------
    list of AggregatedCase
        One per group, in the order of each group's first row.

    Raises
    ------
    AggregationError
        An empty ``image_id``, ``patient_key`` or key column; an ``image_id`` used twice; a
        label not among ``classes``; a probability that is missing, not a number or
        outside [0, 1]; a ``frames`` value that is not a positive whole number; a group
        whose images carry different labels or patients.
    MetricsError
        An unknown ``level`` or bad ``classes``.

    Examples
    --------
    >>> rows = [
    ...     {"image_id": "i1", "series_key": "s1", "patient_key": "p1", "label": "a",
    ...      "prob_a": "0.875", "prob_b": "0.125", "frames": "10", "manufacturer": "X"},
    ...     {"image_id": "i2", "series_key": "s1", "patient_key": "p1", "label": "a",
    ...      "prob_a": "0.375", "prob_b": "0.625", "frames": "1", "manufacturer": "Y"},
    ... ]
    >>> (case,) = aggregate(rows, "series", ["a", "b"], subgroup_columns=["manufacturer"])
    >>> case.id, case.label, case.probs, case.n_images, case.n_frames, case.subgroups
    ('s1', 'a', {'a': 0.625, 'b': 0.375}, 2, 11, {'manufacturer': 'mixed'})
    """
    parsed = parse_level(level)
    names = check_classes(classes)
    key_column = KEY_COLUMNS[parsed]
    groups: dict[str, list[Row]] = {}
    seen: set[str] = set()
    for index, row in enumerate(rows):
        image_id = _value(row, "image_id")
        if not image_id:
            message = f"prediction row {index + 1} has no image_id; every row needs one."
            raise AggregationError(message)
        if image_id in seen:
            message = f"image_id {image_id!r} occurs twice in the predictions; keep one row."
            raise AggregationError(message)
        seen.add(image_id)
        for column in {key_column, "patient_key"}:
            if not _value(row, column):
                message = (
                    f"image {image_id!r} has no {column}; a {parsed}-level summary needs it "
                    "on every row."
                )
                raise AggregationError(message)
        label = _value(row, "label")
        if label not in names:
            message = (
                f"image {image_id!r} is labelled {label!r}, not one of the classes {names}; "
                "drop unlabelled rows or add the class."
            )
            raise AggregationError(message)
        groups.setdefault(_value(row, key_column), []).append(row)
    return [_case(key, members, parsed, names, subgroup_columns) for key, members in groups.items()]


def _case(
    key: str, rows: list[Row], level: Level, classes: list[str], subgroup_columns: Sequence[str]
) -> AggregatedCase:
    image_ids = tuple(_value(row, "image_id") for row in rows)
    labels = sorted({_value(row, "label") for row in rows})
    if len(labels) > 1:
        message = (
            f"{level} {key!r} has images labelled {labels}; all images of a {level} must "
            f"share one label. Fix the labels, or summarise at a finer level than {level}."
        )
        raise AggregationError(message)
    label = labels[0]
    patients = sorted({_value(row, "patient_key") for row in rows})
    if len(patients) > 1:
        message = (
            f"{level} {key!r} holds images of {len(patients)} patients; a {level} must belong "
            "to one patient_key. Check the keys in the predictions."
        )
        raise AggregationError(message)
    probs = {
        name: math.fsum(_probability(row, name) for row in rows) / len(rows) for name in classes
    }
    subgroups = {}
    for column in subgroup_columns:
        values = {_value(row, column) or UNKNOWN for row in rows}
        subgroups[column] = values.pop() if len(values) == 1 else MIXED
    return AggregatedCase(
        id=key,
        label=label,
        probs=probs,
        patient_key=patients[0],
        n_images=len(rows),
        n_frames=sum(_frames(row) for row in rows),
        subgroups=subgroups,
        image_ids=image_ids,
    )


def _value(row: Row, column: str) -> str:
    return (row.get(column) or "").strip()


def _probability(row: Row, name: str) -> float:
    column = f"prob_{name}"
    text = _value(row, column)
    try:
        value = float(text)
    except ValueError as err:
        message = (
            f"image {_value(row, 'image_id')!r} has {column}={text!r}; expected a probability "
            f"in [0, 1] in column {column} for every class."
        )
        raise AggregationError(message) from err
    if not 0 <= value <= 1:
        message = (
            f"image {_value(row, 'image_id')!r} has {column}={text!r}; expected a probability "
            "in [0, 1]."
        )
        raise AggregationError(message)
    return value


def _frames(row: Row) -> int:
    text = _value(row, "frames")
    if not text:
        return 1
    try:
        frames = int(text)
    except ValueError as err:
        message = (
            f"image {_value(row, 'image_id')!r} has frames={text!r}; expected a whole "
            "number of frames, at least 1."
        )
        raise AggregationError(message) from err
    if frames < 1:
        message = (
            f"image {_value(row, 'image_id')!r} has frames={text!r}; expected at least 1 frame."
        )
        raise AggregationError(message)
    return frames
