"""The export store and study tracker behind ``usdcm listen``: races, restarts, privacy."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from usdcm.network.store import ExportStore, Outcome, StudyTracker
from usdcm.privacy import ProjectSecret

UIDS = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5"}


def test_same_instance_from_eight_threads_is_stored_once(tmp_path: Path) -> None:
    store = ExportStore(tmp_path / "store", ProjectSecret(b"s" * 32))
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(8)

    def write(index: int) -> None:
        barrier.wait()
        data = b"first" if index == 0 else f"copy {index}".encode()
        outcomes.append(
            store.write_bytes(data, **UIDS, detail={"calling_ae": f"AE{index}"}).outcome
        )

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(Outcome.STORED) == 1
    assert outcomes.count(Outcome.DUPLICATE) == 7
    files = list((tmp_path / "store").glob("*/*/*"))
    assert len(files) == 1 and not files[0].name.startswith(".")
    duplicates = store.duplicates()
    assert len(duplicates) == 7
    assert all(
        set(d) >= {"study", "series", "image", "identical", "calling_ae"} for d in duplicates
    )
    assert "1.2.3" not in store.duplicates_path.read_text()


def test_store_file_links_and_keeps_the_source(tmp_path: Path) -> None:
    store = ExportStore(tmp_path / "store")
    source = store.incoming / "spooled.dcm"
    store.incoming.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"DICM data")
    stored = store.store_file(source, **UIDS)
    assert stored.outcome is Outcome.STORED and stored.path.read_bytes() == b"DICM data"
    assert source.exists()  # pynetdicom removes its own spool file
    assert store.contains(**UIDS)
    assert (tmp_path / "store" / ".usdcm" / "secret").stat().st_mode & 0o777 == 0o600


def test_clean_incoming_removes_what_a_kill_left(tmp_path: Path) -> None:
    store = ExportStore(tmp_path / "store")
    store.write_bytes(b"kept", **UIDS)
    store.incoming.mkdir(parents=True, exist_ok=True)
    (store.incoming / "tmpabc.dcm").write_bytes(b"half")
    folder = store.path_of(store.keys(**UIDS)).parent
    (folder / ".x.dcm.abc.tmp").write_bytes(b"half")
    assert store.clean_incoming() == 1  # a temp file beside the instances may be a live pull's
    assert store.clean_incoming(stale_after_s=-1) == 1
    assert [p.name for p in folder.iterdir()] == [store.path_of(store.keys(**UIDS)).name]


def test_tracker_completes_after_quiet_and_survives_a_restart(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "pending.json"
    tracker = StudyTracker(path, quiet_s=30, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 20.0
    tracker.seen("a")  # a second association, inside the quiet time
    tracker.seen("b")
    now[0] = 45.0
    assert tracker.due() == []  # "a" was seen at 20 s
    now[0] = 50.0
    assert [s.key for s in tracker.due()] == ["a", "b"]
    # their work has not finished: a restart must re-arm them
    assert json.loads(path.read_text())["pending"] == ["a", "b"]
    tracker.done(["a"])
    assert json.loads(path.read_text())["pending"] == ["b"]
    again = StudyTracker(path, quiet_s=30, clock=lambda: now[0])
    assert again.restored() == ["b"]
    now[0] = 80.0
    assert [s.key for s in again.due()] == ["b"]
