"""The other columns of a prompts file (`answer`, `solution`, `tests`, `difficulty`, ...), kept with each prompt.

Reward functions receive them as keywords (`policy.reward_mix`), so a check can compare a response with its
prompt's reference answer. Read beside the prompts (`read_columns` returns one dict per prompt, in the order
`data.importers.read_prompts` returns the prompts), stored in their own table, exported with the prompts
(`export_prompts`), and read back by the same import.
"""

import csv
import json
import math
from pathlib import Path

from data.prompts import prompt_hash
from data.store import Store

# Columns a prompt itself comes from (the conversation formats included): never kept as extra columns.
PROMPT_SOURCES = ("messages", "chosen", "rejected")


def _extra_columns(row: dict, prompt_fields: tuple[str, ...]) -> dict:
    """Return a row's columns other than the one its prompt came from (and the conversation sources); an empty
    cell of a table (None) is no value, as a key a JSON line lacks: a reward function sees None for both."""
    field = next((name for name in prompt_fields if name in row), None)
    return {k: v for k, v in row.items() if k != field and k not in PROMPT_SOURCES and v is not None}


def _text_lines(path: Path) -> list[str]:
    """Return a file's lines, each with its "\n", split only there (as the importers read them: a U+2028 inside a
    prompt stays in it); the file is checked already."""
    lines = path.read_bytes().decode("utf-8-sig").split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def read_columns(name_or_path: str | Path, prompt_fields: tuple[str, ...]) -> list[dict]:
    """Return each prompt's other columns, in the order `data.importers.read_prompts` returns the prompts; call it
    after that has checked the file. `prompt_fields`: the columns a prompt is taken from, first found wins."""

    def _extra(row: dict) -> dict:
        return _extra_columns(row, prompt_fields)

    path = Path(name_or_path)
    if path.is_dir() or not path.suffix:
        import datasets

        loaded = datasets.load_from_disk(str(path)) if path.is_dir() else datasets.load_dataset(str(name_or_path))
        if isinstance(loaded, datasets.DatasetDict):
            loaded = loaded["train" if "train" in loaded else next(iter(loaded))]
        return [_extra(row) for row in loaded]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        records = [row for row in csv.reader(_text_lines(path)) if row]
        return [_extra(dict(zip(records[0], row, strict=True))) for row in records[1:]]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return [_extra(row) for row in pq.read_table(path).to_pylist()]
    rows = []
    for line in _text_lines(path):
        if line.strip():
            record = json.loads(line)
            rows.append(_extra(record) if isinstance(record, dict) else {})
    return rows


def column_problem(columns: list[dict]) -> tuple[int, str] | None:
    """Return (row number, problem) of the first row holding a value JSON cannot store (NaN, bytes), else None."""
    for number, row in enumerate(columns, start=1):
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                return number, f"column {key!r} holds {value}, which cannot be stored"
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                return number, f"column {key!r} holds a {type(value).__name__}, not a JSON value"
    return None


def save_columns(store: Store, prompts: list, columns: list[dict]) -> int:
    """Store each prompt's columns (the prompts are stored already), in one transaction; return how many prompts
    got columns. A prompt imported again takes its new file's columns; the first of two equal prompts in a file wins."""
    by_hash: dict[str, str] = {}
    for prompt, row in zip(prompts, columns, strict=True):
        if row:
            by_hash.setdefault(prompt_hash(prompt), json.dumps(row, ensure_ascii=False))
    if not by_hash:
        return 0

    def write(cursor) -> int:
        ids = dict(cursor.execute("SELECT text_hash, id FROM prompts WHERE text_hash IN (SELECT unnest(?))",
                                  [list(by_hash)]).fetchall())  # fmt: skip
        rows = [(ids[key], value) for key, value in by_hash.items() if key in ids]
        cursor.executemany("DELETE FROM prompt_columns WHERE prompt_id = ?", [(prompt_id,) for prompt_id, _ in rows])
        cursor.executemany("INSERT INTO prompt_columns (prompt_id, columns) VALUES (?, ?)", rows)
        return len(rows)

    return store.write(write)


def stored_columns(store: Store, prompt_ids: list[int]) -> list[dict]:
    """Return the stored columns of each prompt id ({} for a prompt without columns), in the order given."""
    rows = store.query("SELECT prompt_id, columns FROM prompt_columns WHERE prompt_id IN (SELECT unnest(?))",
                       [list(prompt_ids)])  # fmt: skip
    found = {prompt_id: json.loads(value) for prompt_id, value in rows}
    return [found.get(prompt_id, {}) for prompt_id in prompt_ids]


def export_prompts(store: Store, path: str | Path, fmt: str) -> int:
    """Write every prompt with its columns ({"prompt", **columns} per row, JSONL or Parquet); return the rows.

    Importing the file again gives back the same prompts and columns.
    """
    from data.prompts import all_prompts  # a conversation exports as its messages (a list-valued prompt)

    rows = all_prompts(store)
    columns = stored_columns(store, [prompt_id for prompt_id, _ in rows])
    records = [{"prompt": prompt, **row} for (_, prompt), row in zip(rows, columns, strict=True)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if fmt == "jsonl":
        tmp.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8")
    else:
        _write_parquet(records, tmp)
    tmp.replace(path)
    return len(records)


def _write_parquet(records: list[dict], path: Path) -> None:
    """Write records as Parquet; a column whose values differ in type (a number here, text there) is written as
    JSON text, which Parquet's one type per column needs."""
    import pyarrow
    import pyarrow.parquet as pq

    names = list(dict.fromkeys(name for record in records for name in record)) or ["prompt"]
    arrays = {}
    for name in names:
        values = [record.get(name) for record in records]
        try:
            arrays[name] = pyarrow.array(values)
        except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError):
            arrays[name] = pyarrow.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
    pq.write_table(pyarrow.table(arrays), path)


def columns_text(columns: dict) -> str:
    """Return a prompt's columns as one short line for tables: `answer=42 · difficulty=3`."""
    return " · ".join(f"{key}={value}" for key, value in columns.items())
