from __future__ import annotations

from pathlib import Path

from usdcm.ingest.journal import Journal


def test_torn_last_line_is_ignored_and_next_append_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"t": "scan", "k": "a", "v": 1})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"t":"scan","k":"b","v"')  # killed mid-write
    assert set(Journal(path).load()) == {("scan", "a")}

    journal = Journal(path)
    journal.append({"t": "scan", "k": "c", "v": 3})
    journal.close()
    assert set(Journal(path).load()) == {("scan", "a"), ("scan", "c")}


def test_later_records_replace_earlier_and_rewrite_compacts(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"t": "scan", "k": "a", "v": 1})
    journal.append({"t": "scan", "k": "a", "v": 2})
    journal.close()
    records = journal.load()
    assert records[("scan", "a")]["v"] == 2
    journal.rewrite(records.values())
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 1
