"""Results back into the original study: predict's rows -> one SR per study -> the PACS.

Owns joining ``usdcm predict``'s pseudonymous rows back to their source headers (through
the keyed ``image_id`` of each SOPInstanceUID, under the same secret), writing one TID 1500
SR per study (:mod:`usdcm.results.sr`) and sending them (:mod:`usdcm.network.send`); and
:func:`classify_and_send`, which ``usdcm listen --predict`` calls on a completed study.
The SRs carry the real patient module, inside the DICOM objects only; logs, file names
and the predictions CSV carry keyed hashes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usdcm.errors import ResultsError
from usdcm.network.send import SendResult, TlsOptions, send_files
from usdcm.privacy import ProjectSecret

if TYPE_CHECKING:
    from highdicom.sr import CodedConcept

    from usdcm.inference.model import Classifier
    from usdcm.results.sr import Algorithm

log = logging.getLogger(__name__)

CODES_NAMES = ("codes.json", "codes.toml")
"""Class-code files looked up in the run folder when no ``--codes`` is given."""


@dataclass
class ResultsBack:
    """What came of one results-back pass: the SRs written, and the send when there was one."""

    srs: list[Path]
    sent: SendResult | None = None


def run_id(run: Path) -> str:
    """The run's id: its folder's name (``run`` may be the folder or its checkpoint).

    >>> run_id(Path("runs/r18")), run_id(Path("runs/r18/best.pt"))
    ('r18', 'r18')
    """
    return run.parent.name if run.suffix == ".pt" else run.name


def default_secret_file(trained: Classifier, fallback: Path) -> Path:
    """The secret that makes predict's ids match the run's manifest: the ingest's own, when
    the run records its manifest and the secret is still beside it; else ``fallback``."""
    from usdcm.ingest.pipeline import STATE_DIR

    trained_on = trained.manifest_path
    ingest_secret = trained_on.parent / STATE_DIR / "secret" if trained_on else None
    if ingest_secret is not None and ingest_secret.is_file():
        return ingest_secret
    return fallback


def algorithm_of(trained: Classifier, run: Path) -> Algorithm:
    """usdcm's version, the run id and the weights' sha256, for the SR."""
    from usdcm import __version__
    from usdcm.results.sr import Algorithm

    return Algorithm(
        version=__version__, run_id=run_id(run), weights_sha256=trained.checkpoint_sha256
    )


def codes_for(run: Path, classes: Sequence[str], codes: Path | None) -> dict[str, CodedConcept]:
    """The class codes: ``codes``, else ``RUN/codes.json`` or ``.toml``, else private."""
    from usdcm.results.sr import load_class_codes

    if codes is None:
        folder = run.parent if run.suffix == ".pt" else run
        codes = next((folder / n for n in CODES_NAMES if (folder / n).is_file()), None)
    return load_class_codes(codes, classes)


def source_headers(source: Path, secret: ProjectSecret, image_ids: set[str]) -> dict[str, Any]:
    """The header (no pixel data) of each file under ``source`` whose keyed SOPInstanceUID
    is in ``image_ids``; the first file of a duplicated instance, as predict selects.

    Files are opened as the header scan opens them (a raw data set without preamble too),
    and the UIDs the SR references are the ones predict read (from the file meta when the
    data set lacks them), so every classified image is found again.
    """
    from usdcm.ingest.scan import walk_files

    found: dict[str, Any] = {}
    files = [source] if source.is_file() else (source / path for path in walk_files(source))
    for path in files:
        header = _read_source(path)
        if header is None:
            continue  # predict excluded it already, with its reason
        dataset, instance = header
        key = secret.pseudonym(instance.sop_instance_uid, namespace="image")
        if key in image_ids and key not in found:
            dataset.SOPClassUID = instance.sop_class_uid
            dataset.SOPInstanceUID = instance.sop_instance_uid
            dataset.StudyInstanceUID = instance.study_instance_uid
            dataset.SeriesInstanceUID = instance.series_instance_uid
            found[key] = dataset
    return found


def _read_source(path: Path) -> tuple[Any, Any] | None:
    """``path``'s data set (header only) and its checked header facts; None if unreadable."""
    import warnings

    import pydicom

    from usdcm.dicom.header import header_from_dataset, sniff_dicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=not sniff_dicom(path))
            instance = header_from_dataset(dataset).instance
    except Exception:  # predict's scan recorded why; a damaged header may raise any type
        return None
    if not instance.sop_instance_uid or not instance.study_instance_uid:
        return None
    return dataset, instance


def write_study_srs(
    rows: Sequence[Mapping[str, Any]],
    source: Path,
    *,
    classes: Sequence[str],
    secret: ProjectSecret,
    sr_out: Path,
    algorithm: Algorithm,
    codes_by_class: Mapping[str, CodedConcept] | None = None,
) -> list[Path]:
    """One SR per study of predict's ``rows`` (from files under ``source``) into ``sr_out``.

    Returns the SR paths, ``sr_out/<study key>.sr.dcm``, in the order of the rows' studies.
    """
    from usdcm.results.sr import ImageResult, study_sr, write_sr

    by_id = {str(row["image_id"]): row for row in rows}
    headers = source_headers(source, secret, set(by_id))
    missing = len(set(by_id) - set(headers))
    if missing:
        message = (
            f"{missing} classified images are no longer under the source folder; "
            "their study SRs cannot reference them."
        )
        raise ResultsError(message)
    studies: dict[str, list[ImageResult]] = {}
    for image_id, row in by_id.items():
        header = headers[image_id]
        probabilities = {name: float(row[f"prob_{name}"]) for name in classes}
        studies.setdefault(str(header.StudyInstanceUID), []).append(
            ImageResult(source=header, probabilities=probabilities)
        )
    written = []
    for images in studies.values():
        sr = study_sr(images, classes=classes, codes_by_class=codes_by_class, algorithm=algorithm)
        written.append(write_sr(sr, sr_out, secret))
    log.info("wrote %d study SRs (%d images)", len(written), len(by_id))
    return written


def send_results(
    srs: Sequence[Path],
    *,
    dimse: str | None,
    dicomweb: str | None,
    outbox: Path,
    tls: TlsOptions | None = None,
) -> SendResult | None:
    """Send ``srs`` when a destination is given (over TLS with ``tls``); None when none is."""
    if dimse is None and dicomweb is None:
        return None
    return send_files(srs, dimse=dimse, dicomweb=dicomweb, outbox=outbox, tls=tls)


_MODELS: dict[Path, Classifier] = {}
_MODELS_LOCK = threading.Lock()


def _cached_model(run: Path) -> Classifier:
    """``run``'s model, loaded once per process (listen classifies study after study)."""
    from usdcm.inference.model import load_trained_model

    key = run.resolve()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_trained_model(run, "auto")
        return _MODELS[key]


def classify_and_send(
    study_dir: Path,
    run: Path,
    *,
    sr_out: Path,
    dimse: str | None,
    dicomweb: str | None,
    outbox: Path,
    codes: Path | None = None,
    secret: ProjectSecret | None = None,
    tls: TlsOptions | None = None,
) -> list[Path]:
    """Classify every file of a received study, write its SR, send it; the SR paths.

    For ``usdcm listen --predict RUN``: runs on a worker thread, never on an association's.
    Writes ``sr_out/<study_dir name>.predictions.csv`` (pseudonymous, with its
    ``.excluded.csv``) and one SR per study found (one, for a study folder). A send that
    fails leaves the SRs in ``outbox`` with their reasons; it does not raise.

    Parameters
    ----------
    study_dir
        A study folder of received instances (or any folder of DICOM files).
    run
        The run folder of the model.
    sr_out
        Where the SRs and the predictions CSV go.
    dimse, dicomweb
        At most one destination (``AET@host:port`` or a DICOMweb root URL); neither writes
        the SRs without sending them.
    outbox
        Where SRs that could not be sent are kept.
    codes
        Class codes file; default ``RUN/codes.json`` or ``.toml``, else private codes.
    secret
        Default: the secret of the ingest the run was trained on, else
        ``sr_out/.usdcm/secret``.
    tls
        TLS for the send (:class:`usdcm.network.send.TlsOptions`); None sends in the clear.
    """
    from usdcm.artifacts.predictions import write_source_predictions
    from usdcm.inference.predict import predict_source
    from usdcm.ingest.pipeline import STATE_DIR

    trained = _cached_model(run)
    if secret is None:
        fallback = sr_out / STATE_DIR / "secret"
        secret = ProjectSecret.load_or_create(default_secret_file(trained, fallback))
    found = predict_source(trained, study_dir, secret=secret)
    write_source_predictions(
        sr_out / f"{study_dir.name}.predictions.csv", found.rows, found.excluded, trained.classes
    )
    if not found.rows:
        log.info("study %s: no image classified, no SR", study_dir.name)
        return []
    srs = write_study_srs(
        found.rows,
        study_dir,
        classes=trained.classes,
        secret=secret,
        sr_out=sr_out,
        algorithm=algorithm_of(trained, run),
        codes_by_class=codes_for(run, trained.classes, codes),
    )
    sent = send_results(srs, dimse=dimse, dicomweb=dicomweb, outbox=outbox, tls=tls)
    if sent is not None:
        log.info(
            "study %s: %d SRs sent to %s, %d in the outbox",
            study_dir.name,
            len(sent.sent),
            sent.destination,
            len(sent.failed),
        )
    return srs
