"""Prompt import: every supported format reads, duplicates are counted, a bad file is refused whole."""

import json
import re

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.importers import PromptFileError, import_prompts, read_prompts, seed_prompts_path
from data.prompts import MAX_PROMPT_CHARS, add_prompts, browse_prompts, prompt_count

PROMPTS = ["What is 2 + 2?", "Write a haiku about rain.", 'Say "hi", then stop.']


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return str(path)


def write_parquet(path, columns: dict) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


def stored_texts(store) -> list[str]:
    return browse_prompts(store)["text"].tolist()


def test_jsonl_accepts_objects_strings_other_field_names_and_blank_lines(store, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": PROMPTS[0], "extra": 1}) + "\n\n" + json.dumps(PROMPTS[1]) + "\n"
        '{"question": "Say \\"hi\\", then stop."}\n',
        encoding="utf-8",
    )
    report = import_prompts(store, path)
    assert (report.read, report.added, report.skipped_duplicates) == (3, 3, 0)
    assert stored_texts(store) == PROMPTS


def test_csv_with_quoted_commas_newlines_and_a_byte_order_mark(store, tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_bytes('\ufeffid,prompt\n1,"one, two"\n2,"line one\nline two"\n'.encode())
    report = import_prompts(store, path)
    assert report.added == 2
    assert stored_texts(store) == ["one, two", "line one\nline two"]


def test_parquet_and_datasets_folder(store, tmp_path):
    parquet = write_parquet(tmp_path / "prompts.parquet", {"instruction": PROMPTS, "n": [1, 2, 3]})
    assert import_prompts(store, parquet).added == 3

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": ["From a datasets folder."]}).save_to_disk(str(folder))
    report = import_prompts(store, folder)
    assert (report.read, report.added, report.source) == (1, 1, str(folder))
    assert stored_texts(store)[-1] == "From a datasets folder."


def test_datasets_dict_folder_reads_the_train_split(tmp_path):
    folder = tmp_path / "dict"
    splits = {
        "train": datasets.Dataset.from_dict({"prompt": ["train prompt"]}),
        "test": datasets.Dataset.from_dict({"prompt": ["test prompt"]}),
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    assert read_prompts(folder) == ["train prompt"]


def test_duplicates_within_a_file_and_against_the_database_are_skipped_and_counted(store, tmp_path):
    add_prompts(store, [PROMPTS[0]], "earlier")
    records = [{"prompt": PROMPTS[0]}, {"prompt": PROMPTS[1]}, {"prompt": "  " + PROMPTS[1] + "\n"}, PROMPTS[2]]
    report = import_prompts(store, write_jsonl(tmp_path / "dups.jsonl", records))
    assert (report.read, report.added, report.skipped_duplicates) == (4, 2, 2)
    assert stored_texts(store) == PROMPTS  # stored trimmed, in file order, each once

    again = import_prompts(store, tmp_path / "dups.jsonl")
    assert (again.added, again.skipped_duplicates) == (0, 4)
    assert prompt_count(store) == 3


def write_bytes(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


GOOD = json.dumps({"prompt": "a good prompt"}) + "\n"

# (file name, writer(path) -> path, expected message after "<file>, ")
BAD_FILES = {
    "invalid json": (
        "bad.jsonl",
        lambda p: write_bytes(p, (GOOD * 2 + '{"prompt": "unclosed\n').encode()),
        r"line 3: invalid JSON",
    ),
    "jsonl missing prompt field": (
        "bad.jsonl",
        lambda p: write_jsonl(p, [{"prompt": "fine"}, {"title": "no prompt here"}]),
        r"line 2: no prompt column: expected one of prompt, text, question, instruction",
    ),
    "jsonl non-string prompt": (
        "bad.jsonl",
        lambda p: write_jsonl(p, [{"prompt": "fine"}, {"prompt": 42}]),
        r"line 2: prompt must be text, got int",
    ),
    "jsonl empty prompt": (
        "bad.jsonl",
        lambda p: write_jsonl(p, [{"prompt": "fine"}, {"prompt": "fine too"}, {"prompt": "  \t"}]),
        r"line 3: prompt is empty",
    ),
    "jsonl too-long prompt": (
        "bad.jsonl",
        lambda p: write_jsonl(p, [{"prompt": "fine"}, {"prompt": "x" * (MAX_PROMPT_CHARS + 1)}]),
        rf"line 2: prompt has {MAX_PROMPT_CHARS + 1:,} characters, more than {MAX_PROMPT_CHARS:,}",
    ),
    "non-utf8 bytes": (
        "bad.jsonl",
        lambda p: write_bytes(p, GOOD.encode() + b'{"prompt": "caf\xe9"}\n'),
        r"line 2: not valid UTF-8",
    ),
    "empty jsonl": ("empty.jsonl", lambda p: write_bytes(p, b""), r"empty file: no prompts"),
    "blank-lines-only jsonl": ("blank.jsonl", lambda p: write_bytes(p, b"\n  \n"), r"empty file: no prompts"),
    "empty csv": ("empty.csv", lambda p: write_bytes(p, b""), r"empty file: no header row"),
    "header-only csv": ("header.csv", lambda p: write_bytes(p, b"prompt\n"), r"empty file: no prompts"),
    "csv missing prompt column": (
        "bad.csv",
        lambda p: write_bytes(p, b"title,body\na,b\n"),
        r"no prompt column: expected one of prompt, text, question, instruction, found \['title', 'body'\]",
    ),
    "csv extra cells": (
        "bad.csv",
        lambda p: write_bytes(p, b"prompt\nfine\nfine too,surprise\n"),
        r"row 3: more cells than header columns",
    ),
    "csv missing cell": (
        "bad.csv",
        lambda p: write_bytes(p, b"id,prompt\n1,fine\n2\n"),
        r"row 3: fewer cells than header columns: no 'prompt'",
    ),
    "csv empty prompt": ("bad.csv", lambda p: write_bytes(p, b'prompt\nfine\n""\n'), r"row 3: prompt is empty"),
    "csv non-utf8": ("bad.csv", lambda p: write_bytes(p, b"prompt\nfine\nna\xefve\n"), r"line 3: not valid UTF-8"),
    "unknown suffix": ("prompts.txt", lambda p: write_bytes(p, b"hello\n"), r"unknown file type '\.txt'"),
    "missing file": ("missing.jsonl", lambda p: str(p), r"file does not exist"),
    "missing folder": ("missing-folder", lambda p: str(p), r"folder does not exist"),
    "broken parquet": (
        "broken.parquet",
        lambda p: write_bytes(p, b"PAR1 this is not parquet"),
        r"not a readable Parquet file",
    ),
    "parquet missing prompt column": (
        "bad.parquet",
        lambda p: write_parquet(p, {"title": ["x"]}),
        r"no prompt column",
    ),
    "parquet non-string prompt": (
        "bad.parquet",
        lambda p: write_parquet(p, {"prompt": [1, 2]}),
        r"row 1: prompt must be text, got int",
    ),
    "parquet null prompt": (
        "bad.parquet",
        lambda p: write_parquet(p, {"prompt": ["fine", None]}),
        r"row 2: prompt must be text, got NoneType",
    ),
    "folder that is not a datasets folder": (
        "plain-folder",
        lambda p: (p.mkdir(), str(p))[1],
        r"not a readable datasets folder",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_refused_with_file_place_and_problem_and_writes_nothing(store, tmp_path, case):
    name, write, problem = BAD_FILES[case]
    path = write(tmp_path / name)
    add_prompts(store, ["already stored"], "earlier")

    with pytest.raises(PromptFileError) as raised:
        import_prompts(store, path)

    message = str(raised.value)
    assert message.startswith(str(path)), message
    assert raised.value.source == str(path)
    assert re.search(problem, message), message
    assert stored_texts(store) == ["already stored"]


def test_shipped_seed_prompts_import_cleanly_and_are_short_and_distinct(store):
    texts = read_prompts(seed_prompts_path())
    assert 90 <= len(texts) <= 120
    assert len(set(texts)) == len(texts)
    assert max(len(text) for text in texts) < 300  # short enough for a 135M model's context and attention
    report = import_prompts(store, seed_prompts_path())
    assert (report.added, report.skipped_duplicates) == (len(texts), 0)
    assert set(browse_prompts(store)["source"]) == {"seed_prompts.jsonl"}
