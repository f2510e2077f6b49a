"""Rankings to learn from: the DuckDB store's, or a bootstrap prompt/chosen/rejected dataset as K=2 rankings.

Prompts are text or conversations (`core.chat`); pairs files may be in any format `data.conversations` reads
(ours, TRL standard or conversational, UltraFeedback, Anthropic HH).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from core.chat import ConversationError
from core.splits import split_by_prompt
from data.conversations import NoSharedPrompt, pair_of_row, prompt_key, prompt_of
from data.export import ranked_items
from data.tables import PairsFileError, load_table

log = logging.getLogger(__name__)


@dataclass
class Ranking:
    """One prompt's responses with their tie groups (0 = best group); equal groups are ties."""

    ranking_id: int
    prompt_key: int | str  # what the train/validation split keeps on one side: prompt id, or the prompt's key
    prompt: str | list[dict]  # text, or a conversation's messages
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
        try:
            prompt = prompt_of(row["prompt"])
        except ConversationError as error:
            raise PairsFileError(f"{path}, row {index}: 'prompt': {error}") from None
        rankings.append(Ranking(row["ranking_id"], row["prompt_id"], prompt, responses, tie_groups))
    if not rankings:
        raise PairsFileError(f"{path}: no rankings")
    return rankings


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
    """Return a pairs dataset as K=2 rankings: prompt/chosen/rejected as text or messages, or whole conversations.

    A malformed row raises PairsFileError naming it. Rows of whole conversations (HH, UltraFeedback) whose
    chosen and rejected differ before the last answer are skipped (HH has a few) and counted in the log.
    """
    path = str(path)
    columns, rows = load_table(path)
    if not rows:
        raise PairsFileError(f"{path}: no rows")
    if "chosen" not in columns or "rejected" not in columns:
        raise PairsFileError(f"{path}: expected columns 'chosen' and 'rejected' (and 'prompt'), found {columns}")
    rankings, skipped = [], 0
    for index, row in enumerate(rows):
        where = f"{path}, row {index}"
        for column in ("chosen", "rejected"):
            if not isinstance(row.get(column), (str, list)):
                raise PairsFileError(f"{where}: {column!r} must be text, got {type(row.get(column)).__name__}")
        try:
            prompt, chosen, rejected = pair_of_row(row)
        except NoSharedPrompt:
            skipped += 1
            continue
        except ConversationError as error:
            hh = "prompt" not in columns and all(isinstance(row[c], str) for c in ("chosen", "rejected"))
            hint = "no 'prompt' column and not the HH format: " if hh else ""
            raise PairsFileError(f"{where}: {hint}{error}") from None
        key = prompt if isinstance(prompt, str) else prompt_key(prompt)
        rankings.append(Ranking(index, key, prompt, [chosen, rejected], [0, 1]))
    if skipped:
        log.warning(
            "%s: skipped %d rows whose chosen and rejected conversations differ before the answer", path, skipped
        )
    if not rankings:
        raise PairsFileError(f"{path}: no usable rows")
    return rankings
