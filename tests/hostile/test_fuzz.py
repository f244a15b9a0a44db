"""Mutation fuzzing of ingest: every damaged file ends in the manifest or in excluded.csv.

No case may crash a worker, hang past the per-file time limit or stop the run.
"""

from __future__ import annotations

import csv
import io
import signal
import struct
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames

from tests.hostile.fuzzer import MUTATIONS, draw_cases, make_case, write_cases
from usdcm import parallel
from usdcm.dicom.pixels import decode_frames
from usdcm.errors import DecodeError
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest import convert as convert_module
from usdcm.parallel import map_files

# Mutated headers make pydicom warn while the fuzzer writes them; that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
def test_each_mutation_kind_changes_every_seed(kind: str, seeds: dict[str, bytes]) -> None:
    for name, data in seeds.items():
        for rng_seed in range(3):
            mutated = MUTATIONS[kind](data, np.random.default_rng(rng_seed))
            assert mutated != data, f"{kind} left {name} unchanged (rng seed {rng_seed})"


def test_cases_are_reproducible(seeds: dict[str, bytes]) -> None:
    cases = draw_cases(seeds, 30, seed=5)
    assert cases == draw_cases(seeds, 30, seed=5)
    assert {kind for case in cases for kind in case.kinds} == set(MUTATIONS)
    for case in cases[:10]:
        assert make_case(seeds, case) == make_case(seeds, case)


def _patient_names(seeds: dict[str, bytes]) -> set[str]:
    names = set()
    for data in seeds.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        names.update(
            p for p in str(dataset.get("PatientName", "")).upper().split("^") if len(p) > 3
        )
    return names


def _ingest_fuzzed(tmp_path: Path, seeds: dict[str, bytes], n: int, seed: int) -> None:
    cases = draw_cases(seeds, n, seed=seed)
    paths = write_cases(tmp_path / "export", seeds, cases)
    started = time.perf_counter()
    result = ingest(tmp_path / "export", tmp_path / "out", IngestOptions(workers=2))
    elapsed = time.perf_counter() - started

    manifest = read_csv(result.manifest_path)
    excluded = read_csv(result.excluded_path)
    listed = [row["source_path"] for row in manifest] + [row["path"] for row in excluded]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert len(listed) == len(paths)
    # a name may be redacted when a damaged header makes one of its words look like an
    # identifier; ingest is right to be cautious, so only the others are compared by name
    plain = {name for name in listed if not name.startswith("redacted-")}
    assert plain <= {path.name for path in paths}
    assert all(row["code"] and row["reason"].strip() for row in excluded)
    crashed = [row["path"] for row in excluded if "crash" in row["reason"]]
    assert not crashed, f"workers died on {crashed[:5]}"
    timed_out = [row["path"] for row in excluded if row["code"] == "timeout"]
    assert not timed_out, f"ran past the per-file time limit: {timed_out[:5]}"
    names = _patient_names(seeds)
    for output in (result.manifest_path, result.excluded_path):
        text = output.read_text(encoding="utf-8").upper()
        leaked = [name for name in names if name in text]
        assert not leaked, f"{output.name} holds patient names from damaged headers"
    assert result.n_images > 0, "the fuzzer damaged every file: it no longer tests the decoder"
    assert elapsed < 30 + n / 5, f"{n} cases took {elapsed:.0f} s"


def test_several_hundred_fuzzed_files_all_end_in_manifest_or_excluded(
    tmp_path: Path, seeds: dict[str, bytes]
) -> None:
    _ingest_fuzzed(tmp_path, seeds, n=400, seed=2024)


@pytest.mark.slow
def test_two_thousand_fuzzed_files_all_end_in_manifest_or_excluded(
    tmp_path: Path, seeds: dict[str, bytes]
) -> None:
    _ingest_fuzzed(tmp_path, seeds, n=2000, seed=99)


# --- bugs the fuzzer found --------------------------------------------------------------


def _multiframe(seeds: dict[str, bytes], syntax_prefix: str) -> pydicom.Dataset:
    for data in seeds.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        if syntax is not None and syntax.name.startswith(syntax_prefix) and frames > 1:
            return dataset
    raise AssertionError(f"no multi-frame {syntax_prefix} seed")


@pytest.mark.parametrize("syntax_prefix", ["JPEG Baseline", "JPEG 2000"])
def test_a_later_frame_claiming_a_huge_size_is_refused_before_decoding(
    syntax_prefix: str, seeds: dict[str, bytes]
) -> None:
    """Frame 2's codestream says 65000 x 65000: the codec would allocate gigabytes."""
    dataset = _multiframe(seeds, syntax_prefix)
    frames = list(generate_frames(dataset.PixelData, number_of_frames=dataset.NumberOfFrames))
    second = bytearray(frames[1])
    if syntax_prefix == "JPEG Baseline":
        at = second.find(b"\xff\xc0") + 5
        second[at : at + 4] = struct.pack(">HH", 65000, 65000)
    else:
        at = second.find(b"\xff\x4f\xff\x51") + 8
        second[at : at + 8] = struct.pack(">II", 65000, 65000)
    frames[1] = bytes(second)
    dataset.PixelData = encapsulate(frames)
    with pytest.raises(DecodeError, match="codestream of frame 2 is 65000 rows x 65000 columns"):
        decode_frames(dataset)


def test_missing_frames_are_refused_before_decoding(seeds: dict[str, bytes]) -> None:
    dataset = _multiframe(seeds, "JPEG Baseline")
    dataset.NumberOfFrames = 100_000
    with pytest.raises(DecodeError, match=r"holds \d frame\(s\) but the header declares 100000"):
        decode_frames(dataset)


# --- the per-file time limit ------------------------------------------------------------


def slow_on_three(value: int) -> int:
    if value == 3:
        time.sleep(60)  # Python code: the alarm interrupts it
    return value * value


def stuck_on_three(value: int) -> int:
    if value == 3:  # like a C codec that never returns: the alarm cannot interrupt it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)
    return value * value


@pytest.mark.parametrize("workers", [1, 2])
def test_an_item_past_the_time_limit_is_a_timeout_and_the_run_goes_on(workers: int) -> None:
    started = time.monotonic()
    pairs = list(
        map_files(
            slow_on_three,
            list(range(8)),
            workers=workers,
            batch_size=2,
            on_crash=lambda _: -1,
            on_timeout=lambda _: -2,
            timeout_s=0.5,
        )
    )
    assert dict(pairs) == {i: (-2 if i == 3 else i * i) for i in range(8)}
    assert len(pairs) == 8
    assert time.monotonic() - started < 20


def test_a_worker_stuck_in_c_code_is_ended_and_its_item_is_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parallel, "HARD_KILL_GRACE_S", 0.5)
    started = time.monotonic()
    pairs = list(
        map_files(
            stuck_on_three,
            list(range(8)),
            workers=2,
            batch_size=2,
            on_crash=lambda _: -1,
            on_timeout=lambda _: -2,
            timeout_s=0.5,
        )
    )
    assert dict(pairs) == {i: (-2 if i == 3 else i * i) for i in range(8)}
    assert len(pairs) == 8
    assert time.monotonic() - started < 30


def test_ingest_excludes_a_file_that_decodes_too_long_with_code_timeout(
    tmp_path: Path, seeds: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = sorted(name for name in seeds if name.startswith("synth-"))[:4]
    export = tmp_path / "export"
    export.mkdir()
    for index, name in enumerate(names):
        (export / f"file{index}").write_bytes(seeds[name])
    decode = convert_module.decode_volume

    def slow_decode(source: Path, *, keep_color: bool) -> convert_module.DecodedVolume:
        if source.name == "file1":
            time.sleep(60)
        return decode(source, keep_color=keep_color)

    monkeypatch.setattr(convert_module, "decode_volume", slow_decode)
    monkeypatch.setattr(parallel, "DEFAULT_FILE_TIMEOUT_S", 1.0)
    result = ingest(export, tmp_path / "out", IngestOptions(workers=2))
    excluded = {row["path"]: row for row in read_csv(result.excluded_path)}
    assert excluded["file1"]["code"] == "timeout"
    assert "longer than the limit of 1 s" in excluded["file1"]["reason"]
    assert result.n_images == len(names) - 1
