"""A prompts file's other columns (answer, solution, difficulty, ...) survive import, export and re-import."""

import json

import pyarrow
import pyarrow.parquet as pq
import pytest

from data.export import export
from data.importers import PromptFileError, import_prompts, read_prompts_with_columns
from data.prompt_columns import stored_columns
from data.prompts import browse_prompts
from data.store import Store

ROWS = [
    {"prompt": "What is 3 + 4?", "answer": "7", "difficulty": 1, "tests": ["7", "7.0"]},
    {"prompt": "What is 10 / 4?", "answer": "2.5", "solution": "10 / 4 = 2.5", "difficulty": 2},
    {"prompt": "Say hello."},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")  # a blank line at the end
    return path


def columns_by_prompt(store) -> dict:
    table = browse_prompts(store, "")
    return dict(zip(table["text"], stored_columns(store, table["id"].tolist()), strict=True))


EXPECTED = {row["prompt"]: {k: v for k, v in row.items() if k != "prompt"} for row in ROWS}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_columns_survive_import_export_and_reimport(store, tmp_path, fmt):
    import_prompts(store, write_jsonl(tmp_path / "in.jsonl", ROWS))
    assert columns_by_prompt(store) == EXPECTED
    exported = tmp_path / f"prompts.{fmt}"
    assert export(store, exported, kind="prompts") == 3
    fresh = Store(tmp_path / "fresh.duckdb")
    try:
        report = import_prompts(fresh, exported)
        assert report.added == 3
        assert columns_by_prompt(fresh) == EXPECTED
    finally:
        fresh.close()


def test_csv_and_parquet_columns_are_kept(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text('question,answer\n"What is 2+2?\nThink first.",4\n\nName a color.,\n', encoding="utf-8")
    prompts, columns = read_prompts_with_columns(csv_file)
    assert prompts == ["What is 2+2?\nThink first.", "Name a color."]
    assert columns == [{"answer": "4"}, {"answer": ""}]
    parquet_file = tmp_path / "p.parquet"
    pq.write_table(pyarrow.table({"text": ["a", "b"], "answer": [1, 2], "level": ["x", None]}), parquet_file)
    assert read_prompts_with_columns(parquet_file) == (["a", "b"], [{"answer": 1, "level": "x"}, {"answer": 2}])


def test_a_string_line_has_no_columns_and_a_reimport_takes_the_new_columns(store, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('"just text"\n{"prompt": "q", "answer": "1"}\n')
    assert read_prompts_with_columns(path)[1] == [{}, {"answer": "1"}]
    import_prompts(store, path)
    import_prompts(store, write_jsonl(tmp_path / "again.jsonl", [{"prompt": "q", "answer": "2"}]))
    assert columns_by_prompt(store) == {"just text": {}, "q": {"answer": "2"}}


def test_a_value_json_cannot_hold_refuses_the_file_whole(store, tmp_path):
    parquet_file = tmp_path / "bad.parquet"
    pq.write_table(pyarrow.table({"prompt": ["a", "b"], "score": [1.0, float("nan")]}), parquet_file)
    with pytest.raises(PromptFileError, match=r"row 2: column 'score' holds nan"):
        import_prompts(store, parquet_file)
    assert browse_prompts(store, "").empty
