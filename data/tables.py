"""Read a table of rows (pairs, rankings) from a JSONL or Parquet file, a `datasets` folder or a hub dataset name.

One reader for every training input file, so the reward model and DPO accept the same formats and errors.
"""

import json
from pathlib import Path


class PairsFileError(ValueError):
    """A pairs file is malformed; the message names the file, the row and the problem."""


def load_table(path: str) -> tuple[list[str], list[dict]]:
    """Return (column names, rows) of a JSONL/Parquet file, a `datasets` folder or (with a hub) a dataset name."""
    import datasets

    file = Path(path)
    if file.is_dir():
        table = datasets.load_from_disk(path)
    elif file.suffix.lower() in (".jsonl", ".json"):
        if not file.exists():
            raise PairsFileError(f"{path}: file does not exist")
        return _read_jsonl(file)
    elif file.suffix.lower() == ".parquet":
        if not file.exists():
            raise PairsFileError(f"{path}: file does not exist")
        table = datasets.Dataset.from_parquet(path)
    elif file.suffix:
        raise PairsFileError(f"{path}: unknown file type {file.suffix!r}; use .jsonl, .parquet or a datasets folder")
    else:
        table = datasets.load_dataset(path)
    if isinstance(table, datasets.DatasetDict):
        table = table["train" if "train" in table else next(iter(table))]
    return table.column_names, table.to_list()


def _read_jsonl(path: Path) -> tuple[list[str], list[dict]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise PairsFileError(f"{path}, line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise PairsFileError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return (list(rows[0]) if rows else []), rows
