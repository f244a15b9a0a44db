"""A seeded mutation fuzzer over valid ultrasound DICOM files; test code, never shipped.

Each mutation kind is a small function ``(data, rng) -> data`` over the bytes of one
Part 10 file. Kinds that need the DICOM structure read the bytes with pydicom, edit the
data set and write it back; the others work on the raw bytes. A :class:`Case` records the
seed file, the kind and the generator seed, so every mutated file can be made again alone
(``make_case(seeds, case)``) and a failure names what produced it.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, generate_uid

from usdcm.dicom.codecs import JPEG_XL_SYNTAXES
from usdcm.dicom.sop import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE
from usdcm.synth import write_export

Mutation = Callable[[bytes, np.random.Generator], bytes]

PIXEL_DATA = 0x7FE00010
#: Explicit VRs whose header has a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"}) | {
    b"UR",
    b"UT",
    b"UV",
}
SHORT_VRS = (b"AE", b"CS", b"DS", b"FD", b"IS", b"LO", b"SH", b"SS", b"UI", b"UL", b"US", b"AT")

#: pydicom's bundled files that are small and decode with the installed plugins.
PYDICOM_SEEDS = (
    "examples_palette.dcm",  # PALETTE COLOR, native, US
    "examples_ybr_color.dcm",  # JPEG Baseline YBR_FULL_422, 30 frames, US
    "examples_rgb_color.dcm",  # RGB, native, US
    "examples_jpeg2k.dcm",  # JPEG 2000 lossless YBR_RCT, US
    "SC_rgb_rle_2frame.dcm",  # RLE RGB, 2 frames (retagged as US)
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline YBR_FULL (retagged as US)
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS (retagged as US)
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian (retagged as US)
)


# --- seeds -----------------------------------------------------------------------------


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


def _write(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        syntax = dataset.file_meta.get("TransferSyntaxUID")
        if syntax is not None and not UID(syntax).is_transfer_syntax:
            return _write_unknown_syntax(dataset, UID(syntax))
        preamble = dataset.preamble is not None or "TransferSyntaxUID" in dataset.file_meta
        dataset.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


def _write_unknown_syntax(dataset: Dataset, syntax: UID) -> bytes:
    """A Part 10 file in a syntax pydicom 3.0 does not know (JPEG XL, which synth writes):
    explicit VR little endian, as every such syntax is, written past pydicom's check."""
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, dataset.file_meta, enforce_standard=True)
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    body = Dataset(dataset)  # without the file meta
    write_dataset(buffer, body)
    return bytes(buffer.getvalue())


def _encapsulated(syntax: UID | None) -> bool:
    if syntax is None:
        return False
    return syntax in JPEG_XL_SYNTAXES or (syntax.is_transfer_syntax and syntax.is_encapsulated)


def as_ultrasound(dataset: Dataset) -> Dataset:
    """Retag a seed as an ultrasound image, so ingest selects and decodes it."""
    multi = int(dataset.get("NumberOfFrames", 1) or 1) > 1
    sop_class = US_MULTIFRAME_IMAGE_STORAGE if multi else US_IMAGE_STORAGE
    dataset.SOPClassUID = sop_class
    dataset.Modality = "US"
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    return dataset


def load_seeds(work: Path, *, synth_patients: int = 4) -> dict[str, bytes]:
    """Valid ultrasound files to mutate, by name: synth images and pydicom's examples.

    ``work`` receives the synthetic export. Every seed is checked to decode before use.
    """
    summary = write_export(work / "synth", patients=synth_patients, seed=7, frames=3)
    seeds: dict[str, bytes] = {}
    for path in summary.image_paths:
        name = "synth-" + path.relative_to(summary.root).as_posix().replace("/", "-")
        seeds[name] = path.read_bytes()
    for name in PYDICOM_SEEDS:
        path = get_testdata_file(name)
        assert path is not None, f"pydicom's test file {name} is missing"
        data = Path(str(path)).read_bytes()
        seeds["pydicom-" + name.removesuffix(".dcm")] = _write(as_ultrasound(_read(data)))
    return seeds


# --- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Element:
    """Where one top-level element sits in the file bytes."""

    tag: int
    vr: bytes  # b"" for implicit VR
    header: int  # offset of the tag
    length_at: int  # offset of the length field
    length_size: int  # 2 or 4
    value_at: int


def _elements(data: bytes) -> list[_Element]:
    """The top-level elements of the data set (not the file meta) and their offsets."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=64)
    implicit = dataset.original_encoding[0]
    found: list[_Element] = []
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        tell = getattr(raw, "value_tell", None)
        if tell is None or tag >> 16 == 0x0002:
            continue
        if implicit:
            found.append(_Element(int(tag), b"", tell - 8, tell - 4, 4, tell))
            continue
        short_vr = data[tell - 4 : tell - 2]
        if short_vr.isalpha() and short_vr not in LONG_VRS:
            found.append(_Element(int(tag), short_vr, tell - 8, tell - 2, 2, tell))
        else:
            found.append(
                _Element(int(tag), data[tell - 8 : tell - 6], tell - 12, tell - 4, 4, tell)
            )
    return found


def _pixel_element(data: bytes) -> _Element | None:
    return next((e for e in _elements(data) if e.tag == PIXEL_DATA), None)


def _item(value: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(value)) + value


def _flip(data: bytes, rng: np.random.Generator, start: int, stop: int, count: int) -> bytes:
    """Xor ``count`` bytes in ``data[start:stop]`` with random non-zero masks."""
    out = bytearray(data)
    stop = max(stop, start + 1)
    for offset in rng.integers(start, min(stop, len(out)), size=count):
        out[int(offset)] ^= int(rng.integers(1, 256))
    return bytes(out)


# --- mutation kinds --------------------------------------------------------------------


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """Cut the file anywhere: in the preamble, the meta, the header or the pixels."""
    return data[: int(rng.integers(0, len(data)))]


def flip_header_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip 1-8 bytes before the Pixel Data (tags, VRs, lengths, values)."""
    pixel = _pixel_element(data)
    stop = pixel.value_at if pixel is not None else len(data)
    return _flip(data, rng, 132, stop, int(rng.integers(1, 9)))


def flip_pixel_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip 1-64 bytes inside the Pixel Data value (codestream markers included)."""
    pixel = _pixel_element(data)
    start = pixel.value_at if pixel is not None else len(data) // 2
    return _flip(data, rng, start, len(data), int(rng.integers(1, 65)))


def wrong_vr(data: bytes, rng: np.random.Generator) -> bytes:
    """Give an element a wrong VR: swap the VR bytes of an explicit VR element for
    another of the same header size (the parser stays in step and misreads the value), or
    re-encode an image attribute under another VR (implicit VR files)."""
    candidates = [e for e in _elements(data) if e.vr and e.tag != PIXEL_DATA]
    if candidates:
        element = candidates[int(rng.integers(len(candidates)))]
        pool = sorted(LONG_VRS if element.length_size == 4 else set(SHORT_VRS))
        choices = [vr for vr in pool if vr != element.vr]
        vr = choices[int(rng.integers(len(choices)))]
        at = element.header + 4
        return data[:at] + vr + data[at + 2 :]
    dataset = _read(data)
    keyword = str(rng.choice(["Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]))
    tag = dataset.data_element(keyword).tag if keyword in dataset else 0x00280010
    vr, value = [("LO", "abc"), ("UL", 70000), ("FD", 2.5), ("OB", b"\x01\x02\x03")][
        int(rng.integers(4))
    ]
    dataset[tag] = DataElement(tag, vr, value)
    return _write(dataset)


def overrun_length(data: bytes, rng: np.random.Generator) -> bytes:
    """Set an element's length past the end of the file (or to an odd, huge value)."""
    elements = _elements(data)
    pixel = [e for e in elements if e.tag == PIXEL_DATA]
    element = (
        pixel[0] if pixel and rng.random() < 0.4 else elements[int(rng.integers(len(elements)))]
    )
    limit = 0xFFFF if element.length_size == 2 else 0xFFFFFFFE
    past_end = len(data) - element.value_at + int(rng.integers(1, 4096))
    length = min(int(rng.choice([past_end, limit, limit - 1])), limit)
    fmt = "<H" if element.length_size == 2 else "<I"
    packed = struct.pack(fmt, length)
    if packed == data[element.length_at : element.length_at + element.length_size]:
        packed = struct.pack(fmt, length - 1)
    return data[: element.length_at] + packed + data[element.length_at + element.length_size :]


def lying_geometry(data: bytes, rng: np.random.Generator) -> bytes:
    """Make Rows, Columns or Number of Frames lie, small or absurdly large."""
    dataset = _read(data)
    rows, columns = int(dataset.Rows), int(dataset.Columns)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    lies: list[tuple[str, int]] = [
        ("Rows", 65535),
        ("Columns", 65535),
        ("Rows", max(rows // 2, 1)),
        ("Columns", columns + 1),
        ("Rows", 0),
        ("NumberOfFrames", 1_000_000),
        ("NumberOfFrames", 100_000),
        ("NumberOfFrames", frames + 1),
        ("NumberOfFrames", 0),
        ("NumberOfFrames", -3),
        ("NumberOfFrames", 2**31 - 1),
    ]
    keyword, value = lies[int(rng.integers(len(lies)))]
    if keyword == "NumberOfFrames" and value == frames:
        value += 1
    if keyword == "NumberOfFrames":
        dataset.NumberOfFrames = str(value)
    else:
        setattr(dataset, keyword, value)
    if rng.random() < 0.3:  # sometimes a second lie
        dataset.Columns = 65535 if keyword != "Columns" else 1
    return _write(dataset)


def drop_fragments(data: bytes, rng: np.random.Generator) -> bytes:
    """Remove fragments of encapsulated Pixel Data (or whole frames of native data)."""
    dataset = _read(data)
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    pixels = bytes(dataset.PixelData)
    if _encapsulated(syntax):
        fragments = list(generate_fragments(pixels))
        keep = [f for f in fragments if rng.random() < 0.6]
        if len(keep) == len(fragments):
            keep.pop(int(rng.integers(len(keep))))
        if not keep:
            keep = [b"\xff\xd9"]
        items = b"".join(_item(f + b"\0" * (len(f) % 2)) for f in keep)
        bot = pixels[: 8 + struct.unpack("<I", pixels[4:8])[0]]
        if rng.random() < 0.5:
            bot = _item(b"")  # no Basic Offset Table
        # else keep a Basic Offset Table that still points at the lost fragments
        dataset.PixelData = bot + items + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return _write(dataset)
    cut = int(rng.integers(1, max(len(pixels) // 2, 2)))
    start = int(rng.integers(0, len(pixels) - cut))
    pixels = pixels[:start] + pixels[start + cut :]
    dataset.PixelData = pixels + b"\0" * (len(pixels) % 2)
    return _write(dataset)


def palette_mismatch(data: bytes, rng: np.random.Generator) -> bytes:
    """Make a palette disagree with Bits Stored, or its descriptor with its data."""
    dataset = _read(data)
    if dataset.get("PhotometricInterpretation") != "PALETTE COLOR":
        dataset.PhotometricInterpretation = "PALETTE COLOR"
        dataset.SamplesPerPixel = 1
        lut = rng.integers(0, 256, size=int(rng.choice([16, 256, 300])), dtype=np.uint16)
        for offset in (0, 1, 2):  # Red, Green, Blue
            dataset[0x00281101 + offset] = DataElement(0x00281101 + offset, "US", [len(lut), 0, 16])
            dataset[0x00281201 + offset] = DataElement(0x00281201 + offset, "OW", lut.tobytes())
        return _write(dataset)
    choice = int(rng.integers(5))
    if choice == 0:
        dataset.BitsStored = int(rng.choice([1, 12, 16]))
        dataset.BitsAllocated = max(int(dataset.BitsAllocated), int(dataset.BitsStored))
    elif choice == 1:
        descriptor = [int(v) for v in dataset.RedPaletteColorLookupTableDescriptor]
        descriptor[0] = int(rng.choice([1, 17, 4096, 0]))
        dataset.RedPaletteColorLookupTableDescriptor = descriptor
    elif choice == 2:
        descriptor = [int(v) for v in dataset.GreenPaletteColorLookupTableDescriptor]
        descriptor[2] = int(rng.choice([1, 12, 32, 0]))
        dataset.GreenPaletteColorLookupTableDescriptor = descriptor
    elif choice == 3:
        dataset.BluePaletteColorLookupTableData = bytes(dataset.BluePaletteColorLookupTableData)[
            : int(rng.integers(0, 8))
        ]
    else:
        descriptor = [int(v) for v in dataset.RedPaletteColorLookupTableDescriptor]
        descriptor[1] = int(rng.choice([-100, 200, 65535]) % 65536)
        for colour in ("Red", "Green", "Blue"):
            setattr(dataset, f"{colour}PaletteColorLookupTableDescriptor", descriptor)
    return _write(dataset)


def deep_sequence(data: bytes, rng: np.random.Generator) -> bytes:
    """Insert a Content Sequence nested 20 to 5,000 levels deep (undefined lengths),
    just before the Pixel Data."""
    depth = int(rng.choice([20, 200, 1000, 5000]))
    elements = _elements(data)
    implicit = not any(e.vr for e in elements)
    pixel = next((e for e in elements if e.tag == PIXEL_DATA), None)
    at = pixel.header if pixel is not None else len(data)
    tag = struct.pack("<HH", 0x0040, 0xA730)
    sequence = tag + (b"" if implicit else b"SQ\0\0") + b"\xff\xff\xff\xff"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = (sequence + item) * depth + (item_end + sequence_end) * depth
    return data[:at] + nested + data[at:]


MUTATIONS: dict[str, Mutation] = {
    "truncate": truncate,
    "flip_header_bytes": flip_header_bytes,
    "flip_pixel_bytes": flip_pixel_bytes,
    "wrong_vr": wrong_vr,
    "overrun_length": overrun_length,
    "lying_geometry": lying_geometry,
    "drop_fragments": drop_fragments,
    "palette_mismatch": palette_mismatch,
    "deep_sequence": deep_sequence,
}


# --- cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One mutated file: which seed, which kinds (applied in order) and the generator seed."""

    index: int
    seed_name: str
    kinds: tuple[str, ...]
    rng_seed: int

    @property
    def file_name(self) -> str:
        """The kinds, not the seed: seed names hold the fake patient IDs of the synth
        folders, which ingest would rightly redact in the recorded paths."""
        return f"case{self.index:05d}-{'+'.join(self.kinds)}"


def draw_cases(seed_names: Iterable[str], n: int, *, seed: int) -> list[Case]:
    """Draw ``n`` cases: every kind and every seed equally often, 1 in 5 with two kinds."""
    names = sorted(seed_names)
    kinds = sorted(MUTATIONS)
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(n):
        chosen = [kinds[index % len(kinds)]]
        if rng.random() < 0.2:
            chosen.append(kinds[int(rng.integers(len(kinds)))])
        seed_name = names[(index // len(kinds) + index) % len(names)]
        cases.append(Case(index, seed_name, tuple(chosen), int(rng.integers(2**32))))
    return cases


def with_unique_uid(data: bytes, index: int) -> bytes:
    """Give the file its own SOPInstanceUID, so no case is excluded as a duplicate."""
    dataset = _read(data)
    uid = generate_uid(entropy_srcs=[f"fuzz-case-{index}"])
    dataset.SOPInstanceUID = uid
    dataset.file_meta.MediaStorageSOPInstanceUID = uid
    return _write(dataset)


def make_case(seeds: dict[str, bytes], case: Case) -> bytes:
    """The bytes of ``case``: its seed with a unique UID, mutated by each kind in turn."""
    data = with_unique_uid(seeds[case.seed_name], case.index)
    rng = np.random.default_rng(case.rng_seed)
    data = MUTATIONS[case.kinds[0]](data, rng)  # every kind applies to every seed
    for kind in case.kinds[1:]:
        try:
            data = MUTATIONS[kind](data, rng)
        except Exception:  # after another mutation, no structure may be left to edit
            data = truncate(data, rng) if len(data) > 1 else data
    return data


def write_cases(folder: Path, seeds: dict[str, bytes], cases: Iterable[Case]) -> list[Path]:
    """Write every case into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = folder / case.file_name
        path.write_bytes(make_case(seeds, case))
        paths.append(path)
    return paths
