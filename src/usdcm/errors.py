"""The exceptions usdcm raises on purpose.

Every message says what was found and what to do about it, and never carries a patient
identifier. The CLI prints ``UsdcmError`` as one line and exits non-zero.
"""


class UsdcmError(Exception):
    """Base class: an error the user can act on, shown without a traceback."""


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


class ManifestError(UsdcmError):
    """A manifest that is missing, malformed or inconsistent."""


class TrainingError(UsdcmError):
    """A training run that cannot start or go on (too few labels, a bad resume, ...)."""


class SchemaVersionError(UsdcmError):
    """An artifact file written by another version of usdcm (or by hand, without a version)."""
