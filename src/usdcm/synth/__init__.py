"""Synthetic ultrasound PACS exports: our demo data and test fixture (``usdcm synth``).

The modules follow the work: ``plan`` draws every choice from the seed, ``phantom`` renders
tissue pixels, ``screen`` lays out the scanner screen and burns in fake PHI, ``encode`` and
``junk`` make DICOM bytes (``codecs`` re-encodes some in JPEG XL or video), and ``export``
writes the folder. Nothing here reads real data.
"""

from usdcm.errors import SynthOptionError
from usdcm.synth.export import JUNK_KINDS, ExportSummary, ImageRecord, write_export

__all__ = ["JUNK_KINDS", "ExportSummary", "ImageRecord", "SynthOptionError", "write_export"]
