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
    with pytest.raises(PromptFileError, match="row 12: more than 10 prompts per import"):
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


def numbered_questions(count: int, stray_quote_at: int, with_commas: bool) -> str:
    """Return a one-column CSV of prompts as spreadsheets write it (one with a comma is quoted), one stray quote."""
    rows = []
    for i in range(1, count + 1):
        text = f"Question {i}, in detail" if with_commas and i % 7 == 0 else f"Question {i}"
        rows.append(f'"{text}"' if "," in text else text)
    rows[stray_quote_at - 1] = '"' + rows[stray_quote_at - 1]
    return "prompt\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("with_commas", [True, False], ids=["closed by a later quote", "never closed"])
def test_a_stray_quote_in_a_csv_refuses_the_file_naming_its_line(store, tmp_path, with_commas):
    path = tmp_path / "stray.csv"
    path.write_text(numbered_questions(1_000, stray_quote_at=11, with_commas=with_commas))
    with pytest.raises(PromptFileError, match=r"stray.csv, line 12: bad CSV"):
        import_prompts(store, path)
    assert prompt_count(store) == 0


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x1c", "\x0b"])
def test_unicode_line_separators_stay_inside_their_prompt(store, tmp_path, separator):
    import pandas as pd

    texts = [f"first half{separator}second half", "another prompt"]
    csv_path = tmp_path / "pandas.csv"
    pd.DataFrame({"prompt": texts}).to_csv(csv_path, index=False)  # writes the separator unquoted
    jsonl_path = tmp_path / "raw.jsonl"
    jsonl_path.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in texts))
    assert importers.read_csv(csv_path) == texts
    assert importers.read_jsonl(jsonl_path) == texts


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_file_over_the_row_limit_is_refused_without_reading_past_the_limit(store, tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(importers, "MAX_IMPORT_ROWS", 10)
    path = tmp_path / f"long.{suffix}"
    header = "prompt\n" if suffix == "csv" else ""
    rows = "".join(f'"q{i}"\n' for i in range(11))
    path.write_bytes(header.encode() + rows.encode() + b"\xff not even UTF-8 further on\n")
    with pytest.raises(PromptFileError, match="more than 10 prompts per import"):
        import_prompts(store, path)  # reading the whole file first would stop at the bad byte instead
    assert prompt_count(store) == 0
