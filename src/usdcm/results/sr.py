"""One TID 1500 Measurement Report per study: usdcm's classification as a Comprehensive 3D SR.

Owns the SR's content (written with highdicom), the class-name -> code map and the SR's
file name. The SR joins the **original study**: its StudyInstanceUID and patient module are
copied from the source headers, so that a PACS files it beside the images; its series and
instance UIDs are new (derived from the study, the images and the weights, so that the same
result sent twice is the same instance). It is marked PRELIMINARY, UNVERIFIED and PARTIAL,
and its SeriesDescription says research use.

Content (TID 1500, one TID 1501 group per study and one per image):

- the observer device context (TID 1004): usdcm, its version;
- the procedure reported: diagnostic ultrasonography (SCT 16310003);
- per group: a tracking identifier, the algorithm identification (TID 4019: usdcm, its
  version, ``run=<run id>`` and ``weights_sha256=<hex>``), the source images, the
  ``Finding`` (DCM 121071, TID 1501's finding row) = the predicted class as a coded
  concept, the same class as a qualitative evaluation (``Predicted class``, private
  scheme), the measurement ``Probability`` (DCM 122157) of that class, and one
  probability per class under usdcm's private scheme;
- the study group's probabilities are the mean over the study's images.

Nothing here logs; the patient module lives only inside the returned dataset.
"""

from __future__ import annotations

import json
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodedConcept,
    Comprehensive3DSR,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from usdcm.atomic import atomic_write_bytes
from usdcm.errors import ResultsError
from usdcm.privacy import ProjectSecret

PRIVATE_SCHEME = "99USDCM"
"""The coding scheme of usdcm's default codes: private (``99`` prefix), the class names as
plain text, valid only inside usdcm's output. Map classes to a standard scheme (SNOMED CT:
``SCT``) with a codes file (:func:`load_class_codes`)."""

SERIES_DESCRIPTION = "usdcm classification - RESEARCH USE ONLY, not for diagnosis"
"""Every SR's SeriesDescription: a PACS shows it in the series list."""

SERIES_NUMBER = 9901
"""Series number of usdcm's SR series; high so that it lists after the scanner's."""

PROCEDURE = codes.SCT.DiagnosticUltrasonography
PREDICTED_CLASS = CodedConcept(
    value="predicted-class", scheme_designator=PRIVATE_SCHEME, meaning="Predicted class"
)
PROBABILITY = codes.DCM.Probability
NO_UNITS = codes.UCUM.NoUnits

SOURCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
)
"""Attributes every source header must carry for its SR."""

PATIENT_STUDY_DEFAULTS: dict[str, Any] = {
    "PatientID": "",
    "PatientName": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "AccessionNumber": "",
    "StudyID": "",
    "StudyDate": "",
    "StudyTime": "",
    "ReferringPhysicianName": "",
}
"""Type 2 patient and study attributes: empty when a source header lacks them."""


@dataclass(frozen=True)
class Algorithm:
    """What produced the result: the TID 4019 algorithm identification.

    Examples
    --------
    >>> Algorithm("0.4.0", "r18", "ab" * 32).parameters()[0]
    'run=r18'
    """

    version: str
    run_id: str
    weights_sha256: str
    name: str = "usdcm"

    def parameters(self) -> list[str]:
        """The algorithm parameters: the run id and the weights' sha256."""
        return [f"run={self.run_id}", f"weights_sha256={self.weights_sha256}"]

    def identification(self) -> AlgorithmIdentification:
        """The highdicom TID 4019 item."""
        return AlgorithmIdentification(
            name=self.name, version=self.version, parameters=self.parameters()
        )


@dataclass(frozen=True)
class ImageResult:
    """One source image's header (no pixel data needed) and its class probabilities."""

    source: Dataset
    probabilities: Mapping[str, float]


def derived_uid(*parts: str) -> str:
    """A UID under ``2.25`` from a name-based (version 5) UUID of ``parts``: the same parts
    always give the same UID, and different parts practically never the same.

    >>> derived_uid("a", "b") == derived_uid("a", "b") != derived_uid("a", "c")
    True
    >>> derived_uid("a").startswith("2.25.")
    True
    """
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, chr(0).join(parts)).int}"


def private_code(name: str) -> CodedConcept:
    """The default code of class ``name``: the name itself under :data:`PRIVATE_SCHEME`.

    >>> code = private_code("abnormal")
    >>> (code.value, code.scheme_designator, code.meaning)
    ('abnormal', '99USDCM', 'abnormal')
    """
    return CodedConcept(value=name[:64], scheme_designator=PRIVATE_SCHEME, meaning=name[:64])


def class_codes(
    classes: Sequence[str], mapping: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, CodedConcept]:
    """The code of each class: ``mapping[name]`` when given, else :func:`private_code`.

    ``mapping`` maps a class name to ``{"value": ..., "scheme": ..., "meaning": ...}``
    (``meaning`` defaults to the class name); names it holds that are not classes raise.

    >>> found = class_codes(["abnormal", "normal"],
    ...                     {"normal": {"value": "17621005", "scheme": "SCT"}})
    >>> found["normal"].scheme_designator, found["normal"].meaning
    ('SCT', 'normal')
    >>> found["abnormal"].scheme_designator
    '99USDCM'
    """
    mapping = mapping or {}
    unknown = sorted(set(mapping) - set(classes))
    if unknown:
        message = f"class codes name {unknown}, which are not classes of the run ({list(classes)})."
        raise ResultsError(message)
    found: dict[str, CodedConcept] = {}
    for name in classes:
        entry = mapping.get(name)
        if entry is None:
            found[name] = private_code(name)
            continue
        value, scheme = str(entry.get("value", "")), str(entry.get("scheme", ""))
        if not value or not scheme:
            message = (
                f"the code of class {name!r} needs a 'value' and a 'scheme' "
                f"(for example SCT); found {dict(entry)}."
            )
            raise ResultsError(message)
        meaning = str(entry.get("meaning") or name)
        found[name] = CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)
    return found


def load_class_codes(path: Path | None, classes: Sequence[str]) -> dict[str, CodedConcept]:
    """Class codes from a JSON or TOML file ``{class: {value, scheme, meaning}}``.

    None gives the private-scheme defaults for every class.
    """
    if path is None:
        return class_codes(classes)
    try:
        text = path.read_text(encoding="utf-8")
        loaded: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as err:
        message = f"cannot read the class codes in {path}: {err}; expected JSON or TOML."
        raise ResultsError(message) from err
    if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
        message = f"{path} must map each class name to {{value, scheme, meaning}}."
        raise ResultsError(message)
    return class_codes(classes, loaded)


def _checked_source(source: Dataset) -> Dataset:
    """A copy of ``source`` without pixel data, with the empty type 2 attributes filled."""
    missing = [keyword for keyword in SOURCE_KEYWORDS if not source.get(keyword)]
    if missing:
        message = f"a source header lacks {missing}; an SR cannot reference it."
        raise ResultsError(message)
    header = Dataset()
    for element in source:
        if element.tag.group != 0x7FE0 and element.tag.group != 0x0002:
            header.add(element)
    for keyword, value in PATIENT_STUDY_DEFAULTS.items():
        if keyword not in header:
            setattr(header, keyword, value)
    return header


def _group(
    *,
    label: str,
    uid: str,
    images: Sequence[Dataset],
    probabilities: Mapping[str, float],
    codes_by_class: Mapping[str, CodedConcept],
    algorithm: Algorithm,
) -> MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group: the finding, its probability, every class's probability."""
    predicted = max(codes_by_class, key=lambda name: probabilities[name])
    measurements = [
        Measurement(
            name=PROBABILITY,
            value=float(probabilities[predicted]),
            unit=NO_UNITS,
        )
    ]
    for name in codes_by_class:
        measurements.append(
            Measurement(
                name=CodedConcept(
                    value=f"probability:{name}"[:64],
                    scheme_designator=PRIVATE_SCHEME,
                    meaning=f"Probability of {codes_by_class[name].meaning}"[:64],
                ),
                value=float(probabilities[name]),
                unit=NO_UNITS,
            )
        )
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid, identifier=label[:64]),
        algorithm_id=algorithm.identification(),
        source_images=[
            SourceImageForMeasurementGroup(image.SOPClassUID, image.SOPInstanceUID)
            for image in images
        ],
        finding_type=codes_by_class[predicted],
        qualitative_evaluations=[
            QualitativeEvaluation(name=PREDICTED_CLASS, value=codes_by_class[predicted])
        ],
        measurements=measurements,
    )


def study_sr(
    images: Sequence[ImageResult],
    *,
    classes: Sequence[str],
    codes_by_class: Mapping[str, CodedConcept] | None = None,
    algorithm: Algorithm,
) -> Comprehensive3DSR:
    """The Comprehensive 3D SR (TID 1500) of one study's classified images.

    Parameters
    ----------
    images
        The study's images, all with the same StudyInstanceUID, each with a probability
        per class.
    classes
        The run's class names, in the order of its label map.
    codes_by_class
        From :func:`class_codes`; default private-scheme codes.
    algorithm
        usdcm's version, the run id and the weights' sha256.
    """
    if not images:
        message = "no classified image: there is no study to report."
        raise ResultsError(message)
    by_class = dict(codes_by_class or class_codes(classes))
    if list(by_class) != list(classes):
        message = f"class codes for {list(by_class)}; expected the run's classes {list(classes)}."
        raise ResultsError(message)
    sources = [_checked_source(image.source) for image in images]
    studies = {str(source.StudyInstanceUID) for source in sources}
    if len(studies) != 1:
        message = f"one SR reports one study; these images belong to {len(studies)} studies."
        raise ResultsError(message)
    for image in images:
        if set(image.probabilities) != set(classes):
            message = f"an image has probabilities for {sorted(image.probabilities)}."
            raise ResultsError(message)
    study_uid = studies.pop()
    entropy = [study_uid, algorithm.weights_sha256, *sorted(s.SOPInstanceUID for s in sources)]

    def uid(kind: str) -> str:
        return derived_uid(kind, *entropy)

    mean = {
        name: float(np.mean([image.probabilities[name] for image in images])) for name in classes
    }
    groups = [
        _group(
            label="usdcm study classification",
            uid=uid("study-group"),
            images=sources,
            probabilities=mean,
            codes_by_class=by_class,
            algorithm=algorithm,
        )
    ]
    for index, (image, source) in enumerate(zip(images, sources, strict=True), start=1):
        groups.append(
            _group(
                label=f"usdcm image classification {index}",
                uid=uid(f"image-group-{source.SOPInstanceUID}"),
                images=[source],
                probabilities=image.probabilities,
                codes_by_class=by_class,
                algorithm=algorithm,
            )
        )
    device = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=derived_uid("usdcm-device", algorithm.name),
            name=algorithm.name,
            manufacturer_name=algorithm.name,
            model_name=f"{algorithm.name} {algorithm.version}"[:64],
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    sr = Comprehensive3DSR(
        evidence=sources,
        content=report,
        series_instance_uid=uid("series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=uid("instance"),
        instance_number=1,
        manufacturer=algorithm.name,
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
    )
    sr.SoftwareVersions = algorithm.version[:64]
    return sr


def sr_file_name(study_instance_uid: str, secret: ProjectSecret) -> str:
    """``<study key>.sr.dcm``: the study's keyed hash, the ``study_key`` of predict's rows.

    >>> sr_file_name("1.2.3", ProjectSecret(b"k" * 32)).endswith(".sr.dcm")
    True
    """
    return f"{secret.pseudonym(study_instance_uid, namespace='study')}.sr.dcm"


def dataset_bytes(dataset: Dataset) -> bytes:
    """``dataset`` as a DICOM Part 10 file (preamble, file meta)."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_sr(sr: Dataset, folder: Path, secret: ProjectSecret) -> Path:
    """Write ``sr`` atomically as ``folder/<study key>.sr.dcm``; return the path."""
    path = folder / sr_file_name(str(sr.StudyInstanceUID), secret)
    atomic_write_bytes(path, dataset_bytes(sr))
    return path
