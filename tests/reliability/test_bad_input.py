"""Bad or huge input: a clear error naming the problem, or a bounded and reported import; never a partial write."""

import json

import pytest

from data import importers
from data.importers import PromptFileError, import_prompts
from data.prompts import prompt_count


def test_hundred_thousand_rows_import_whole_and_report(store, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(100_000)))
    report = import_prompts(store, path)
    assert (report.read, report.added, report.skipped_duplicates) == (100_000, 100_000, 0)
    assert import_prompts(store, path).skipped_duplicates == 100_000
    assert prompt_count(store) == 100_000


def test_more_rows_than_the_limit_are_refused_whole(store, tmp_path, monkeypatch):
    monkeypatch.setattr(importers, "MAX_IMPORT_ROWS", 10)
    path = tmp_path / "eleven.csv"
    path.write_text("prompt\n" + "".join(f"q{i}\n" for i in range(11)))
    with pytest.raises(PromptFileError, match="11 prompts, more than 10 per import"):
        import_prompts(store, path)
    assert prompt_count(store) == 0


def test_ten_megabyte_prompt_is_refused_with_its_row(store, tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "x" * 10_000_000}) + "\n")
    with pytest.raises(PromptFileError, match=r"huge.jsonl, line 2: prompt has 10,000,000 characters"):
        import_prompts(store, path)
    assert prompt_count(store) == 0


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("columns.csv", b"title,body\nx,y\n", "no prompt column"),
        ("types.jsonl", b'{"prompt": "fine"}\n{"prompt": ["a", "list"]}\n', "line 2: prompt must be text"),
        ("latin1.jsonl", '{"prompt": "caf\u00e9"}\n'.encode("latin-1"), "line 1: not valid UTF-8"),
        ("empty.jsonl", b"", "empty file"),
    ],
)
def test_malformed_files_name_the_problem_and_write_nothing(store, tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match=problem) as caught:
        import_prompts(store, path)
    assert name in str(caught.value)
    assert prompt_count(store) == 0
