"""Backup while the store is open, restore into a fresh file: same rows, sequences continue."""

import pytest

from core.generation import Sample
from data import annotation
from data.backup import backup, restore
from data.prompts import add_prompts
from data.store import Store, StoreError
from tests.reliability.helpers import held_by_another_process


def test_backup_restore_round_trip(store, tmp_path):
    add_prompts(store, ["one", "two"], "test")
    annotator = annotation.ensure_annotator(store, "ada")
    batch = annotation.add_batch(store, 1, "m", {"k": 2}, [Sample("a", "eos", 1), Sample("b", "eos", 1)])
    annotation.claim_next_item(store, annotator)
    annotation.submit_ranking(store, annotator, batch, [[2], [1]])

    snapshot = backup(store, tmp_path / "snap.duckdb")
    add_prompts(store, ["three"], "after")  # not in the snapshot
    with pytest.raises(StoreError, match="already exists"):
        backup(store, snapshot)

    restored = Store(restore(snapshot, tmp_path / "restored.duckdb").target)
    assert restored.query("SELECT text FROM prompts ORDER BY id") == [("one",), ("two",)]
    assert restored.query("SELECT ranking FROM rankings") == [([[2], [1]],)]
    assert restored.schema_version() == store.schema_version()
    assert add_prompts(restored, ["new"], "x").added == 1
    assert restored.query("SELECT id FROM prompts WHERE text = 'new'") == [(3,)]  # sequence carried over
    restored.close()


def test_restore_refuses_to_overwrite_without_asking(tmp_path, store):
    snapshot = backup(store, tmp_path / "snap.duckdb")
    target = tmp_path / "live.duckdb"
    Store(target).close()
    with pytest.raises(StoreError, match="exists"):
        restore(snapshot, target)
    restore(snapshot, target, overwrite=True)
    assert (tmp_path / "live.duckdb.before-restore").exists()
    with pytest.raises(StoreError, match="does not exist"):
        restore(tmp_path / "missing.duckdb", target)


def test_restore_keeps_uncheckpointed_work_and_refuses_a_held_file(tmp_path):
    import subprocess
    import sys

    live = tmp_path / "live.duckdb"
    snapshot_store = Store(tmp_path / "old.duckdb")
    snapshot = backup(snapshot_store, tmp_path / "snap.duckdb")
    snapshot_store.close()
    crash = (  # commit a prompt, then die without closing: the prompt lives only in the write-ahead log
        "import os, sys; from data.store import Store; from data.prompts import add_prompts; "
        "add_prompts(Store(sys.argv[1]), ['only in the WAL'], 'x'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", crash, str(live)], check=True)
    restore(snapshot, live, overwrite=True)
    kept = Store(tmp_path / "live.duckdb.before-restore")
    assert kept.query("SELECT text FROM prompts") == [("only in the WAL",)]
    kept.close()

    with held_by_another_process(live), pytest.raises(StoreError, match="another process"):
        restore(snapshot, live, overwrite=True)


def prompts_in(path) -> list[str]:
    store = Store(path)
    texts = [text for (text,) in store.query("SELECT text FROM prompts ORDER BY id")]
    store.close()
    return texts


def live_with_work_after_a_snapshot(tmp_path):
    """Return (live, snapshot): live holds 'before' and 'after', the snapshot only 'before'."""
    live = tmp_path / "live.duckdb"
    store = Store(live)
    add_prompts(store, ["before"], "a")
    snapshot = backup(store, tmp_path / "snap.duckdb")
    add_prompts(store, ["after"], "b")
    store.close()
    return live, snapshot


def test_restoring_twice_keeps_the_work_done_after_the_snapshot(tmp_path):
    live, snapshot = live_with_work_after_a_snapshot(tmp_path)
    first = restore(snapshot, live, overwrite=True)
    second = restore(snapshot, live, overwrite=True)
    assert first.kept != second.kept
    assert prompts_in(first.kept) == ["before", "after"]  # the second restore did not replace the first's copy
    assert prompts_in(second.kept) == ["before"]
    assert prompts_in(live) == ["before"]


def test_a_truncated_backup_is_refused_and_the_database_is_untouched(tmp_path):
    live, snapshot = live_with_work_after_a_snapshot(tmp_path)
    store = Store(snapshot)  # make the snapshot big enough that cutting it loses table data, not just the header
    add_prompts(store, [f"filler {i} " * 40 for i in range(20_000)], "filler")
    store.close()
    truncated = tmp_path / "truncated.duckdb"
    data = snapshot.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="not a complete, readable backup"):
        restore(truncated, live, overwrite=True)
    assert prompts_in(live) == ["before", "after"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.duckdb", "snap.duckdb", "truncated.duckdb"]


def test_restoring_the_database_onto_itself_is_refused_before_anything_moves(tmp_path):
    live, _ = live_with_work_after_a_snapshot(tmp_path)
    with pytest.raises(StoreError, match="the database being restored into"):
        restore(live, live, overwrite=True)
    assert prompts_in(live) == ["before", "after"]
    assert not (tmp_path / "live.duckdb.before-restore").exists()
