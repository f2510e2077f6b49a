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

    restored = Store(restore(snapshot, tmp_path / "restored.duckdb"))
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
