"""Statistics of the clinical validation report: pure numpy, scipy and scikit-learn.

Owns intervals (Wilson, DeLong, clustered bootstrap), threshold rules, calibration,
the grouping of image predictions into cases and the report's summary dict. Does no I/O,
imports no torch and knows nothing of files: callers read the predictions CSV and write
the report.
"""

from usdcm.artifacts.metrics import Level
from usdcm.errors import (
    AggregationError,
    MetricsError,
    ThresholdRuleError,
    UndefinedMetricError,
)
from usdcm.metrics.aggregate import AggregatedCase, aggregate, parse_level
from usdcm.metrics.bootstrap import BootstrapResult, cluster_bootstrap
from usdcm.metrics.calibration import (
    Reliability,
    brier_score,
    expected_calibration_error,
    reliability,
)
from usdcm.metrics.delong import DelongResult, delong_auc, roc_auc
from usdcm.metrics.intervals import wilson
from usdcm.metrics.summary import summarize
from usdcm.metrics.threshold import (
    ThresholdKind,
    ThresholdRule,
    choose_threshold,
    parse_threshold_rule,
)

__all__ = [
    "AggregatedCase",
    "AggregationError",
    "BootstrapResult",
    "DelongResult",
    "Level",
    "MetricsError",
    "Reliability",
    "ThresholdKind",
    "ThresholdRule",
    "ThresholdRuleError",
    "UndefinedMetricError",
    "aggregate",
    "brier_score",
    "choose_threshold",
    "cluster_bootstrap",
    "delong_auc",
    "expected_calibration_error",
    "parse_level",
    "parse_threshold_rule",
    "reliability",
    "roc_auc",
    "summarize",
    "wilson",
]
