"""usdcm: from a hospital's DICOM ultrasound export to a validated classifier.

The package folders follow the data flow: ``dicom`` (read one SOP instance) ->
``ingest`` (a whole export to a manifest and NIfTI images) -> training, evaluation
and report, with ``cli`` on top.
"""

__version__ = "0.1.0"
