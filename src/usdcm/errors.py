"""The exceptions usdcm raises on purpose.

Every message says what was found and what to do about it, and never carries a patient
identifier. The CLI prints ``UsdcmError`` as one line and exits non-zero.
"""


class UsdcmError(Exception):
    """Base class: an error the user can act on, shown without a traceback."""


# --- Artifact files (usdcm.artifacts) ---


class ArtifactError(UsdcmError):
    """An artifact file (manifest, splits, predictions, evaluation, metrics) that cannot be used."""


class ManifestError(ArtifactError):
    """A manifest that is missing, malformed or inconsistent."""


class SchemaVersionError(ArtifactError):
    """An artifact file written by another version of usdcm (or by hand, without a version)."""


class SplitsFileError(ArtifactError):
    """A ``splits.csv`` that is missing, unreadable or malformed."""


class PredictionsError(ArtifactError):
    """A predictions file that is missing, unreadable or lacks columns."""


class EvaluationFileError(ArtifactError):
    """An ``evaluation.json`` that is unreadable or malformed."""


class MetricsFileError(ArtifactError):
    """A ``metrics.json`` that is missing, unreadable or malformed."""


class FoldsFileError(ArtifactError):
    """A cross-validated run's ``folds.json`` that is missing, unreadable or malformed."""


# --- Ingest: SOURCE, DICOM files, labels and outputs ---


class InvalidSourceError(UsdcmError):
    """The export folder given to ``ingest`` is missing, empty or not a folder."""


class NotDicomError(UsdcmError):
    """A file's content is not a DICOM data set."""


class UnsupportedDicomError(UsdcmError):
    """A DICOM file that usdcm reads but cannot turn into an image (reason in the message)."""


class DecodeError(UsdcmError):
    """Pixel data that could not be decoded, or does not match its header."""


class LabelsError(UsdcmError):
    """A labels CSV that is unreadable or has no usable key column."""


class TrainingError(UsdcmError):
    """A training run that cannot start or go on (too few labels, a bad resume, ...)."""


class OutputWriteError(UsdcmError):
    """An output could not be written (a full disk, a read-only folder); the run stopped."""


# --- Synthetic exports ---


class SynthOptionError(UsdcmError):
    """An option of ``usdcm synth`` (or of :func:`~usdcm.synth.write_export`) is unusable."""


# --- Training: config, models, data, devices and runs ---


class ConfigError(UsdcmError):
    """A configuration file or override with an unknown key or a value of the wrong type."""


class ModelError(UsdcmError):
    """An unknown model name, or model arguments out of range."""


class WeightsError(ModelError):
    """A weights file (``model.weights``) that is missing, unreadable, unsafe or does not fit."""


class PreprocessError(UsdcmError):
    """An image that cannot be read, or whose layout is not what the manifest says.

    Inside a MONAI ``Compose`` it reaches the caller as the ``__cause__`` of a
    ``RuntimeError``; :func:`usdcm.data.transforms.usdcm_cause` finds it.
    """


class NormalizationError(UsdcmError):
    """Training images whose intensities cannot be normalized (unreadable, or all one value)."""


class SplitError(UsdcmError):
    """A manifest whose rows cannot be split: a bad ``split`` value, or a missing key."""


class LeakageError(UsdcmError):
    """A patient or a study whose images sit in more than one split."""


class DeviceError(UsdcmError):
    """A device that was asked for but is not available, or a device name not understood."""


class CheckpointError(UsdcmError):
    """A checkpoint that is missing, unreadable, unsafe or incomplete, or cannot be written."""


class PlanError(UsdcmError):
    """A plan that cannot be made: a time budget not understood, or a ``plan.json`` unusable."""


class PlanFileError(ArtifactError):
    """A ``plan.json`` that is missing, unreadable or malformed."""


class DistributedError(UsdcmError):
    """torchrun's environment is inconsistent, or a multi-process run cannot start."""


class RunError(UsdcmError):
    """A run folder or checkpoint that inference cannot use."""


# --- Evaluation and reports ---


class EvaluationError(UsdcmError):
    """An evaluation that cannot run: no images in the split, no labels, a bad run."""


class ManifestChangedError(EvaluationError):
    """The run's manifest is not the one its checkpoint was trained on."""


class ReportError(UsdcmError):
    """A report that cannot be computed from the predictions given (bad class, split...)."""


class DemoError(UsdcmError):
    """A demo folder that holds another demo's export."""


# --- Statistics (usdcm.metrics): messages name pseudonymous keys only ---


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


# --- Results back to the PACS (usdcm.results, usdcm.network.send) ---


class ResultsError(UsdcmError):
    """A result object (TID 1500 SR, Encapsulated PDF) that cannot be built from its sources."""


class SendError(UsdcmError):
    """A destination that cannot be used: a malformed ``aet@host:port`` or DICOMweb URL."""


class ListenError(UsdcmError):
    """``usdcm listen`` cannot start: a port taken, a TLS file unreadable, a bad option."""


class StoreError(UsdcmError):
    """A received instance that cannot be stored: no Study/Series UID, or an unwritable store."""


# --- Pulling over DICOMweb (usdcm.network.auth, usdcm.network.pull) ---


class CredentialsError(UsdcmError):
    """DICOMweb credentials that cannot be used: both kinds set, an empty or unreadable file."""


class PullError(UsdcmError):
    """A DICOMweb server that cannot be searched or retrieved from, or a bad ``--query``."""


# --- Running on a Dask cluster (usdcm.parallel, --scheduler) ---


class SchedulerError(UsdcmError):
    """A ``--scheduler`` that cannot be used: a bad value, a scheduler that cannot be reached,
    a worker that cannot see SOURCE or DIR, or a cluster lost in the middle of a run."""
