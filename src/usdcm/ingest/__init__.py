"""Turn a whole export folder into ``manifest.csv``, ``excluded.csv``, ``ingest.json`` and
NIfTI images: scan headers, select, convert, join labels. Decoding itself lives in
``usdcm.dicom``.
"""

from usdcm.ingest.pipeline import IngestOptions, IngestResult, ingest

__all__ = ["IngestOptions", "IngestResult", "ingest"]
