"""What the report needs besides the metrics: intended use, data, split, model, commands.

Owns :class:`ReportContext`, a plain record the caller fills from ingest, split and training;
never reads a file and never computes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TITLE = "Clinical validation report"


@dataclass(frozen=True)
class ReportContext:
    """Everything the report states that the metrics dict does not hold; every field optional.

    Keys not listed below are shown too, as ``key: value`` rows, so nothing the caller
    passes is dropped silently. None of these may hold a patient identifier: use the
    pseudonymous keys that ingest assigns.

    Parameters
    ----------
    title : str
        The report's title.
    intended_use : str
        Who uses the model, on which patients, for which decision.
    data : mapping
        ``sources`` (str or list of str), ``manufacturers`` and ``models``
        (``{name: image count}``), ``exclusions`` (``{reason_code: count}`` from ingest),
        ``labels`` (``{label: count}``).
    split : mapping
        ``counts`` (``{split: count}`` or ``{split: {level: count}}``), ``leakage_check``
        (``"passed"`` or ``"not run"``), ``split_source`` (e.g. ``"manifest column"``).
    model : mapping
        ``architecture``, ``config`` (nested mapping), ``checkpoint_sha256``, ``versions``
        (``{package: version}``), ``best_epoch``, ``val_auc``.
    commands : sequence of str
        The exact commands that reproduce the run, in order.
    failure_thumbnails : mapping of str to bytes
        PNG bytes per aggregated id of a failure case; ids not among the failures are ignored.
    prevalence_by_split : mapping of str to float
        Prevalence of the positive class per split, for the prevalence-shift check.

    Examples
    --------
    >>> ReportContext(intended_use="Triage of adnexal masses").title
    'Clinical validation report'
    """

    title: str = DEFAULT_TITLE
    intended_use: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    split: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    commands: Sequence[str] = ()
    failure_thumbnails: Mapping[str, bytes] = field(default_factory=dict)
    prevalence_by_split: Mapping[str, float] = field(default_factory=dict)
