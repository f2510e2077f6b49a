"""Rankings to learn from: the DuckDB store's, or a bootstrap prompt/chosen/rejected dataset as K=2 rankings."""

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HH_ASSISTANT = "\n\nAssistant:"


class PairsFileError(ValueError):
    """A pairs file is malformed; the message names the file, the row and the problem."""


@dataclass
class Ranking:
    """One prompt's responses with their tie groups (0 = best group); equal groups are ties."""

    ranking_id: int
    prompt_key: int | str  # what the train/validation split keeps on one side: prompt id, or the prompt text
    prompt: str
    responses: list[str]
    tie_groups: list[int]

    @property
    def num_comparisons(self) -> int:
        return sum(a < b for a in self.tie_groups for b in self.tie_groups)


def rankings_from_store(store) -> list[Ranking]:
    """Return every ranked item of the store, its tie groups of texts flattened to responses + group ids."""
    from data.export import ranked_items

    rankings = []
    for item in ranked_items(store):
        responses = [text for group in item["ranked_responses"] for text in group]
        groups = [rank for rank, group in enumerate(item["ranked_responses"]) for _ in group]
        rankings.append(Ranking(item["ranking_id"], item["prompt_id"], item["prompt"], responses, groups))
    return rankings


def read_rankings(path: str | Path) -> list[Ranking]:
    """Return the rankings of a file written by `data.export.export(..., kind="rankings")` (tie groups of texts)."""
    path = str(path)
    columns, rows = load_table(path)
    expected = {"ranking_id", "prompt_id", "prompt", "ranked_responses"}
    if not expected <= set(columns):
        raise PairsFileError(f"{path}: expected the columns of a rankings export {sorted(expected)}, found {columns}")
    rankings = []
    for index, row in enumerate(rows):
        groups = row["ranked_responses"]
        if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
            raise PairsFileError(f"{path}, row {index}: 'ranked_responses' must be a list of non-empty tie groups")
        responses = [
            _text({"response": text}, "response", f"{path}, row {index}") for group in groups for text in group
        ]
        tie_groups = [rank for rank, group in enumerate(groups) for _ in group]
        rankings.append(
            Ranking(
                row["ranking_id"], row["prompt_id"], _text(row, "prompt", f"{path}, row {index}"), responses, tie_groups
            )
        )
    if not rankings:
        raise PairsFileError(f"{path}: no rankings")
    return rankings


def split_hh(text: str) -> tuple[str, str]:
    """Split an Anthropic HH transcript at its last "\\n\\nAssistant:" into (prompt, final answer)."""
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise ValueError(f"no {HH_ASSISTANT.strip()!r} turn in the text")
    return text[: cut + len(HH_ASSISTANT)].strip(), text[cut + len(HH_ASSISTANT) :].strip()


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


def _text(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise PairsFileError(f"{where}: {column!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise PairsFileError(f"{where}: {column!r} is empty")
    return value


def read_pairs(path: str | Path) -> list[Ranking]:
    """Return a prompt/chosen/rejected dataset as K=2 rankings; without a prompt column, HH transcripts are split.

    A malformed row raises PairsFileError naming it. HH rows whose chosen and rejected transcripts disagree
    before the last answer are skipped (the format has a few) and counted in the log.
    """
    path = str(path)
    columns, rows = load_table(path)
    if not rows:
        raise PairsFileError(f"{path}: no rows")
    if "chosen" not in columns or "rejected" not in columns:
        raise PairsFileError(f"{path}: expected columns 'chosen' and 'rejected' (and 'prompt'), found {columns}")
    hh_format = "prompt" not in columns
    rankings, skipped = [], 0
    for index, row in enumerate(rows):
        where = f"{path}, row {index}"
        chosen, rejected = _text(row, "chosen", where), _text(row, "rejected", where)
        if hh_format:
            try:
                (prompt, chosen), (rejected_prompt, rejected) = split_hh(chosen), split_hh(rejected)
            except ValueError as error:
                raise PairsFileError(f"{where}: no 'prompt' column and not the HH format: {error}") from None
            if prompt != rejected_prompt:
                skipped += 1
                continue
        else:
            prompt = _text(row, "prompt", where)
        rankings.append(Ranking(index, prompt, prompt, [chosen, rejected], [0, 1]))
    if skipped:
        log.warning("%s: skipped %d HH rows whose chosen and rejected prompts differ", path, skipped)
    if not rankings:
        raise PairsFileError(f"{path}: no usable rows")
    return rankings


def split_by_prompt(
    rankings: list[Ranking], validation_fraction: float, seed: int
) -> tuple[list[Ranking], list[Ranking]]:
    """Return (train, validation) with every prompt on one side only, about `validation_fraction` of prompts held out."""
    keys = sorted({r.prompt_key for r in rankings}, key=str)
    random.Random(seed).shuffle(keys)
    held_out = round(len(keys) * validation_fraction)
    if validation_fraction > 0:
        held_out = max(held_out, 1)
        if held_out >= len(keys):
            raise ValueError(
                f"{len(keys)} distinct prompts cannot be split into train and validation at "
                f"validation_fraction={validation_fraction}; rank more prompts or set it to 0"
            )
    validation_keys = set(keys[:held_out])
    train = [r for r in rankings if r.prompt_key not in validation_keys]
    validation = [r for r in rankings if r.prompt_key in validation_keys]
    return train, validation
