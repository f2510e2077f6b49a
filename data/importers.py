"""Read prompts from JSONL, CSV, Parquet, a `datasets` folder or a hub dataset; refuse a malformed file whole.

A prompt is text or a conversation (`core.chat`): a `messages` field (OpenAI/TRL), a list-valued prompt, an
Anthropic HH transcript in a text field (parsed into turns), or a pairs row's shared start (UltraFeedback, HH).
"""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.chat import ConversationError
from data.conversations import prompt_of, prompt_of_row, stored_text
from data.prompt_columns import column_problem, read_columns, save_columns
from data.prompts import MAX_PROMPT_CHARS, add_prompts
from data.store import Store

PROMPT_FIELDS = ("prompt", "text", "question", "instruction")
ROW_FIELDS = ("messages", *PROMPT_FIELDS, "chosen", "rejected")  # every column a prompt can come from
MAX_IMPORT_ROWS = 1_000_000  # one import is one transaction held in memory; split larger files


class PromptFileError(ValueError):
    """A prompt file is malformed; the message names the file, the line or row, and the problem."""

    def __init__(self, source: str, where: str, problem: str):
        super().__init__(f"{source}, {where}: {problem}" if where else f"{source}: {problem}")
        self.source, self.where, self.problem = source, where, problem


@dataclass
class ImportReport:
    source: str
    read: int
    added: int
    skipped_duplicates: int


def _check_text(value, source: str, where: str):
    """Return a cell's prompt (text, or an HH transcript parsed into turns), or raise naming the row."""
    if isinstance(value, str) and not value.strip():
        raise PromptFileError(source, where, "prompt is empty")
    if not isinstance(value, (str, list, tuple)):
        raise PromptFileError(source, where, f"prompt must be text, got {type(value).__name__}")
    return _checked(lambda: prompt_of(value), source, where)


def _check_row(row: dict, source: str, where: str):
    """Return the prompt of a row: its messages, prompt field or pair's shared start, or raise naming the row."""
    if not any(row.get(field) is not None for field in ("messages", "chosen")):
        return _check_text(row.get(_pick_field(row.keys(), source, where)), source, where)
    _pick_field(row.keys(), source, where)
    return _checked(lambda: prompt_of_row(row, PROMPT_FIELDS), source, where)


def _checked(read, source: str, where: str):
    try:
        prompt = read()
    except ConversationError as error:
        problem = str(error)
        if "is not a {'role', 'content'} object" in problem:
            raise PromptFileError(source, where, f"prompt must be text or a list of messages: {problem}") from None
        raise PromptFileError(source, where, f"malformed conversation: {problem}") from None
    length = len(stored_text(prompt))
    if length > MAX_PROMPT_CHARS:
        raise PromptFileError(source, where, f"prompt has {length:,} characters, more than {MAX_PROMPT_CHARS:,}")
    return prompt


def _pick_field(columns, source: str, where: str = "") -> str:
    for field in ("messages", *PROMPT_FIELDS):
        if field in columns:
            return field
    if "chosen" in columns and "rejected" in columns:
        return "chosen"
    raise PromptFileError(
        source,
        where,
        f"no prompt column: expected one of {', '.join(PROMPT_FIELDS)}, found {list(columns)} "
        "(or 'messages', or 'chosen'/'rejected' conversations)",
    )


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) of a UTF-8 file, read as it streams and split only at "\\n".

    Not `str.splitlines()`: that also splits at U+2028, U+0085, form feeds and more, which may sit unquoted inside
    a CSV field or raw inside a JSON string, and would cut one prompt into two.
    """
    offset = 0
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                where = f"line {number}"
                raise PromptFileError(str(path), where, f"not valid UTF-8 (byte {offset + error.start})") from None
            offset += len(raw)


def _count(texts: list[str], source: str, where: str) -> None:
    """Stop reading once a file holds more prompts than one import takes, before reading the rest of it."""
    if len(texts) > MAX_IMPORT_ROWS:
        raise PromptFileError(source, where, f"more than {MAX_IMPORT_ROWS:,} prompts per import: split the file")


def read_jsonl(path: Path) -> list[str]:
    """Each line: a JSON object with a prompt field, or a JSON string. Blank lines are ignored."""
    texts = []
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(str(path), where, f"invalid JSON ({error.msg})") from None
        if isinstance(record, dict):
            texts.append(_check_row(record, str(path), where))
        else:
            texts.append(_check_text(record, str(path), where))
        _count(texts, str(path), where)
    return texts


def read_csv(path: Path) -> list[str]:
    """A header row with a prompt column; rows are numbered as a spreadsheet shows them (header = row 1)."""
    records = _csv_records(path)
    header = next(records, (1, None))[1]
    if not header:
        raise PromptFileError(str(path), "", "empty file: no header row")
    column = header.index(_pick_field(header, str(path)))
    fields = [(index, name) for index, name in enumerate(header) if name in ROW_FIELDS]
    texts = []
    for number, (_, row) in enumerate(records, start=2):
        where = f"row {number}"
        if len(row) > len(header):
            raise PromptFileError(str(path), where, "more cells than header columns")
        if len(row) <= column:
            raise PromptFileError(str(path), where, f"fewer cells than header columns: no {header[column]!r}")
        if len(row) < len(header):
            raise PromptFileError(str(path), where, f"fewer cells than header columns ({len(row)} of {len(header)})")
        cells = {name: row[index] for index, name in fields if row[index] != "" or name == header[column]}
        texts.append(_check_row(cells, str(path), where))
        _count(texts, str(path), where)
    return texts


def _csv_records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line, cells) of each non-blank CSV record, read strictly.

    Strict, because a stray quote must not swallow the rows after it into one prompt: a quote not closed right
    before a comma or the end of its line refuses the file, naming the line where that record starts.
    """
    reader = csv.reader((line for _, line in _lines(path)), strict=True)
    while True:
        first_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            problem = "a quote opened here is never closed" if "end of data" in str(error) else str(error)
            raise PromptFileError(
                str(path), f"line {first_line}", f"bad CSV ({problem}): quote whole fields and double quotes inside"
            ) from None
        if row:
            yield first_line, row


def _texts_from_table(column_names: list[str], column, source: str) -> list:
    """Check each row's prompt; `column(name)` returns that column as a Python list."""
    _pick_field(column_names, source)
    names = [name for name in column_names if name in ROW_FIELDS]
    columns = [column(name) for name in names]
    return [
        _check_row(dict(zip(names, values, strict=True)), source, f"row {i}")
        for i, values in enumerate(zip(*columns, strict=True), start=1)
    ]


def _check_row_count(rows: int, source: str) -> None:
    if rows > MAX_IMPORT_ROWS:
        raise PromptFileError(source, "", f"{rows:,} prompts, more than {MAX_IMPORT_ROWS:,} per import: split the file")


def read_parquet(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        _check_row_count(pq.ParquetFile(path).metadata.num_rows, str(path))  # before reading any of it
        table = pq.read_table(path)
    except PromptFileError:
        raise
    except Exception as error:  # pyarrow raises several unrelated types for a broken file
        raise PromptFileError(str(path), "", f"not a readable Parquet file ({error})") from None
    return _texts_from_table(table.column_names, lambda name: table.column(name).to_pylist(), str(path))


def read_datasets(name_or_path: str) -> list[str]:
    """A folder written by `Dataset.save_to_disk`, or (for users with a hub) a dataset name; the train split."""
    import datasets

    try:
        if Path(name_or_path).is_dir():
            loaded = datasets.load_from_disk(name_or_path)
        else:
            loaded = datasets.load_dataset(name_or_path)
    except (OSError, ValueError) as error:  # a folder of something else, an unknown or unreachable hub name
        raise PromptFileError(name_or_path, "", f"not a readable datasets folder or hub dataset ({error})") from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    _check_row_count(loaded.num_rows, name_or_path)
    texts = _texts_from_table(loaded.column_names, lambda name: list(loaded[name]), name_or_path)
    if not texts:
        raise PromptFileError(name_or_path, "", "empty dataset: no prompts")
    return texts


READERS = {".jsonl": read_jsonl, ".json": read_jsonl, ".csv": read_csv, ".parquet": read_parquet}


def read_prompts(name_or_path: str | Path) -> list[str]:
    """Return every prompt of a file, folder or hub dataset, or raise PromptFileError for the first bad one."""
    path = Path(name_or_path)
    if path.is_dir():
        return read_datasets(str(path))
    if path.suffix.lower() in READERS:
        if not path.exists():
            raise PromptFileError(str(path), "", "file does not exist")
        texts = READERS[path.suffix.lower()](path)
        if not texts:
            raise PromptFileError(str(path), "", "empty file: no prompts")
        return texts
    if path.suffix:
        raise PromptFileError(
            str(path), "", f"unknown file type {path.suffix!r}: use .jsonl, .csv, .parquet or a datasets folder"
        )
    if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise PromptFileError(str(path), "", "folder does not exist")  # a path, not a hub name: do not ask the hub
    return read_datasets(str(name_or_path))


def read_prompts_with_columns(name_or_path: str | Path) -> tuple[list, list[dict]]:
    """Return (prompts, each prompt's other columns: answer, solution, ...), or raise PromptFileError."""
    prompts = read_prompts(name_or_path)
    columns = read_columns(name_or_path, ROW_FIELDS)  # a conversation's own fields are the prompt, not columns
    if len(columns) != len(prompts):  # the two readers disagree on what a row is: never pair them up silently
        raise PromptFileError(str(name_or_path), "", f"read {len(prompts)} prompts but {len(columns)} rows of columns")
    if problem := column_problem(columns):
        raise PromptFileError(str(name_or_path), f"row {problem[0]}", problem[1])
    return prompts, columns


def import_prompts(store: Store, name_or_path: str | Path, source: str | None = None) -> ImportReport:
    """Read all prompts and their columns first, then add them: a bad file writes nothing."""
    texts, columns = read_prompts_with_columns(name_or_path)  # each reader stops at MAX_IMPORT_ROWS
    report = add_prompts(store, texts, source or Path(str(name_or_path)).name)
    save_columns(store, texts, columns)
    return ImportReport(str(name_or_path), len(texts), report.added, report.skipped_duplicates)


def seed_prompts_path() -> Path:
    """Return the ~100 prompts shipped with RLHF Studio, so a first run has work."""
    return Path(__file__).parent / "seed_prompts.jsonl"
