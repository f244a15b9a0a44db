"""Moved to :mod:`usdcm.artifacts.predictions`."""

# shim: removed at integration
from usdcm.artifacts.predictions import (  # noqa: F401
    CONTEXT_COLUMNS,
    KEY_COLUMNS,
    PROB_PREFIX,
    SOURCE_COLUMNS,
    PredictionsError,
    prediction_columns,
    read_predictions,
    write_predictions,
    write_source_predictions,
)
