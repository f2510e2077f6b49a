"""The DuckDB store: migrations run once and are recorded, a newer file is refused, transactions are whole."""

import pytest

from data.migrations import all_migrations
from data.prompts import add_prompts, prompt_count
from data.store import Store, StoreError

TABLES = {"prompts", "annotators", "batches", "claims", "responses", "rankings", "models", "settings", "schema_version"}


def table_names(store: Store) -> set[str]:
    return {row[0] for row in store.query("SELECT table_name FROM information_schema.tables")}


def test_new_store_has_every_table_and_records_each_migration(store):
    assert TABLES <= table_names(store)
    versions = [row[0] for row in store.query("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [migration.VERSION for migration in all_migrations()]
    assert store.schema_version() == all_migrations()[-1].VERSION


def test_reopening_keeps_data_and_does_not_rerun_migrations(tmp_path):
    path = tmp_path / "studio.duckdb"
    first = Store(path)
    add_prompts(first, ["kept across reopen"], "test")
    first.close()

    # Re-running m0001 would fail on CREATE SEQUENCE/TABLE, so opening at all shows it was skipped.
    second = Store(path)
    assert prompt_count(second) == 1
    assert second.query("SELECT count(*) FROM schema_version")[0][0] == len(all_migrations())
    second.close()


def test_database_from_a_newer_release_is_refused(tmp_path):
    path = tmp_path / "studio.duckdb"
    store = Store(path)
    newer = store.schema_version() + 1
    store.write(lambda cursor: cursor.execute("INSERT INTO schema_version (version) VALUES (?)", [newer]))
    store.close()

    with pytest.raises(StoreError, match=rf"schema version {newer}, newer than this RLHF Studio knows"):
        Store(path)


def test_failed_action_rolls_back_everything_it_wrote(store):
    def insert_then_fail(cursor):
        cursor.execute("INSERT INTO annotators (name) VALUES ('ghost')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.write(insert_then_fail)
    assert store.query("SELECT count(*) FROM annotators")[0][0] == 0


def test_sql_errors_become_store_errors(store):
    with pytest.raises(StoreError, match="no_such_table"):
        store.query("SELECT * FROM no_such_table")
    with pytest.raises(StoreError):
        store.write(lambda cursor: cursor.execute("INSERT INTO prompts (text) VALUES (NULL)"))
    # The store is still usable after both errors.
    assert prompt_count(store) == 0


def test_unopenable_path_raises_store_error(tmp_path):
    folder = tmp_path / "a-folder.duckdb"
    folder.mkdir()
    with pytest.raises(StoreError, match="cannot open database"):
        Store(folder)
