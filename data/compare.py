"""Blind comparisons: store two models' answers in random order, record votes, summarise them per model pair."""

import json
import random
from dataclasses import dataclass

from data.conversations import from_stored, stored_text
from data.prompts import all_prompts
from data.store import Store

CHOICES = ("left", "right", "tie", "both_bad")


@dataclass
class Shown:
    """What a voter sees: a prompt and two answers, with no model names."""

    comparison_id: int
    prompt: str | list[dict]  # text, or a conversation's messages
    left: str
    right: str


def add_comparison(store: Store, prompt, model_a: str, text_a: str, model_b: str, text_b: str, rng=random) -> int:
    """Store one comparison of two models' answers to a prompt (text or a conversation); return its id."""
    return add_comparisons(store, [(prompt, model_a, text_a, model_b, text_b)], rng)[0]


def _insert_comparison(cursor, prompt, model_a: str, text_a: str, model_b: str, text_b: str, a_on_left: bool) -> int:
    comparison_id = cursor.execute(
        "INSERT INTO comparisons (prompt, model_a, model_b, text_a, text_b, a_on_left) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        [stored_text(prompt), model_a, model_b, text_a, text_b, a_on_left],
    ).fetchone()[0]
    if not isinstance(prompt, str):
        cursor.execute(
            "INSERT INTO comparison_messages (comparison_id, messages) VALUES (?, ?)",
            [comparison_id, json.dumps(prompt, ensure_ascii=False)],
        )
    return comparison_id


def next_comparison(store: Store, annotator_id: int) -> Shown | None:
    """Return the oldest comparison this annotator has not voted on, as left/right texts."""
    rows = store.query(
        "SELECT id, prompt, m.messages, text_a, text_b, a_on_left FROM comparisons c "
        "LEFT JOIN comparison_messages m ON m.comparison_id = c.id WHERE NOT EXISTS "
        "(SELECT 1 FROM votes v WHERE v.comparison_id = c.id AND v.annotator_id = ?) ORDER BY id LIMIT 1",
        [annotator_id],
    )
    if not rows:
        return None
    comparison_id, text, messages, text_a, text_b, a_on_left = rows[0]
    left, right = (text_a, text_b) if a_on_left else (text_b, text_a)
    return Shown(comparison_id, from_stored(text, messages), left, right)


def record_vote(store: Store, comparison_id: int, annotator_id: int, choice: str, token: str | None = None) -> None:
    """Store a vote cast on the left/right display, translated to the models it stood for (one transaction)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown choice {choice!r}; expected one of {CHOICES}")

    def insert(cursor):
        if token and cursor.execute("SELECT 1 FROM votes WHERE submission_token = ?", [token]).fetchone():
            return
        row = cursor.execute("SELECT a_on_left FROM comparisons WHERE id = ?", [comparison_id]).fetchone()
        if row is None:
            raise ValueError(f"no comparison {comparison_id}")
        if cursor.execute(
            "SELECT 1 FROM votes WHERE comparison_id = ? AND annotator_id = ?", [comparison_id, annotator_id]
        ).fetchone():
            raise ValueError("you already voted on this comparison")
        a_on_left = row[0]
        vote = {"left": "a" if a_on_left else "b", "right": "b" if a_on_left else "a"}.get(choice, choice)
        cursor.execute(
            "INSERT INTO votes (comparison_id, annotator_id, vote, submission_token) VALUES (?, ?, ?, ?)",
            [comparison_id, annotator_id, vote, token],
        )

    store.write(insert)


def votes_by_pair(store: Store) -> dict[tuple[str, str], list[str]]:
    """Return {(model_a, model_b): [votes in model terms]}, each pair named in a fixed order."""
    result: dict[tuple[str, str], list[str]] = {}
    rows = store.query("SELECT c.model_a, c.model_b, v.vote FROM votes v JOIN comparisons c ON c.id = v.comparison_id")
    for model_a, model_b, vote in rows:
        if model_a > model_b:  # name each pair once, flipping the vote with it
            model_a, model_b = model_b, model_a
            vote = {"a": "b", "b": "a"}.get(vote, vote)
        result.setdefault((model_a, model_b), []).append(vote)
    return result


def matches(store: Store) -> list[tuple[str, str, float]]:
    """Return every vote as (model_a, model_b, score of a) for the Bradley-Terry leaderboard."""
    score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return [(a, b, score[v]) for (a, b), votes in votes_by_pair(store).items() for v in votes]


def add_comparisons(store: Store, rows: list[tuple], rng=random) -> list[int]:
    """Store many (prompt, model_a, text_a, model_b, text_b) comparisons in one transaction; return their ids.

    A prompt is text or a conversation's messages (kept in `comparison_messages`).
    """
    for _, model_a, _, model_b, _ in rows:
        if model_a == model_b:
            raise ValueError("a comparison needs two different models")

    def insert(cursor) -> list[int]:
        return [_insert_comparison(cursor, *row, rng.random() < 0.5) for row in rows]

    return store.write(insert)


def sample_prompts(store: Store, count: int, seed: int | None = None) -> list:
    """Return `count` prompts (text or messages) drawn at random from the store (all of them if it holds fewer)."""
    if count < 1:
        raise ValueError(f"a comparison set needs at least one prompt, got {count}")
    prompts = [prompt for _, prompt in all_prompts(store)]
    return random.Random(seed).sample(prompts, min(count, len(prompts)))


def comparison_counts(store: Store, annotator_id: int | None = None) -> dict:
    """Return how many comparisons exist, how many votes were cast, and how many this annotator has left."""
    comparisons, votes = store.query("SELECT (SELECT count(*) FROM comparisons), (SELECT count(*) FROM votes)")[0]
    left = 0
    if annotator_id is not None:
        left = store.query(
            "SELECT count(*) FROM comparisons c WHERE NOT EXISTS "
            "(SELECT 1 FROM votes v WHERE v.comparison_id = c.id AND v.annotator_id = ?)",
            [annotator_id],
        )[0][0]
    return {"comparisons": comparisons, "votes": votes, "left": left}
