"""``usdcm pull`` against a real Orthanc (DICOMweb plugin) on loopback, started by the tests.

The synthetic export is uploaded through Orthanc's REST API, then pulled back with QIDO-RS and
WADO-RS: every instance arrives once, byte-identical, under keyed-hash names; an ingest of the
pulled store matches an ingest of the very files Orthanc accepted; a second pull fetches
nothing; a partly pulled store (a killed pull) is completed by fetching only what is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.peers import Orthanc, PeerError, free_port, orthanc
from usdcm.artifacts.manifest import read_manifest
from usdcm.cli.app import app
from usdcm.ingest import IngestOptions, ingest
from usdcm.network import pull as pull_module
from usdcm.network.auth import dicomweb_client
from usdcm.network.store import ExportStore
from usdcm.synth import ExportSummary

US_QUERY = "ModalitiesInStudy=US"


@dataclass(frozen=True)
class Served:
    """Orthanc holding the synth export; ``accepted`` are the files it stored (first copies)."""

    peer: Orthanc
    accepted: dict[str, Path]  # Orthanc instance id -> the uploaded file
    uids: frozenset[str]  # every Study/Series/SOP UID Orthanc holds


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, synth_mix: ExportSummary) -> Iterator[Served]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as peer:
        accepted: dict[str, Path] = {}
        for path in sorted(p for p in synth_mix.root.rglob("*") if p.is_file()):
            try:
                answer = peer.upload(path)
            except PeerError:  # the export's junk: not DICOM, DICOMDIR, raw data sets
                continue
            if answer.get("Status") == "Success":
                accepted[answer["ID"]] = path
        uids: set[str] = set()
        for instance in peer.rest("/instances?expand"):
            tags = peer.rest(f"/instances/{instance['ID']}/tags?simplify")
            uids.update(
                tags[k] for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
            )
        assert len(accepted) >= 8, "Orthanc took too little of the synth export to test a pull"
        yield Served(peer, accepted, frozenset(uids))


def run_pull(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["pull", *args])
    return result.exit_code, result.output


def expected_paths(served: Served, store: Path) -> dict[Path, Path]:
    """Where each accepted instance must land in ``store`` -> its uploaded file."""
    export = ExportStore(store)
    paths = {}
    for instance_id, source in served.accepted.items():
        tags = served.peer.rest(f"/instances/{instance_id}/tags?simplify")
        keys = export.keys(
            study_uid=tags["StudyInstanceUID"],
            series_uid=tags["SeriesInstanceUID"],
            sop_uid=tags["SOPInstanceUID"],
        )
        paths[export.path_of(keys)] = source
    return paths


def stored_files(store: Path) -> set[Path]:
    return {p for p in store.rglob("*.dcm") if ".usdcm" not in p.parts}


@pytest.fixture(scope="module")
def pulled(served: Served, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The whole US content of Orthanc pulled once through the CLI, with --ingest."""
    base = tmp_path_factory.mktemp("pulled")
    code, output = run_pull(
        "--dicomweb",
        served.peer.dicomweb_url,
        "--query",
        US_QUERY,
        "--store",
        str(base / "export"),
        "--ingest",
        str(base / "data"),
    )
    assert code == 0, output
    return base, output


def test_pull_stores_every_instance_once_byte_identical(
    served: Served, pulled: tuple[Path, str]
) -> None:
    base, output = pulled
    store = base / "export"
    expected = expected_paths(served, store)
    assert stored_files(store) == set(expected)
    for path, source in expected.items():
        assert path.read_bytes() == source.read_bytes(), "the pulled file differs from the upload"
    assert f"{len(expected)} instances fetched" in output


def test_pull_names_and_output_carry_no_uid(served: Served, pulled: tuple[Path, str]) -> None:
    base, output = pulled
    names = [str(p.relative_to(base)) for p in base.rglob("*")]
    for uid in served.uids:
        assert uid not in output
        assert not any(uid in name for name in names)


def test_ingest_of_pulled_files_matches_ingest_of_the_originals(
    served: Served, pulled: tuple[Path, str], tmp_path: Path
) -> None:
    base, _ = pulled
    originals = tmp_path / "originals"
    for index, source in enumerate(sorted(served.accepted.values())):
        target = originals / f"{index:03d}" / source.name
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
    ingest(
        originals,
        tmp_path / "data",
        IngestOptions(workers=1, secret_path=base / "data" / ".usdcm" / "secret"),
    )

    def rows(folder: Path) -> dict[str, dict[str, str]]:
        found = read_manifest(folder / "manifest.csv")
        return {r["sop_uid"]: {k: v for k, v in r.items() if k != "source_path"} for r in found}

    pulled_rows, original_rows = rows(base / "data"), rows(tmp_path / "data")
    assert pulled_rows, "the pulled store ingested to no image"
    assert pulled_rows == original_rows


def test_second_pull_fetches_nothing(served: Served, pulled: tuple[Path, str]) -> None:
    base, _ = pulled
    store = base / "export"
    before = {p: p.stat().st_mtime_ns for p in stored_files(store)}
    code, output = run_pull(
        "--dicomweb", served.peer.dicomweb_url, "--query", US_QUERY, "--store", str(store)
    )
    assert code == 0, output
    assert "0 instances fetched" in output and "already stored" in output
    assert {p: p.stat().st_mtime_ns for p in stored_files(store)} == before


def test_a_partly_pulled_store_gets_only_what_is_missing(served: Served, tmp_path: Path) -> None:
    store = tmp_path / "export"
    code, output = run_pull(
        "--dicomweb", served.peer.dicomweb_url, "--query", US_QUERY, "--store", str(store), "-q"
    )
    assert code == 0, output
    files = sorted(stored_files(store))
    # what a pull killed at various points leaves: a whole study gone, a whole series gone,
    # one instance of a series gone, and a stale temp file of a half-written instance
    studies = sorted({p.parent.parent for p in files})
    gone = [p for p in files if p.parent.parent == studies[0]]
    series = sorted({p.parent for p in files if p.parent.parent != studies[0]})
    gone += [p for p in files if p.parent == series[0]]
    several = next(s for s in series[1:] if len(list(s.glob("*.dcm"))) > 1)
    gone.append(sorted(several.glob("*.dcm"))[0])
    for path in gone:
        path.unlink()
    stale = gone[-1].parent / f".{gone[-1].stem}.abc123.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    shutil.rmtree(studies[0])

    code, output = run_pull(
        "--dicomweb", served.peer.dicomweb_url, "--query", US_QUERY, "--store", str(store)
    )
    assert code == 0, output
    assert f"{len(gone)} instances fetched" in output
    assert sorted(stored_files(store)) == files
    assert not stale.exists()


def test_pull_by_study_uid_takes_only_that_study(served: Served, tmp_path: Path) -> None:
    study = served.peer.studies()[0]
    uid = study["MainDicomTags"]["StudyInstanceUID"]
    n_instances = sum(
        len(served.peer.rest(f"/series/{series}")["Instances"]) for series in study["Series"]
    )
    code, output = run_pull(
        "--dicomweb", served.peer.dicomweb_url, "--study", uid, "--store", str(tmp_path / "export")
    )
    assert code == 0, output
    files = stored_files(tmp_path / "export")
    assert len(files) == n_instances
    assert len({p.parent.parent for p in files}) == 1
    assert uid not in output


def test_paging_stops_when_the_server_ignores_offset(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Orthanc's plugin ignores offset with ModalitiesInStudy: get_remaining would loop."""
    monkeypatch.setattr(pull_module, "PAGE_SIZE", 2)
    client = dicomweb_client(served.peer.dicomweb_url)
    found = pull_module.search_studies(client, query={"ModalitiesInStudy": "US"})
    assert len(found) == len(served.peer.studies())
    everything = pull_module.search_studies(client, query={})
    assert sorted(everything) == sorted(found)


def test_a_study_the_server_lacks_fails_alone(served: Served, tmp_path: Path) -> None:
    present = served.peer.studies()[0]["MainDicomTags"]["StudyInstanceUID"]
    code, output = run_pull(
        "--dicomweb",
        served.peer.dicomweb_url,
        "--study",
        "1.2.3.999",
        "--study",
        present,
        "--store",
        str(tmp_path / "export"),
    )
    assert code == 1, output
    assert "FAILED" in output and "1 of 2 studies failed" in output
    assert stored_files(tmp_path / "export")


def test_unreachable_server_is_one_line_and_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    code, output = run_pull(
        "--dicomweb",
        f"http://127.0.0.1:{free_port()}/dicom-web",
        "--query",
        US_QUERY,
        "--store",
        str(tmp_path / "export"),
    )
    assert code == 2
    assert "cannot connect to the DICOMweb server" in output
    assert "Traceback" not in output
    assert time.monotonic() - started < 10


def test_wrong_root_says_so(served: Served, tmp_path: Path) -> None:
    code, output = run_pull(
        "--dicomweb",
        served.peer.http_url + "/no-such-root",
        "--query",
        US_QUERY,
        "--store",
        str(tmp_path / "export"),
    )
    assert code == 2
    assert "HTTP 404" in output and "DICOMweb root" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--query", "Colour=red"], "not a DICOM keyword"),
        (["--query", "limit=5"], "set by usdcm pull itself"),
        (["--study", "1.2.3/../x"], "digits and dots"),
        (["--study", "1.2.3", "--query", US_QUERY], "not both"),
        ([], "Say what to pull"),
    ],
)
def test_bad_selection_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    code, output = run_pull(
        "--dicomweb", "http://127.0.0.1:9/dicom-web", *args, "--store", str(tmp_path / "export")
    )
    assert code == 2, output
    assert message in output and "Traceback" not in output
