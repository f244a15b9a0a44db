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


def test_compact_keeps_reused_old_lines_and_this_runs_records(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    for key in ("a", "b", "c"):
        journal.append({"t": "scan", "k": key, "v": 1})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"t":"scan","k":"x","v":1}')  # torn: no newline, never loaded

    journal = Journal(path)
    loaded = journal.load_compact(lambda line, record: line)
    assert loaded == {("scan", "a"): 0, ("scan", "b"): 1, ("scan", "c"): 2}
    journal.append({"t": "scan", "k": "b", "v": 2})  # b redone; a reused; c gone
    journal.compact({loaded[("scan", "a")]})
    assert Journal(path).load() == {
        ("scan", "a"): {"t": "scan", "k": "a", "v": 1},
        ("scan", "b"): {"t": "scan", "k": "b", "v": 2},
    }
    assert len(path.read_text().splitlines()) == 2


def test_load_index_gives_offsets_that_read_back_the_newest_records(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    for key, value in (("a", 1), ("b", 2), ("a", 3)):
        journal.append({"t": "scan", "k": key, "v": value})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b"not json\n" + b'{"t":"scan","k":"c"')  # junk, then a torn write

    journal = Journal(path)
    newest: dict[tuple[str, str], tuple[int, int]] = {}
    journal.load_index(
        lambda line, offset, record: newest.update({(record["t"], record["k"]): (line, offset)})
    )
    assert {key: line for key, (line, _) in newest.items()} == {("scan", "a"): 2, ("scan", "b"): 1}
    journal.append({"t": "scan", "k": "b", "v": 4})  # this run's record; old offsets still hold
    assert journal.read_at(newest[("scan", "a")][1]) == {"t": "scan", "k": "a", "v": 3}
    assert journal.read_at(newest[("scan", "b")][1]) == {"t": "scan", "k": "b", "v": 2}
    journal.compact({newest[("scan", "a")][0]})  # a reused, b redone
    assert Journal(path).load() == {
        ("scan", "a"): {"t": "scan", "k": "a", "v": 3},
        ("scan", "b"): {"t": "scan", "k": "b", "v": 4},
    }
