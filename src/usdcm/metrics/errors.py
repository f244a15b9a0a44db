"""The exceptions of ``usdcm.metrics``: data on which a statistic cannot be computed.

Owns the error types only. Messages name pseudonymous keys (image, series, study ids and
``patient_key``) and never a patient's name.
"""

from __future__ import annotations

from usdcm.errors import UsdcmError


class MetricsError(UsdcmError):
    """Inputs a statistic cannot use: bad shapes, labels, probabilities or options."""


class UndefinedMetricError(MetricsError):
    """A statistic that is undefined on this data, such as an AUC when one class is absent.

    The bootstrap skips (and counts) resamples on which the statistic raises this error.
    """


class ThresholdRuleError(MetricsError):
    """A threshold rule that cannot be parsed, such as ``"sens:1.5"`` or ``"best"``."""


class AggregationError(MetricsError):
    """Prediction rows that cannot be grouped: a missing key, a bad number, mixed labels."""
