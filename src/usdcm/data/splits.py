"""Train/val/test splits of manifest rows: grouped by patient, stratified by label, leak-checked.

Owns which image goes to which split (and, for cross-validation, to which fold), the
label-to-index map, the leakage check and ``splits.csv``. Works on manifest rows
(``dict[str, str]``) only: it never opens an image and never decides how images are
transformed. Rows without a label take part in no split.
Studies are told apart by ``study_key`` (the keyed pseudonym ingest writes), or by
``study_uid`` in a hand-written manifest without one; a UID is used for grouping only and
never written into ``splits.csv`` or shown in a message.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from usdcm.artifacts.splits import SPLIT_COLUMNS, SPLITS, SplitRow, write_splits_file
from usdcm.errors import LeakageError, SplitError

__all__ = [
    "SPLITS",
    "SPLIT_COLUMNS",
    "LeakageError",
    "SplitError",
    "assign_folds",
    "assign_splits",
    "check_leakage",
    "find_leaks",
    "fold_splits",
    "label_map",
    "labelled_rows",
    "row_label",
    "study_of",
    "write_splits",
]

_MAX_SHOWN = 10

Row = Mapping[str, str]


def row_label(row: Row) -> str:
    """The label of a manifest row, stripped; ``""`` when the row has none.

    >>> row_label({"label": " abnormal "}), row_label({"label": ""}), row_label({})
    ('abnormal', '', '')
    """
    return (row.get("label") or "").strip()


def study_of(row: Row) -> str:
    """The study of a manifest row: ``k:<study_key>``, else ``u:<study_uid>``, else ``""``.

    The prefix keeps a key and a UID apart; ingest writes both, so its rows always give
    the key. Used to group and to compare, never written anywhere.

    >>> study_of({"study_key": "ab12", "study_uid": "1.2.3"}), study_of({"study_uid": "1.2.3"})
    ('k:ab12', 'u:1.2.3')
    """
    key = (row.get("study_key") or "").strip()
    if key:
        return "k:" + key
    uid = (row.get("study_uid") or "").strip()
    return "u:" + uid if uid else ""


def labelled_rows(rows: Iterable[Row]) -> list[Row]:
    """The rows that have a label, in their order: the only rows that are split."""
    return [row for row in rows if row_label(row)]


def label_map(rows: Iterable[Row]) -> dict[str, int]:
    """Map every label found in ``rows`` to a class index, labels sorted alphabetically.

    Parameters
    ----------
    rows : iterable of mapping
        Manifest rows; rows without a label are ignored.

    Returns
    -------
    dict of str to int
        ``{label: index}``, indices ``0 .. n_classes - 1``.

    Examples
    --------
    >>> label_map([{"label": "normal"}, {"label": "abnormal"}, {"label": ""}])
    {'abnormal': 0, 'normal': 1}
    """
    labels = sorted({row_label(row) for row in rows} - {""})
    return {label: index for index, label in enumerate(labels)}


def assign_splits(
    rows: Sequence[Row], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign every labelled image to ``train``, ``val`` or ``test``.

    If every labelled row has a non-empty ``split`` column, that column is used as given
    (case and surrounding spaces are ignored). If no labelled row has one, the split is
    computed: images are grouped so that all images of a patient (``patient_key``), and all
    images of a study (:func:`study_of`), land in the same split; groups are stratified by their
    majority label (a tie goes to the alphabetically first label), each stratum is shuffled
    with ``seed`` and cut by the fractions. A stratum of at least 3 groups gives val and test
    at least one group each when their fraction is above 0, and train always keeps at least
    one. The result depends on ``seed`` and the rows' content, never on their order.

    Either way the result is checked with :func:`check_leakage`.

    Parameters
    ----------
    rows : sequence of mapping
        Manifest rows, as read by :func:`usdcm.artifacts.manifest.read_manifest`.
    val_fraction, test_fraction : float
        Fractions of each stratum's groups for validation and test; ignored when the rows
        carry their own split.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict of str to str
        ``{image_id: split}`` for the labelled rows only: rows without a label are left out
        of every split and do not appear.

    Raises
    ------
    SplitError
        A ``split`` value other than train/val/test, a ``split`` column filled for only some
        rows, an empty ``image_id`` or ``patient_key``, or an ``image_id`` used twice.
    LeakageError
        A given ``split`` column that puts a patient or a study into two splits.

    Examples
    --------
    >>> rows = [
    ...     {"image_id": f"i{n}", "patient_key": f"p{n // 2}", "label": "a"} for n in range(12)
    ... ]
    >>> splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    >>> sorted(Counter(splits.values()).items())
    [('test', 2), ('train', 8), ('val', 2)]
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            message = f"{name} is {fraction!r}; expected a fraction in [0, 1)."
            raise ValueError(message)
    if val_fraction + test_fraction >= 1:
        message = (
            f"val_fraction + test_fraction is {val_fraction + test_fraction!r}; "
            "it must stay below 1 so that something is left to train on."
        )
        raise ValueError(message)
    labelled = labelled_rows(rows)
    _check_keys(labelled)
    given = [(row.get("split") or "").strip() for row in labelled]
    if any(given):
        splits = _given_splits(labelled, given)
    else:
        splits = _grouped_splits(
            labelled, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        )
    check_leakage(labelled, splits)
    return splits


TEST_FOLD = 0
"""The fold number :func:`assign_folds` gives a test image: it is in no fold."""


def assign_folds(
    rows: Sequence[Row], *, folds: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, int]:
    """Hold the test split out as :func:`assign_splits` does, and cut the rest into folds.

    The test images are exactly those :func:`assign_splits` (same arguments) sends to
    ``test``, so a cross-validated run is tested on the images a plain run is tested on.
    Every other labelled image goes to one of ``folds`` folds: images are grouped by
    patient and study as for the splits (all images of a patient, and of a study, share a
    fold), groups are stratified by their majority label, each stratum is shuffled with
    ``seed`` and dealt round the folds, continuing where the previous stratum stopped, so
    that folds differ by at most one group per label and in size by about one group. The
    result depends on ``seed`` and the rows' content, never on their order.

    Parameters
    ----------
    rows : sequence of mapping
        Manifest rows; rows without a label are in no fold.
    folds : int
        Number of folds, 2 or more.
    val_fraction, test_fraction : float, seed : int
        As for :func:`assign_splits` (``val_fraction`` only shapes the test split, exactly
        as it does there).

    Returns
    -------
    dict of str to int
        ``{image_id: fold}``: ``1 .. folds``, or :data:`TEST_FOLD` (0) for a test image.

    Raises
    ------
    SplitError
        Fewer than 2 folds, or fewer patient groups outside the test split than folds;
        and everything :func:`assign_splits` raises.

    Examples
    --------
    >>> rows = [
    ...     {"image_id": f"i{n}", "patient_key": f"p{n}", "label": "ab"[n % 2]} for n in range(20)
    ... ]
    >>> assignment = assign_folds(rows, folds=3, val_fraction=0.2, test_fraction=0.2, seed=0)
    >>> sorted(Counter(assignment.values()).items())
    [(0, 4), (1, 6), (2, 5), (3, 5)]
    """
    if folds < 2:
        message = f"folds is {folds}; cross-validation needs 2 folds or more (1 means no folds)."
        raise SplitError(message)
    splits = assign_splits(rows, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    rest = [row for row in labelled_rows(rows) if splits[row["image_id"].strip()] != "test"]
    groups = _groups(rest)
    if len(groups) < folds:
        message = (
            f"{folds} folds need at least {folds} patients outside the test split; there are "
            f"{len(groups)} (patients sharing a study count as one). Use fewer folds "
            "(split.folds, --folds) or add data."
        )
        raise SplitError(message)
    assignment = dict.fromkeys((i for i, s in splits.items() if s == "test"), TEST_FOLD)
    position = 0
    for label, group_ids in sorted(_strata(groups).items()):
        rng = np.random.default_rng([seed % 2**63, _stable_hash(label), folds])
        ordered = sorted(group_ids)
        for index in rng.permutation(len(ordered)):
            fold = position % folds + 1
            position += 1
            for row in groups[ordered[index]]:
                assignment[row["image_id"].strip()] = fold
    return assignment


def fold_splits(assignment: Mapping[str, int], fold: int) -> dict[str, str]:
    """The train/val/test split of one fold: fold ``fold`` validates, the others train.

    >>> fold_splits({"a": 0, "b": 1, "c": 2}, 2)
    {'a': 'test', 'b': 'train', 'c': 'val'}
    """
    if fold not in set(assignment.values()) - {TEST_FOLD}:
        message = f"There is no fold {fold}; the folds are {sorted(set(assignment.values()))}."
        raise SplitError(message)
    return {
        image_id: "test" if value == TEST_FOLD else "val" if value == fold else "train"
        for image_id, value in assignment.items()
    }


def _check_keys(rows: Sequence[Row]) -> None:
    seen: set[str] = set()
    for index, row in enumerate(rows):
        image_id = (row.get("image_id") or "").strip()
        if not image_id:
            message = (
                f"Labelled manifest row {index + 1} has an empty image_id; "
                "every row needs one (write the manifest with `usdcm ingest`)."
            )
            raise SplitError(message)
        if image_id in seen:
            message = f"The image_id {image_id} appears twice in the manifest; ids must be unique."
            raise SplitError(message)
        seen.add(image_id)
        if not (row.get("patient_key") or "").strip():
            message = (
                f"Image {image_id} has an empty patient_key; splits are grouped by patient, "
                "so every labelled row needs one."
            )
            raise SplitError(message)


def _given_splits(rows: Sequence[Row], given: Sequence[str]) -> dict[str, str]:
    splits: dict[str, str] = {}
    for row, value in zip(rows, given, strict=True):
        image_id = row["image_id"].strip()
        if not value:
            n_missing = sum(1 for v in given if not v)
            message = (
                f"The manifest's split column is empty for image {image_id} "
                f"({n_missing} of {len(given)} labelled rows); fill it for every labelled row "
                "or remove the column to let usdcm assign grouped splits."
            )
            raise SplitError(message)
        split = value.lower()
        if split not in SPLITS:
            message = f"Image {image_id} has split {value!r}; expected one of {', '.join(SPLITS)}."
            raise SplitError(message)
        splits[image_id] = split
    return splits


def _grouped_splits(
    rows: Sequence[Row], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    groups = _groups(rows)
    group_split: dict[str, str] = {}
    for label, group_ids in _strata(groups).items():
        ordered = sorted(group_ids)
        rng = np.random.default_rng([seed % 2**63, _stable_hash(label)])
        shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
        n_val, n_test = _cut(len(shuffled), val_fraction, test_fraction)
        for position, group_id in enumerate(shuffled):
            if position < n_test:
                group_split[group_id] = "test"
            elif position < n_test + n_val:
                group_split[group_id] = "val"
            else:
                group_split[group_id] = "train"
    return {
        row["image_id"].strip(): group_split[group_id]
        for group_id, members in groups.items()
        for row in members
    }


def _strata(groups: Mapping[str, Sequence[Row]]) -> dict[str, list[str]]:
    """Group names by their majority label (a tie goes to the alphabetically first label)."""
    strata: dict[str, list[str]] = defaultdict(list)
    for group_id, members in groups.items():
        counts = Counter(row_label(row) for row in members)
        majority = min(counts, key=lambda label: (-counts[label], label))
        strata[majority].append(group_id)
    return strata


def _groups(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Connected components of rows linked by a shared patient_key or study.

    A group is named by its smallest patient_key, so the names do not depend on row order.
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return root

    def union(a: str, b: str) -> None:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)

    for row in rows:
        patient = "p:" + row["patient_key"].strip()
        parent.setdefault(patient, patient)
        study = study_of(row)
        if study:
            node = "s:" + study
            parent.setdefault(node, node)
            union(patient, node)
    components: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        components[find("p:" + row["patient_key"].strip())].append(row)
    return dict(components)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _cut(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """How many of ``n`` shuffled groups go to val and to test."""
    n_val = _round_half_up(n * val_fraction)
    n_test = _round_half_up(n * test_fraction)
    if n >= 3:
        n_val = max(n_val, 1) if val_fraction > 0 else 0
        n_test = max(n_test, 1) if test_fraction > 0 else 0
    while n_val + n_test > max(n - 1, 0):
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def find_leaks(
    rows: Iterable[Row], splits: Mapping[str, str]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The patients and the studies whose images lie in more than one split.

    Parameters
    ----------
    rows : iterable of mapping
        Manifest (or ``splits.csv``) rows; those whose ``image_id`` is not in ``splits`` are
        ignored.
    splits : mapping of str to str
        ``{image_id: split}``.

    Returns
    -------
    tuple of dict
        ``({patient_key: splits}, {study: splits})``, only the leaked ones; a study is named
        as by :func:`study_of`.

    Examples
    --------
    >>> rows = [{"image_id": "a", "patient_key": "p1", "study_key": "s1"},
    ...         {"image_id": "b", "patient_key": "p2", "study_key": "s1"}]
    >>> patients, studies = find_leaks(rows, {"a": "train", "b": "test"})
    >>> patients, sorted(studies["k:s1"])
    ({}, ['test', 'train'])
    """
    patients: defaultdict[str, set[str]] = defaultdict(set)
    studies: defaultdict[str, set[str]] = defaultdict(set)
    for row in rows:
        split = splits.get((row.get("image_id") or "").strip())
        if split is None:
            continue
        patient = (row.get("patient_key") or "").strip()
        if patient:
            patients[patient].add(split)
        study = study_of(row)
        if study:
            studies[study].add(split)
    return (
        {key: found for key, found in patients.items() if len(found) > 1},
        {key: found for key, found in studies.items() if len(found) > 1},
    )


def _listed(column: str, leaked: Mapping[str, set[str]], prefix: str = "") -> str:
    names = sorted(key for key in leaked)
    shown = ", ".join(
        f"{key[len(prefix) :]} ({', '.join(sorted(leaked[key]))})" for key in names[:_MAX_SHOWN]
    )
    more = f" and {len(names) - _MAX_SHOWN} more" if len(names) > _MAX_SHOWN else ""
    return f"{len(names)} {column} in more than one split: {shown}{more}"


def check_leakage(rows: Iterable[Row], splits: Mapping[str, str]) -> None:
    """Refuse splits in which a patient or a study has images in two splits.

    Parameters
    ----------
    rows : iterable of mapping
        Manifest rows; those whose ``image_id`` is not in ``splits`` are ignored.
    splits : mapping of str to str
        ``{image_id: split}``, as from :func:`assign_splits`.

    Raises
    ------
    LeakageError
        Listing the offending patient keys and study keys (sorted, the first 10 of each and
        a count): pseudonyms, not identifiers. Studies known only by their ``study_uid`` (a
        hand-written manifest) are counted, never listed: a UID identifies.

    Examples
    --------
    >>> rows = [{"image_id": "a", "patient_key": "p1"}, {"image_id": "b", "patient_key": "p1"}]
    >>> check_leakage(rows, {"a": "train", "b": "train"})
    >>> check_leakage(rows, {"a": "train", "b": "test"})
    Traceback (most recent call last):
    usdcm.errors.LeakageError: 1 patient_key in more than one split: p1 (test, train); ...
    """
    patients, studies = find_leaks(rows, splits)
    problems: list[str] = []
    if patients:
        problems.append(_listed("patient_key", patients))
    keyed = {key: found for key, found in studies.items() if key.startswith("k:")}
    if keyed:
        problems.append(_listed("study_key", keyed, prefix="k:"))
    n_uids = len(studies) - len(keyed)
    if n_uids:
        problems.append(
            f"{n_uids} study_uid in more than one split (not listed: UIDs identify; "
            "`usdcm ingest` writes study_key pseudonyms)"
        )
    if problems:
        message = (
            "; ".join(problems) + "; put every image of a patient and of a study into one "
            "split, or remove the split column to let usdcm assign grouped splits."
        )
        raise LeakageError(message)


def write_splits(
    path: Path,
    rows: Iterable[Row],
    splits: Mapping[str, str],
    folds: Mapping[str, int] | None = None,
) -> int:
    """Write ``splits.csv`` atomically: one row per image in ``splits``, in manifest order.

    The file is :mod:`usdcm.artifacts.splits`; a row without a ``study_key`` gets an empty
    one, never its UID. ``folds`` (from :func:`assign_folds`) fills the ``fold`` column of
    a cross-validated run's file. Returns the number of rows written.
    """
    folds = folds or {}
    records = (
        SplitRow(
            image_id=image_id,
            patient_key=row.get("patient_key") or "",
            study_key=row.get("study_key") or "",
            label=row_label(row),
            split=splits[image_id],
            fold=folds.get(image_id, TEST_FOLD),
        )
        for row in rows
        if (image_id := (row.get("image_id") or "").strip()) in splits
    )
    return write_splits_file(path, records)
