"""Statistics of the clinical validation report: pure numpy, scipy and scikit-learn.

Owns intervals (Wilson, DeLong, clustered bootstrap), threshold rules, calibration and
recalibration, sample size, decision curves, the grouping of image predictions into cases
and the report's summary dict. Does no I/O,
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
from usdcm.metrics.decision_curve import DecisionCurve, decision_curve
from usdcm.metrics.delong import DelongResult, delong_auc, roc_auc
from usdcm.metrics.intervals import wilson
from usdcm.metrics.recalibration import fit_isotonic, fit_logistic, recalibration_summary
from usdcm.metrics.sample_size import SampleSize, buderer, precision_summary
from usdcm.metrics.summary import summarize
from usdcm.metrics.threshold import (
    THRESHOLD_CONVENTION,
    ThresholdKind,
    ThresholdRule,
    choose_threshold,
    parse_threshold_rule,
)

__all__ = [
    "THRESHOLD_CONVENTION",
    "AggregatedCase",
    "AggregationError",
    "BootstrapResult",
    "DecisionCurve",
    "DelongResult",
    "Level",
    "MetricsError",
    "Reliability",
    "SampleSize",
    "ThresholdKind",
    "ThresholdRule",
    "ThresholdRuleError",
    "UndefinedMetricError",
    "aggregate",
    "brier_score",
    "buderer",
    "choose_threshold",
    "cluster_bootstrap",
    "decision_curve",
    "delong_auc",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_logistic",
    "parse_level",
    "parse_threshold_rule",
    "precision_summary",
    "recalibration_summary",
    "reliability",
    "roc_auc",
    "summarize",
    "wilson",
]
