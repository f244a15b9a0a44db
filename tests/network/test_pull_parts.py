"""The pull's pieces without a server: multipart parsing, QIDO paging, part headers."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from usdcm.errors import PullError
from usdcm.network import pull as pull_module
from usdcm.network.pull import _boundary, _paged, iter_parts, parse_query, part_uids


def multipart(parts: list[bytes], boundary: bytes = b"XyZ-42") -> bytes:
    out = b""
    for part in parts:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_parts_survive_any_chunking(chunk: int) -> None:
    """Delimiters that straddle chunks, bodies holding CRLF and dashes."""
    parts = [b"first", b"\r\n--XyZ\r\nnot a delimiter--", b"", bytes(range(256)) * 3]
    body = multipart(parts)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    assert list(iter_parts(chunks, b"XyZ-42")) == parts


def test_a_cut_stream_is_an_error_after_its_complete_parts() -> None:
    body = multipart([b"one", b"two"])
    cut = body[: body.index(b"two") + 2]
    got = []
    with pytest.raises(PullError, match="ended early, after 1 complete"):
        for part in iter_parts([cut], b"XyZ-42"):
            got.append(part)
    assert got == [b"one"]


def test_a_part_without_a_blank_line_is_an_error() -> None:
    with pytest.raises(PullError, match="without headers"):
        list(iter_parts([b"--b\r\nno blank line\r\n--b--"], b"b"))


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ('multipart/related; type="application/dicom"; boundary="a b"', b"a b"),
        ("multipart/related; boundary=abc; type=application/dicom", b"abc"),
        ("application/dicom", None),
    ],
)
def test_boundary(content_type: str, expected: bytes | None) -> None:
    assert _boundary(content_type) == expected


@pytest.mark.parametrize(
    ("content_type", "message"),
    [("text/html", "not multipart/related"), ("multipart/related", "names no boundary")],
)
def test_bad_content_type(content_type: str, message: str) -> None:
    with pytest.raises(PullError, match=message):
        _boundary(content_type)


def dataset_bytes(*, part10: bool) -> bytes:
    ds = pydicom.Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2", "1.2.3", "1.2.3.4"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    out = io.BytesIO()
    if part10:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out, enforce_file_format=True)
    else:
        ds.save_as(out, implicit_vr=True, little_endian=True)  # raw, as some PACS hold them
        assert out.getvalue()[128:132] != b"DICM"
    return out.getvalue()


@pytest.mark.parametrize("part10", [True, False])
def test_part_uids(part10: bool) -> None:
    assert part_uids(dataset_bytes(part10=part10)) == ("1.2", "1.2.3", "1.2.3.4")


def test_part_uids_of_garbage() -> None:
    with pytest.raises(PullError, match="without Study, Series or SOP"):
        part_uids(b"\x00\x01")


class FakeSearch:
    """A QIDO-RS endpoint over ``n`` results, with the paging faults servers have."""

    def __init__(self, n: int, fault: str = "") -> None:
        self.items = [{"k": index} for index in range(n)]
        self.fault = fault
        self.calls: list[tuple[int | None, int]] = []

    def __call__(self, limit: int | None, offset: int) -> list[dict[str, Any]]:
        self.calls.append((limit, offset))
        if self.fault == "empty-after-first" and offset > 0:
            return []
        if self.fault == "ignores-offset":
            offset = 0
        return self.items[offset : offset + limit if limit else None]


@pytest.mark.parametrize("fault", ["", "empty-after-first", "ignores-offset"])
@pytest.mark.parametrize("n", [0, 3, 4, 5, 11])
def test_paging_finds_everything_whatever_the_server_does(
    n: int, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull_module, "PAGE_SIZE", 4)
    search = FakeSearch(n, fault)
    assert _paged(search, lambda item: item["k"]) == list(range(n))
    assert len(search.calls) <= n // 4 + 3


def test_one_short_page_is_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "PAGE_SIZE", 4)
    search = FakeSearch(3)
    _paged(search, lambda item: item["k"])
    assert search.calls == [(4, 0)]


def test_query_hex_tag_and_blank_value() -> None:
    assert parse_query("00080061=US&PatientName=") == {"00080061": "US", "PatientName": ""}


@pytest.mark.parametrize(
    ("text", "message"), [("StudyDate", "KEY=VALUE"), ("Modality=US&Modality=CT", "twice")]
)
def test_bad_query(text: str, message: str) -> None:
    with pytest.raises(PullError, match=message):
        parse_query(text)
