"""What synth drew for each re-encoded instance, before any compression, and how far a codec
may move it: the reference the decoded pixels of JPEG XL and video files are compared with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import ExplicitVRLittleEndian

from usdcm.synth.catalog import Photometric
from usdcm.synth.encode import encode_image
from usdcm.synth.export import instance_screen
from usdcm.synth.plan import InstancePlan, PatientPlan, SeriesPlan, draw_plan

# (mean, 99th percentile) of |decoded - drawn| in gray levels inside the tissue box, per
# syntax the export writes. Measured on every re-encoded instance of seven exports (5-20
# patients, seeds 0, 1, 3, 4, 28, cines of 4 and 8 frames): MPEG-2 2.24/14, H.264 2.39/9,
# HEVC 2.16/10, JPEG XL lossless 0/0, JPEG recompression 2.70/9, JPEG XL 2.00/7. Higher than
# on a plain cine (tests/dicom/test_codecs.py): the speckle is finer. Bounds: those plus ~20%.
EXPORT_LOSS: dict[str, tuple[float, float]] = {
    "1.2.840.10008.1.2.4.100": (2.7, 17.0),
    "1.2.840.10008.1.2.4.101": (2.7, 17.0),
    "1.2.840.10008.1.2.4.102": (2.9, 11.0),
    "1.2.840.10008.1.2.4.103": (2.9, 11.0),
    "1.2.840.10008.1.2.4.104": (2.9, 11.0),
    "1.2.840.10008.1.2.4.107": (2.6, 12.0),
    "1.2.840.10008.1.2.4.110": (0.0, 0.0),
    "1.2.840.10008.1.2.4.111": (3.25, 11.0),
    "1.2.840.10008.1.2.4.112": (2.4, 8.5),
}
# |mean signed error| inside the tissue box: at most 0.30 measured.
EXPORT_MAX_BIAS = 0.5


def native_twin(patient: PatientPlan, series: SeriesPlan, instance: InstancePlan) -> bytes:
    """The instance as synth drew it, stored uncompressed (Explicit VR Little Endian, Part 10;
    a JPEG recipe's pixels as RGB): the same header, regions and pixels before encoding."""
    recipe = instance.recipe
    photometric = recipe.photometric
    if photometric is Photometric.YBR_FULL_422:
        photometric = Photometric.RGB
    native = dataclasses.replace(
        recipe, transfer_syntax=ExplicitVRLittleEndian, photometric=photometric, part10=True
    )
    twin = dataclasses.replace(instance, recipe=native, codec=None)
    return encode_image(patient, series, twin, instance_screen(patient, instance))


def reencoded_twins(
    *,
    patients: int,
    seed: int,
    frames: int = 8,
    abnormal_fraction: float = 0.5,
    difficulty: float = 0.3,
) -> dict[str, bytes]:
    """The native twin of every instance ``write_export`` (same options) re-encodes in a
    codec, by SOP Instance UID."""
    plan = draw_plan(
        patients=patients,
        seed=seed,
        abnormal_fraction=abnormal_fraction,
        difficulty=difficulty,
        frames=frames,
    )
    return {
        str(instance.sop_instance_uid): native_twin(patient, series, instance)
        for patient, series, instance in plan.instances
        if instance.codec is not None
    }


def assert_within_loss(
    decoded: NDArray[np.unsignedinteger],
    drawn: NDArray[np.unsignedinteger],
    syntax: str,
    what: str,
) -> None:
    """``decoded`` equals ``drawn`` (same shape, gray levels) within the loss of ``syntax``."""
    assert decoded.shape == drawn.shape, what
    error = decoded.astype(np.float64) - drawn.astype(np.float64)
    mean_bound, p99_bound = EXPORT_LOSS[syntax]
    assert float(np.abs(error).mean()) <= mean_bound, what
    assert float(np.percentile(np.abs(error), 99)) <= p99_bound, what
    assert abs(float(error.mean())) <= EXPORT_MAX_BIAS, what
