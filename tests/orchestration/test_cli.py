"""The `rlhf-studio` command line: import, sample, export, and a clear error with exit code 2 on bad input."""

import json

from data import annotation
from data.importers import read_prompts, seed_prompts_path
from data.settings import DEFAULTS, load_settings
from data.store import Store
from orchestration.cli import main


def run(db, *args) -> int:
    return main(["--db", str(db), *args])


def test_import_shipped_prompts_then_a_file(tmp_path, capsys):
    db = tmp_path / "studio.duckdb"
    shipped = len(read_prompts(seed_prompts_path()))
    assert run(db, "import-prompts") == 0
    assert f"read {shipped}, added {shipped}, skipped 0 duplicates" in capsys.readouterr().out

    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"prompt": "A brand new prompt."}) + "\n" + json.dumps({"prompt": "Another."}) + "\n")
    assert run(db, "import-prompts", str(extra), str(seed_prompts_path())) == 0
    out = capsys.readouterr().out
    assert "extra.jsonl: read 2, added 2, skipped 0 duplicates" in out
    assert f"read {shipped}, added 0, skipped {shipped} duplicates" in out

    store = Store(db)
    assert annotation.counts(store)["prompts"] == shipped + 2
    store.close()


def test_bad_file_exits_2_with_the_error_on_stderr_and_imports_nothing(tmp_path, capsys):
    db = tmp_path / "studio.duckdb"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": 3}\n')
    assert run(db, "import-prompts", str(bad)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"error: {bad}, line 2: prompt must be text, got int"
    store = Store(db)
    assert annotation.counts(store)["prompts"] == 0
    store.close()


def test_out_of_range_sampling_flag_exits_2_and_saves_nothing(tmp_path, capsys):
    db = tmp_path / "studio.duckdb"
    assert run(db, "sample", "--k", "9") == 2
    assert "k (responses per prompt) must be between 2 and 8, got 9" in capsys.readouterr().err
    assert run(db, "sample", "--prompts", "-1", "--k", "5", "--model", "some/other-model") == 2
    assert "--prompts must be >= 1" in capsys.readouterr().err
    store = Store(db)
    assert load_settings(store)["k"] == DEFAULTS["k"]  # a refused command changed no setting
    store.close()


def test_sample_rank_and_export_pairs(tmp_path, tiny_model_dir, capsys):
    db = tmp_path / "studio.duckdb"
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt\nSay hello.\nCount to three.\nName a fruit.\n")
    assert run(db, "import-prompts", str(prompts)) == 0
    sample = ["sample", "--model", str(tiny_model_dir), "--prompts", "2", "--k", "2", "--max-new-tokens", "4"]
    assert run(db, *sample, "--seed", "1", "--device", "cpu") == 0
    assert "sampled 2 batches" in capsys.readouterr().out

    store = Store(db)
    assert annotation.counts(store) == {"prompts": 3, "batches": 2, "responses": 4, "rankings": 0, "annotators": 0}
    assert load_settings(store) == DEFAULTS  # the command's flags were for this run, not the app's settings
    alice = annotation.ensure_annotator(store, "alice")
    item = annotation.claim_next_item(store, alice)
    annotation.submit_ranking(store, alice, item.batch_id, [[item.response_ids[1]], [item.response_ids[0]]])
    store.close()

    output = tmp_path / "exports" / "pairs.jsonl"
    assert run(db, "export", str(output)) == 0
    assert f"wrote 1 pairs rows to {output}" in capsys.readouterr().out
    (pair,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert pair["prompt"] == item.prompt
    assert (pair["chosen"], pair["rejected"]) == (item.responses[1], item.responses[0])
