"""The export store and study tracker behind ``usdcm listen``: races, restarts, privacy, the
set-aside tree, retries of failed study work."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TypedDict

import pytest

from usdcm.errors import StoreError
from usdcm.network.store import (
    MAX_BACKOFF_S,
    ExportStore,
    Outcome,
    Retry,
    StudyFailure,
    StudyTracker,
    WorkStage,
)
from usdcm.privacy import ProjectSecret


class _Uids(TypedDict):
    study_uid: str
    series_uid: str
    sop_uid: str


UIDS: _Uids = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5"}


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


FAILURE = StudyFailure(WorkStage.PREDICT, "RunError")


def _state(path: Path) -> dict[str, object]:
    state = json.loads(path.read_text())
    assert isinstance(state, dict)
    return state


def test_a_failed_study_is_retried_with_backoff_then_given_up(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "pending.json"
    tracker = StudyTracker(path, quiet_s=10, retries=2, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 10.0
    assert [s.key for s in tracker.due()] == ["a"]
    retry = tracker.failed("a", FAILURE)
    assert retry == Retry(attempts=1, retry_in_s=20.0)  # quiet_s * 2**1
    assert _state(path) == {
        "schema_version": 2,
        "pending": ["a"],
        "retry": {"a": {"attempts": 1, "done": []}},
    }
    now[0] = 29.0
    assert tracker.due() == []  # still in its backoff
    now[0] = 30.0
    (study,) = tracker.due()
    assert (study.key, study.attempts) == ("a", 1)
    assert tracker.failed("a", FAILURE) == Retry(attempts=2, retry_in_s=40.0)
    now[0] = 70.0
    assert [s.key for s in tracker.due()] == ["a"]
    assert tracker.failures() == []
    assert tracker.failed("a", FAILURE) == Retry(attempts=3, retry_in_s=None)  # given up
    assert _state(path) == {"schema_version": 2, "pending": [], "retry": {}}
    (record,) = tracker.failures()
    assert set(record) == {"schema_version", "time", "study", "stage", "error", "attempts"}
    assert (record["study"], record["stage"], record["error"], record["attempts"]) == (
        "a",
        "predict",
        "RunError",
        3,
    )
    assert tracker.failed_path == tmp_path / "failed.jsonl"
    now[0] = 1000.0
    assert tracker.due() == []


def test_backoff_is_capped_at_ten_minutes(tmp_path: Path) -> None:
    now = [0.0]
    tracker = StudyTracker(tmp_path / "p.json", quiet_s=200, retries=5, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 200.0
    tracker.due()
    assert tracker.failed("a", FAILURE).retry_in_s == 400.0
    now[0] = 600.0
    tracker.due()
    assert tracker.failed("a", FAILURE).retry_in_s == MAX_BACKOFF_S == 600.0


def test_new_instances_end_the_backoff_and_redo_every_stage(tmp_path: Path) -> None:
    now = [0.0]
    tracker = StudyTracker(tmp_path / "p.json", quiet_s=10, retries=3, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 10.0
    tracker.due()
    failure = StudyFailure(WorkStage.INGEST, "exit 2")
    assert tracker.failed("a", failure, done=[WorkStage.PREDICT]).retry_in_s == 20.0
    now[0] = 12.0
    tracker.seen("a")  # a new instance: due after the quiet time, not the backoff
    now[0] = 21.0
    assert tracker.due() == []
    now[0] = 22.0
    (study,) = tracker.due()
    assert study.attempts == 1 and study.done == set()  # new data: classify it again
    # without new instances the retry skips what succeeded (an SR is not sent twice)
    tracker.failed("a", failure, done=[WorkStage.PREDICT])
    now[0] = 100.0
    (study,) = tracker.due()
    assert study.attempts == 2 and study.done == {WorkStage.PREDICT}


def test_instances_during_the_work_start_another_round(tmp_path: Path) -> None:
    now = [0.0]
    tracker = StudyTracker(tmp_path / "p.json", quiet_s=10, retries=1, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 10.0
    tracker.due()
    tracker.seen("a")  # arrives while "a" is in work
    assert tracker.failed("a", FAILURE) == Retry(attempts=1, retry_in_s=10.0)
    now[0] = 20.0
    (study,) = tracker.due()
    assert study.attempts == 1
    tracker.seen("a")  # again during work; this attempt is its last
    assert tracker.failed("a", FAILURE).retry_in_s is None
    assert len(tracker.failures()) == 1
    now[0] = 30.0
    (study,) = tracker.due()  # the instances after it start afresh
    assert study.attempts == 0


def test_a_restart_keeps_the_attempts_and_the_stages_done(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "pending.json"
    tracker = StudyTracker(path, quiet_s=10, retries=3, clock=lambda: now[0])
    for key in ("a", "b"):
        tracker.seen(key)
    now[0] = 10.0
    tracker.due()
    tracker.failed("a", FAILURE, done=[WorkStage.INGEST])
    # "b" is in work when the process dies: it stays pending, with no attempt counted
    again = StudyTracker(path, quiet_s=10, retries=3, clock=lambda: now[0])
    assert sorted(again.restored()) == ["a", "b"]
    now[0] = 20.0  # a restart re-arms the quiet timer, not the backoff
    studies = {study.key: study for study in again.due()}
    assert (studies["a"].attempts, studies["a"].done) == (1, {WorkStage.INGEST})
    assert (studies["b"].attempts, studies["b"].done) == (0, set())
    assert again.failed("a", FAILURE).attempts == 2


def test_pending_files_of_schema_1_are_read_and_newer_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "pending.json"
    path.write_text(json.dumps({"schema_version": 1, "pending": ["a"]}))
    assert StudyTracker(path, quiet_s=1).restored() == ["a"]
    path.write_text(json.dumps({"schema_version": 3, "pending": ["a"]}))
    with pytest.raises(StoreError, match="schema_version 3; this usdcm reads 1 and 2"):
        StudyTracker(path, quiet_s=1)


def test_set_aside_store_shares_the_secret_and_the_duplicates_log(tmp_path: Path) -> None:
    store = ExportStore(tmp_path / "store", ProjectSecret(b"s" * 32))
    aside = store.aside()
    first = aside.write_bytes(b"sr", **UIDS)
    again = aside.write_bytes(b"sr", **UIDS)
    assert (first.outcome, again.outcome) == (Outcome.STORED, Outcome.DUPLICATE)
    assert first.keys == store.keys(**UIDS)
    assert first.path == tmp_path / "store" / ".usdcm" / "other" / Path(
        store.path_of(first.keys).relative_to(tmp_path / "store")
    )
    assert not store.contains(**UIDS) and aside.contains(**UIDS)
    (duplicate,) = store.duplicates()
    assert str(duplicate["kept"]).startswith(".usdcm/other/")
    # what a killed copy left beside the set-aside instances is cleaned at the next start
    stale = first.path.parent / ".x.dcm.abc.tmp"
    stale.write_bytes(b"half")
    assert store.clean_incoming(stale_after_s=-1) == 1 and not stale.exists()


def test_a_give_up_that_cannot_be_recorded_keeps_the_study_pending(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "pending.json"
    tracker = StudyTracker(path, quiet_s=10, retries=0, clock=lambda: now[0])
    tracker.seen("a")
    now[0] = 10.0
    tracker.due()
    tracker.failed_path.mkdir()  # failed.jsonl cannot be opened for appending
    with pytest.raises(OSError):
        tracker.failed("a", FAILURE)
    assert _state(path)["pending"] == ["a"]  # the next start tries it again
    assert StudyTracker(path, quiet_s=10).restored() == ["a"]
