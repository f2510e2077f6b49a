"""The command line side of access and backups: add-user, refusing to serve openly, backup and restore."""

import io
import sys

from data.store import Store
from data.users import list_users, login
from orchestration.cli import main
from tests.reliability.helpers import held_by_another_process


def test_add_user_reads_the_password_from_stdin_and_never_prints_it(tmp_path, monkeypatch, capsys):
    db = str(tmp_path / "s.duckdb")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-pass\n"))
    assert main(["--db", db, "add-user", "ada", "--role", "admin"]) == 0
    out = capsys.readouterr()
    assert "s3cret" not in out.out + out.err
    store = Store(db)
    assert [u.role for u in list_users(store)] == ["admin"]
    assert login(store, "ada", "s3cret-pass")
    store.close()
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["--db", db, "add-user", "bob"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_serve_refuses_an_open_address_without_users(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "s.duckdb"), "serve", "--host", "0.0.0.0"]) == 2
    assert "no users defined" in capsys.readouterr().err


def test_backup_and_restore_commands(tmp_path, capsys):
    db, snapshot = str(tmp_path / "s.duckdb"), str(tmp_path / "snap.duckdb")
    assert main(["--db", db, "import-prompts"]) == 0
    assert main(["--db", db, "backup", snapshot]) == 0
    restored = str(tmp_path / "restored.duckdb")
    assert main(["--db", restored, "restore", snapshot]) == 0
    assert Store(restored).query("SELECT count(*) FROM prompts") == Store(db).query("SELECT count(*) FROM prompts")


def test_a_database_held_by_another_process_gets_a_clear_error(tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    Store(db).close()
    with held_by_another_process(db):
        assert main(["--db", str(db), "export", str(tmp_path / "x.jsonl")]) == 2
        assert "another process" in capsys.readouterr().err


def test_restore_commands_lose_nothing_when_repeated_or_pointed_at_the_database(tmp_path, capsys):
    db, a, b, snapshot = (str(tmp_path / name) for name in ("live.duckdb", "a.jsonl", "b.jsonl", "snap.duckdb"))
    (tmp_path / "a.jsonl").write_text('"from a"\n')
    (tmp_path / "b.jsonl").write_text('"from b"\n')
    assert main(["--db", db, "import-prompts", a]) == 0
    assert main(["--db", db, "backup", snapshot]) == 0
    assert main(["--db", db, "import-prompts", b]) == 0
    assert main(["--db", db, "restore", "--overwrite", snapshot]) == 0
    assert main(["--db", db, "restore", "--overwrite", snapshot]) == 0
    assert "kept as" in capsys.readouterr().out
    kept = Store(tmp_path / "live.duckdb.before-restore")
    assert kept.query("SELECT text FROM prompts ORDER BY id") == [("from a",), ("from b",)]
    kept.close()
    assert main(["--db", db, "restore", "--overwrite", db]) == 2
    assert "the database being restored into" in capsys.readouterr().err
    live = Store(db)
    assert live.query("SELECT text FROM prompts") == [("from a",)]
    live.close()
