"""Rankings to learn from: the DuckDB store's, or a bootstrap prompt/chosen/rejected dataset as K=2 rankings."""

import logging
from dataclasses import dataclass
from pathlib import Path

from core.splits import split_by_prompt
from data.export import ranked_items
from data.tables import PairsFileError, load_table

log = logging.getLogger(__name__)

HH_ASSISTANT = "\n\nAssistant:"


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


def _text(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise PairsFileError(f"{where}: {column!r} must be text, got {type(value).__name__}")
    if not value.strip():
        raise PairsFileError(f"{where}: {column!r} is empty")
    return value


def split_rankings(
    rankings: list[Ranking], validation_fraction: float, seed: int
) -> tuple[list[Ranking], list[Ranking]]:
    """Return (train, validation) rankings with every prompt on one side only."""
    return split_by_prompt(rankings, lambda ranking: ranking.prompt_key, validation_fraction, seed)


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
