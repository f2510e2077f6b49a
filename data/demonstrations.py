"""Demonstrations: an annotator edits one of the K responses or writes their own answer, and it is ranked with them.

The answer is stored as a response of the same batch (model 'human', so rankings, exports, SFT sets and follow-ups
read it like any other) in the ranking's own transaction, under the ranking's submission token; `human_responses`
says who wrote it and which model response it was edited from. By default it ranks as its own tie group just
above that response (an edit is meant as an improvement), or first when written from scratch.
"""

from dataclasses import dataclass

from data.prompts import MAX_PROMPT_CHARS
from data.store import Store

HUMAN_MODEL = "human"  # responses.model of a human-written response
MAX_ANSWER_CHARS = MAX_PROMPT_CHARS

# SQL condition on a responses row `r`: sampled by a model, not written by a person.
SAMPLED = "NOT EXISTS (SELECT 1 FROM human_responses h WHERE h.response_id = r.id)"


class DemonstrationError(ValueError):
    """A human-written answer cannot be stored with its ranking; nothing was written."""


@dataclass
class Demonstration:
    """An annotator's answer: edited from `parent_response_id`, or written from scratch (None).

    `rank` places it as its own tie group at that position (1 = best; one past the last group = worst); None
    puts it just above the response it was edited from, or first.
    """

    text: str
    parent_response_id: int | None = None
    rank: int | None = None


def check(demonstration: Demonstration, status: str, ranking: list[list[int]]) -> None:
    """Raise DemonstrationError naming what keeps this answer from being stored with this ranking."""
    if status != "ranked":
        raise DemonstrationError(f"a {status} item carries no answer of yours: rank it to add one")
    if not demonstration.text.strip():
        raise DemonstrationError("your answer is empty")
    if len(demonstration.text) > MAX_ANSWER_CHARS:
        raise DemonstrationError(f"your answer has more than {MAX_ANSWER_CHARS:,} characters")
    parent = demonstration.parent_response_id
    if parent is not None and not any(parent in group for group in ranking):
        raise DemonstrationError(f"response {parent} is not one of this item's responses")
    if demonstration.rank is not None and not 1 <= demonstration.rank <= len(ranking) + 1:
        raise DemonstrationError(f"your answer's rank must be between 1 and {len(ranking) + 1}")


def place(ranking: list[list[int]], response_id: int, demonstration: Demonstration) -> list[list[int]]:
    """Return the ranking with the answer as its own tie group: at `rank`, else just above its parent, else first."""
    if demonstration.rank is not None:
        position = demonstration.rank - 1
    elif demonstration.parent_response_id is not None:
        position = next(i for i, group in enumerate(ranking) if demonstration.parent_response_id in group)
    else:
        position = 0
    return ranking[:position] + [[response_id]] + ranking[position:]


def insert_answer(cursor, batch_id: int, demonstration: Demonstration) -> int:
    """Store the answer's text as a response of the batch and return its id (inside the ranking's transaction)."""
    parent = demonstration.parent_response_id
    if parent is not None:
        found = cursor.execute(
            f"SELECT 1 FROM responses r WHERE r.id = ? AND r.batch_id = ? AND {SAMPLED}", [parent, batch_id]
        ).fetchone()
        if found is None:
            raise DemonstrationError(f"response {parent} is not one of this item's sampled responses")
    return cursor.execute(
        "INSERT INTO responses (batch_id, prompt_id, position, text, model, params, finish_reason, num_tokens) "
        "SELECT b.id, b.prompt_id, (SELECT coalesce(max(position), -1) + 1 FROM responses WHERE batch_id = b.id), "
        "?, ?, '{}', 'eos', 0 FROM batches b WHERE b.id = ? RETURNING id",
        [demonstration.text.strip(), HUMAN_MODEL, batch_id],
    ).fetchone()[0]


def record_answer(cursor, response_id: int, ranking_id: int, annotator_id: int, parent_response_id: int | None):
    """Mark the response as human-written by this annotator in this ranking, edited from its parent (if any)."""
    cursor.execute(
        "INSERT INTO human_responses (response_id, ranking_id, annotator_id, parent_response_id) VALUES (?, ?, ?, ?)",
        [response_id, ranking_id, annotator_id, parent_response_id],
    )


def demonstration_counts(store: Store) -> dict:
    """Return how many human-written responses are stored: in all, edited from a response, written from scratch."""
    total, edited = store.query("SELECT count(*), count(parent_response_id) FROM human_responses")[0]
    return {"demonstrations": total, "edited": edited, "written": total - edited}


def human_answers(store: Store) -> list[dict]:
    """Return every human-written response with its ranking, annotator and the response it was edited from."""
    rows = store.query(
        """
        SELECT h.response_id, h.ranking_id, a.name, h.parent_response_id, r.text, parent.text
        FROM human_responses h JOIN responses r ON r.id = h.response_id JOIN annotators a ON a.id = h.annotator_id
        LEFT JOIN responses parent ON parent.id = h.parent_response_id ORDER BY h.response_id
        """
    )
    keys = ("response_id", "ranking_id", "annotator", "parent_response_id", "text", "parent_text")
    return [dict(zip(keys, row, strict=True)) for row in rows]
