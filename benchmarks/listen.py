"""Receive throughput: ``usdcm listen`` against DCMTK's ``storescp``, both fed by ``dcmsend``.

The baseline, measured in the same run on the same files, is DCMTK's own storage SCP
(``storescp +xa``, accepting every transfer syntax, the same maximum PDU). Both receive one
``dcmsend -dn`` association of the same files, on loopback; the time is dcmsend's wall time
(association, all C-STOREs and release). Two workloads: many single-frame images, and a few
cine loops. Each is sent ``--repeats`` times into an emptied store; the best time counts.
Everything runs twice: with DCMTK's defaults (Nagle's algorithm on in its sockets) and with
``TCP_NODELAY=1`` in the environment of dcmsend and both receivers.

Not the same work: ``usdcm listen`` fsyncs every file and its folder before it acknowledges
it, and names files by keyed hashes; ``storescp`` writes without fsync. The ratio is
usdcm's instances per second over storescp's (target >= 0.8).

With ``--ceiling`` a third receiver runs: ``usdcm listen`` in a process where ``os.fsync`` does
nothing (storescp's durability, which usdcm does not ship) and pynetdicom's two polling loops
(its DUL reactor's 1 ms idle delay and the association reactor's 1 ms sleep per loop) wait
50 us instead. It shows how fast pynetdicom's receive path can go on this machine with every
cost of usdcm's own removed: an upper bound, not a mode of the product.

Run: ``python benchmarks/listen.py [--images 300] [--cines 12] [--repeats 3]`` (needs
``dcmtk``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from _machine import describe

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
MAX_PDU = 131072
START_TIMEOUT_S = 30.0

CEILING_BOOTSTRAP = """
import os, sys, time
os.fsync = lambda fd: None
import pynetdicom.association as association
import pynetdicom.dul as dul
class _Clock:
    def __getattr__(self, name):
        return getattr(time, name)
    def sleep(self, seconds):
        time.sleep(5e-05 if seconds == 0.001 else seconds)
association.time = _Clock()
_init = dul.DULServiceProvider.__init__
def _fast_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self._run_loop_delay = 5e-05
dul.DULServiceProvider.__init__ = _fast_init
from usdcm.cli.app import main
sys.argv[0] = "usdcm"
main()
"""
"""``usdcm listen`` without fsync and with pynetdicom's polling delays cut (``--ceiling``)."""


@dataclass(frozen=True)
class Workload:
    name: str
    folder: Path
    files: int
    bytes: int


@dataclass(frozen=True)
class Timing:
    seconds: float
    stored: int

    def per_second(self, workload: Workload) -> tuple[float, float]:
        return workload.files / self.seconds, workload.bytes / 1e6 / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_images(folder: Path, count: int, *, frames: int, rows: int, columns: int) -> Workload:
    """``count`` US instances of random 8-bit pixels (Explicit VR LE), one study."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    study, series = generate_uid(), generate_uid()
    total = 0
    for index in range(count):
        ds = Dataset()
        ds.SOPClassUID = US_MULTIFRAME if frames > 1 else US_IMAGE
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.Modality = "ZZBENCH", "US"
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = rng.integers(0, 255, (frames, rows, columns), dtype=np.uint8).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{index:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    kind = f"{frames}-frame" if frames > 1 else "single-frame"
    name = f"{count} {kind} {columns}x{rows}"
    return Workload(name, folder, count, total)


def dcmsend(port: int, folder: Path, env: dict[str, str]) -> float:
    command = ["dcmsend", "-dn", "+sd", "-aet", "BENCH", "-aec", "USDCM", "--max-pdu", "131072"]
    command += ["127.0.0.1", str(port), str(folder)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"dcmsend failed ({result.returncode}): {result.stderr[-2000:]}")
    return took


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def _wait_for_log(text: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"usdcm listen did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.name.startswith("."):
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _count(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file() and ".usdcm" not in path.parts)


def measure(
    receiver: str, workload: Workload, work: Path, repeats: int, env: dict[str, str]
) -> Timing:
    """Best of ``repeats`` sends of ``workload`` into ``receiver`` (``storescp``, ``usdcm`` or
    ``ceiling``)."""
    store = work / f"{receiver}-store"
    store.mkdir()
    log = work / f"{receiver}.log"
    port = free_port()
    if receiver == "storescp":
        command = ["storescp", "+xa", "-pdu", str(MAX_PDU), "-od", str(store), str(port)]
    else:
        start = ["-c", CEILING_BOOTSTRAP] if receiver == "ceiling" else ["-m", "usdcm"]
        command = [sys.executable, *start, "listen", "--store", str(store)]
        command += ["--port", str(port), "--no-status", "--quiet", "1h"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        if receiver == "storescp":
            _wait_for_port(port, process, log)
        else:
            _wait_for_log("listening on", process, log)
        best, stored = float("inf"), 0
        for _ in range(repeats):
            _empty(store)
            best = min(best, dcmsend(port, workload.folder, env))
            stored = _count(store)
            if stored != workload.files:
                raise RuntimeError(f"{receiver} stored {stored} of {workload.files} files")
        return Timing(best, stored)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="single-frame 640x480 images")
    parser.add_argument("--cines", type=int, default=12, help="40-frame 640x480 cine loops")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also run usdcm listen without fsync and with pynetdicom's polling cut (a bound)",
    )
    args = parser.parse_args()
    receivers = ("storescp", "usdcm", "ceiling") if args.ceiling else ("storescp", "usdcm")
    for binary in ("dcmsend", "storescp"):
        if shutil.which(binary) is None:
            sys.exit(f"{binary} is not installed (apt-get install dcmtk)")
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory(prefix="usdcm-bench-listen-") as folder:
        work = Path(folder)
        workloads = [
            write_images(work / "images", args.images, frames=1, rows=480, columns=640),
            write_images(work / "cines", args.cines, frames=40, rows=480, columns=640),
        ]
        ratios: dict[str, float] = {}
        for nodelay in (False, True):
            # DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment;
            # off, its acceptor stalls ~40 ms per small instance on delayed ACKs. Both modes
            # are shown; the variable reaches dcmsend and both receivers alike.
            env = dict(os.environ)
            env.pop("TCP_NODELAY", None)
            if nodelay:
                env["TCP_NODELAY"] = "1"
            mode = "TCP_NODELAY=1" if nodelay else "DCMTK defaults"
            for workload in workloads:
                print(f"\n[{mode}] {workload.name}: {workload.bytes / 1e6:.1f} MB")
                results = {}
                for receiver in receivers:
                    scratch = work / f"{workload.folder.name}-{receiver}-{int(nodelay)}"
                    scratch.mkdir()
                    timing = measure(receiver, workload, scratch, args.repeats, env)
                    results[receiver] = timing
                    per_s, mb_s = timing.per_second(workload)
                    print(
                        f"  {receiver:9s} {timing.seconds:7.2f} s  {per_s:8.1f} instances/s  "
                        f"{mb_s:8.1f} MB/s"
                    )
                ratio = results["storescp"].seconds / results["usdcm"].seconds
                ratios[f"{mode}, {workload.name}"] = ratio
                print(f"  ratio usdcm/storescp: {ratio:.2f} (target >= 0.8)")
                if "ceiling" in results:
                    bound = results["storescp"].seconds / results["ceiling"].seconds
                    ratios[f"{mode}, {workload.name}, ceiling (no fsync, no polling)"] = bound
                    print(f"  ratio ceiling/storescp: {bound:.2f} (an upper bound)")
        print("\nratios (usdcm/storescp, target >= 0.8):")
        for name, ratio in ratios.items():
            print(f"  {ratio:5.2f}  {name}")


if __name__ == "__main__":
    main()
