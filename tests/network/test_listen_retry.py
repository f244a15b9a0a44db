"""A study whose work fails is not dropped: ``usdcm listen`` tries it again with backoff, keeps
it in ``pending.json`` meanwhile, and gives it up into ``failed.jsonl`` after its last attempt.

In process: a :class:`Listener` on a free port, real C-STOREs from a pynetdicom SCU, and study
work that fails for real (an ``on_study`` hook that raises, a RUN folder holding no model, an
ingest into a path that is a file).

Time: the quiet time is :data:`QUIET_S` (so a backoff is 0.1 s, then 0.2 s), waits poll every
20 ms up to a deadline, and "never again" moves the listener's clock past any backoff instead
of sleeping through one. What is left: the no-model test's first predict imports torch (3 to 10
s when this file runs alone; nothing in a suite that has imported it already), each ingest
attempt is a ``python -m usdcm ingest`` child (about 0.8 s), and each stop waits up to 0.5 s
for pynetdicom's accept loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from tests.network.test_listen import _tiny_instances
from usdcm.dicom.sop import US_IMAGE_STORAGE
from usdcm.network.listen import Listener, ListenOptions
from usdcm.network.store import MAX_BACKOFF_S

QUIET_S = 0.05
"""The quiet time of every test here: the timer ticks every ``QUIET_S / 4``."""


def _send(port: int, paths: list[Path]) -> list[int]:
    """C-STORE ``paths`` in one association; their statuses."""
    from pynetdicom import AE

    ae = AE(ae_title="RETRYTEST")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(US_IMAGE_STORAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="USDCM")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(path).Status) for path in paths]
    assoc.release()
    return statuses


@contextmanager
def _running(listener: Listener) -> Iterator[Listener]:
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def _state(listener: Listener) -> dict[str, object]:
    state = json.loads(listener.tracker.path.read_text())
    assert isinstance(state, dict)
    return state


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_failing_study_work_is_retried_with_backoff_then_given_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one instance: a second one arriving after the quiet time would rightly end the backoff
    paths = _tiny_instances(tmp_path / "tiny", 1, studies=1)
    calls: list[tuple[float, list[str]]] = []
    seen_pending: list[dict[str, object]] = []
    ahead = [0.0]  # how far the listener's clock runs ahead of time.monotonic

    def clock() -> float:
        return time.monotonic() + ahead[0]

    def fail(keys: list[str]) -> None:
        calls.append((clock(), keys))
        if len(calls) == 2:
            seen_pending.append(_state(listener))  # while the second attempt runs
        raise RuntimeError("the model is down")

    options = ListenOptions(store=tmp_path / "store", port=0, quiet_s=QUIET_S, retries=2)
    listener = Listener(options, on_study=fail, clock=clock)
    caplog.set_level(logging.INFO, logger="usdcm.network.listen")
    with _running(listener):
        assert _send(listener.port, paths) == [0]
        # the count of studies given up is the last thing the worker updates
        _wait(lambda: listener.status().studies_failed == 1, 30, "the study given up")
        assert len(calls) == 3  # the first attempt and --retries 2
        # a given-up study is never tried again, however long the listener runs: past every
        # backoff nothing is due, and the timer thread gets a few ticks to (wrongly) act on it
        ahead[0] = 10 * MAX_BACKOFF_S
        assert listener.tracker.due() == []
        time.sleep(QUIET_S)
        status = listener.status()
    assert len(calls) == 3
    (key,) = {k for _, keys in calls for k in keys}
    gaps = [later - earlier for (earlier, _), (later, _) in zip(calls, calls[1:], strict=False)]
    # quiet_s * 2, then quiet_s * 4 (on the listener's own clock; a hair for float rounding)
    assert gaps[0] >= 2 * QUIET_S - 1e-6 and gaps[1] >= 4 * QUIET_S - 1e-6, gaps
    # while it waited, pending.json held it with its attempts
    assert seen_pending[0]["pending"] == [key]
    assert seen_pending[0]["retry"] == {key: {"attempts": 1, "done": []}}
    # then: out of pending.json, one record in failed.jsonl
    assert _state(listener) == {"schema_version": 2, "pending": [], "retry": {}}
    (record,) = listener.tracker.failures()
    assert record["study"] == key and record["attempts"] == 3
    assert (record["stage"], record["error"]) == ("work", "RuntimeError")
    assert (status.studies_failed, status.studies_done, status.studies_pending) == (1, 0, 0)
    assert status.line().endswith("0 done, 1 failed")
    errors = _messages(caplog, logging.ERROR)
    assert len(errors) == 1 and f"study {key} given up after 3 failed attempt(s)" in errors[0]
    warnings = [m for m in _messages(caplog, logging.WARNING) if "trying again" in m]
    assert len(warnings) == 2
    assert "attempt 1 of 3; trying again in 0.1s" in warnings[0]
    assert "attempt 2 of 3; trying again in 0.2s" in warnings[1]
    assert sum("due again" in m for m in _messages(caplog, logging.INFO)) == 2
    # no UID, no exception message in the log or the record
    uids = {str(pydicom.dcmread(path).StudyInstanceUID) for path in paths}
    text = caplog.text + listener.tracker.failed_path.read_text()
    assert not any(uid in text for uid in uids) and "the model is down" not in text


def test_a_study_that_fails_once_then_succeeds_is_done(tmp_path: Path) -> None:
    paths = _tiny_instances(tmp_path / "tiny", 1, studies=1)
    calls: list[list[str]] = []

    def flaky(keys: list[str]) -> None:
        calls.append(keys)
        if len(calls) == 1:
            raise OSError("disk full for a moment")

    options = ListenOptions(store=tmp_path / "store", port=0, quiet_s=QUIET_S, retries=3)
    listener = Listener(options, on_study=flaky)
    with _running(listener):
        assert _send(listener.port, paths) == [0]
        _wait(lambda: listener.status().studies_done == 1, 30, "the retried study's success")
    assert len(calls) == 2 and calls[0] == calls[1]
    assert not listener.tracker.failed_path.exists()
    assert _state(listener) == {"schema_version": 2, "pending": [], "retry": {}}
    assert listener.status().studies_failed == 0


def test_predict_with_a_run_holding_no_model_is_given_up_as_predict(tmp_path: Path) -> None:
    paths = _tiny_instances(tmp_path / "tiny", 1, studies=1)
    run = tmp_path / "run"  # a folder, but no best.pt: every predict fails
    run.mkdir()
    options = ListenOptions(
        store=tmp_path / "store", port=0, quiet_s=QUIET_S, retries=1, predict_run=run
    )
    listener = Listener(options)
    with _running(listener):
        assert _send(listener.port, paths) == [0]
        _wait(lambda: listener.tracker.failed_path.is_file(), 120, "failed.jsonl")
    (record,) = listener.tracker.failures()
    assert (record["stage"], record["error"], record["attempts"]) == ("predict", "RunError", 2)
    assert _state(listener)["pending"] == []
    assert listener.status().studies_failed == 1


def test_a_failed_ingest_is_retried_without_predicting_the_study_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _tiny_instances(tmp_path / "tiny", 1, studies=1)
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where DATA_DIR should be")
    run = tmp_path / "run"
    run.mkdir()
    predicted: list[str] = []

    def predict(self: Listener, key: str) -> None:
        predicted.append(key)  # succeeds: its SR was sent

    monkeypatch.setattr(Listener, "_predict", predict)
    options = ListenOptions(
        store=tmp_path / "store",
        port=0,
        quiet_s=QUIET_S,
        retries=1,
        ingest_into=not_a_folder,
        predict_run=run,
    )
    listener = Listener(options)
    with _running(listener):
        assert _send(listener.port, paths) == [0]
        _wait(lambda: listener.tracker.failed_path.is_file(), 120, "failed.jsonl")
    (record,) = listener.tracker.failures()
    assert record["stage"] == "ingest" and record["attempts"] == 2
    assert str(record["error"]).startswith("exit ") and record["error"] != "exit 0"
    assert len(predicted) == 1  # the retry ran the ingest only: no second SR
