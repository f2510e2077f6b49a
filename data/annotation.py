"""Annotation work: sampled batches waiting to be ranked, who is ranking what, and the rankings themselves."""

import json
import numbers
from dataclasses import dataclass, field

from core.chat import ConversationError
from data import demonstrations
from data.continuation import insert_follow_up
from data.conversations import from_stored
from data.demonstrations import SAMPLED, Demonstration, DemonstrationError
from data.prompts import MESSAGES_JOIN, PROMPTS_WITH_MESSAGES
from data.store import Store

STALE_CLAIM_MINUTES = 30  # a batch claimed but not ranked for this long goes back to the pool
STATUSES = ("ranked", "skipped", "flagged")


class RankingError(ValueError):
    """A submitted ranking is not valid for its item; nothing was written."""


@dataclass
class Item:
    """One thing to rank: a prompt (text, or a conversation's messages) and the K responses sampled together for it."""

    batch_id: int
    prompt_id: int
    prompt: str | list[dict]
    response_ids: list[int]
    responses: list[str]
    model: str
    finish_reasons: list[str] = field(default_factory=list)  # per response: 'eos', or 'length' when cut off


def ensure_annotator(store: Store, name: str) -> int:
    """Return the annotator's id, creating the annotator on first use."""
    name = name.strip()
    if not name:
        raise ValueError("annotator name is empty")

    def upsert(cursor) -> int:
        cursor.execute("INSERT INTO annotators (name) VALUES (?) ON CONFLICT (name) DO NOTHING", [name])
        return cursor.execute("SELECT id FROM annotators WHERE name = ?", [name]).fetchone()[0]

    return store.write(upsert)


def add_batch(store: Store, prompt_id: int, model: str, params: dict, samples) -> int:
    """Store K samples of one prompt as one batch (one transaction); return the batch id."""
    params_json = json.dumps(params, sort_keys=True)

    def insert(cursor) -> int:
        batch_id = cursor.execute(
            "INSERT INTO batches (prompt_id, model, params) VALUES (?, ?, ?) RETURNING id",
            [prompt_id, model, params_json],
        ).fetchone()[0]
        cursor.executemany(
            "INSERT INTO responses (batch_id, prompt_id, position, text, model, params, finish_reason, num_tokens) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (batch_id, prompt_id, position, s.text, model, params_json, s.finish_reason, s.num_tokens)
                for position, s in enumerate(samples)
            ],
        )
        return batch_id

    return store.write(insert)


_OPEN_BATCH = f"""
    NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id)
    AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.batch_id = b.id
                    AND c.claimed_at >= now() - INTERVAL {STALE_CLAIM_MINUTES} MINUTE)
"""


def open_batch_count(store: Store) -> int:
    """Return how many sampled batches wait, unclaimed, for an annotator."""
    return store.query(f"SELECT count(*) FROM batches b WHERE {_OPEN_BATCH}")[0][0]


def prompts_to_sample(store: Store, limit: int, annotator_id: int | None = None) -> list[tuple[int, object]]:
    """Return (id, prompt) of prompts that need a new batch: none waiting for them, fewest rankings first.

    With an annotator, only prompts that annotator has not ranked, skipped or flagged: a batch for them is one
    they can take. A conversation comes as its messages.
    """
    rows = store.query(
        f"""
        SELECT p.id, p.text, pm.messages FROM {PROMPTS_WITH_MESSAGES}
        WHERE NOT EXISTS (
            SELECT 1 FROM batches b WHERE b.prompt_id = p.id
            AND NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id))
          AND ($annotator IS NULL OR NOT EXISTS (
            SELECT 1 FROM rankings k WHERE k.prompt_id = p.id AND k.annotator_id = $annotator))
        ORDER BY (SELECT count(*) FROM rankings k WHERE k.prompt_id = p.id), p.id
        LIMIT $limit
        """,
        {"annotator": annotator_id, "limit": limit},
    )
    return [(prompt_id, from_stored(text, messages)) for prompt_id, text, messages in rows]


def claimable_count(store: Store, annotator_id: int) -> int:
    """Return how many unranked batches this annotator could be handed now (their held item included)."""
    return store.query(
        f"""
        SELECT count(*) FROM batches b
        WHERE NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id)
          AND NOT EXISTS (SELECT 1 FROM rankings k WHERE k.prompt_id = b.prompt_id AND k.annotator_id = ?)
          AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.batch_id = b.id AND c.annotator_id != ?
                          AND c.claimed_at >= now() - INTERVAL {STALE_CLAIM_MINUTES} MINUTE)
        """,
        [annotator_id, annotator_id],
    )[0][0]


def _load_item(cursor, batch_id: int) -> Item:
    prompt_id, text, messages, model = cursor.execute(
        "SELECT b.prompt_id, p.text, pm.messages, b.model FROM batches b JOIN prompts p ON p.id = b.prompt_id "
        f"{MESSAGES_JOIN} WHERE b.id = ?",
        [batch_id],
    ).fetchone()
    prompt = from_stored(text, messages)
    rows = cursor.execute(  # an annotator's own answer stays theirs: the next person ranks the sampled ones
        f"SELECT id, text, finish_reason FROM responses r WHERE batch_id = ? AND {SAMPLED} ORDER BY position",
        [batch_id],
    ).fetchall()
    return Item(batch_id, prompt_id, prompt, [r[0] for r in rows], [r[1] for r in rows], model, [r[2] for r in rows])


_CLAIMABLE = f"""
    NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id AND k.annotator_id = $annotator)
    AND NOT EXISTS (SELECT 1 FROM rankings k WHERE k.prompt_id = b.prompt_id AND k.annotator_id = $annotator)
    AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.batch_id = b.id AND c.annotator_id != $annotator
                    AND c.claimed_at >= now() - INTERVAL {STALE_CLAIM_MINUTES} MINUTE
                    AND NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id AND k.annotator_id = c.annotator_id))
    AND (NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = b.id)
         OR ($overlap_every > 0 AND b.id % $overlap_every = 0
             AND (SELECT count(*) FROM rankings k WHERE k.batch_id = b.id) < $overlap_annotators))
"""

ORDERS = ("fewest", "uncertain")

# Which claimable batch comes next: the prompt with the fewest rankings, or (with a reward model's scores) the
# batch whose closest two responses the reward model can least tell apart. Unscored batches come last.
_ORDER_BY = {
    "fewest": "(SELECT count(*) FROM rankings k WHERE k.prompt_id = b.prompt_id AND k.status = 'ranked'), b.id",
    "uncertain": """(SELECT min(gap) FROM (
            SELECT s.score - lag(s.score) OVER (ORDER BY s.score) AS gap
            FROM responses r JOIN response_scores s ON s.response_id = r.id AND s.reward_model = $reward_model
            WHERE r.batch_id = b.id)) NULLS LAST, b.id""",
}


def claim_next_item(
    store: Store,
    annotator_id: int,
    order: str = "fewest",
    overlap_every: int = 0,
    overlap_annotators: int = 2,
    reward_model: str | None = None,
) -> Item | None:
    """Return the annotator's current item, claiming the next open batch if they hold none; None if none wait.

    With overlap_every = n > 0, every n-th batch is also shown to up to `overlap_annotators` people, so their
    agreement can be measured; every other batch goes to one person only.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")
    if order == "uncertain" and not reward_model:
        raise ValueError("'uncertain first' needs a reward model to score the responses")
    params = {
        "annotator": annotator_id,
        "overlap_every": int(overlap_every),
        "overlap_annotators": int(overlap_annotators),
    }
    if order == "uncertain":
        params["reward_model"] = reward_model

    def claim(cursor) -> Item | None:
        held = cursor.execute(
            "SELECT c.batch_id FROM claims c WHERE c.annotator_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM rankings k WHERE k.batch_id = c.batch_id AND k.annotator_id = c.annotator_id) "
            "ORDER BY c.claimed_at LIMIT 1",
            [annotator_id],
        ).fetchone()
        if held is None:
            held = cursor.execute(
                f"SELECT id FROM batches b WHERE {_CLAIMABLE} ORDER BY {_ORDER_BY[order]} LIMIT 1", params
            ).fetchone()
            if held is None:
                return None
            cursor.execute(
                "INSERT OR REPLACE INTO claims (batch_id, annotator_id, claimed_at) VALUES (?, ?, now())",
                [held[0], annotator_id],
            )
        return _load_item(cursor, held[0])

    return store.write(claim)


def ranks_to_groups(ranks: dict[int, int]) -> list[list[int]]:
    """Turn {response_id: rank} (1 = best, equal ranks = tie) into tie groups of ids, best group first."""
    groups: dict[int, list[int]] = {}
    for response_id, rank in ranks.items():
        groups.setdefault(int(rank), []).append(_response_id(response_id))
    return [sorted(groups[rank]) for rank in sorted(groups)]


def _response_id(value) -> int:
    """Return a response id given as an integer; anything else (1.9, "2", True) is refused, not truncated."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise RankingError(f"response ids are integers; got {value!r} ({type(value).__name__})")


def _check_ranking(
    cursor, batch_id: int, annotator_id: int, status: str, ranking: list[list[int]], answer_id: int | None = None
) -> int:
    """Return the batch's prompt id, or raise RankingError naming what is wrong with the submission (which ranks
    the batch's sampled responses, and `answer_id`, the annotator's own answer, when there is one)."""
    if status not in STATUSES:
        raise RankingError(f"unknown status {status!r}; expected one of {STATUSES}")
    row = cursor.execute(
        "SELECT b.prompt_id, c.annotator_id FROM batches b LEFT JOIN claims c ON c.batch_id = b.id WHERE b.id = ?",
        [batch_id],
    ).fetchone()
    if row is None:
        raise RankingError(f"no item with batch id {batch_id}")
    prompt_id, holder = row
    if holder is not None and holder != annotator_id:
        raise RankingError("this item was handed to another annotator meanwhile; reload to get a new one")
    # The claim check above keeps a second person off a batch unless overlap handed it to them.
    if cursor.execute(
        "SELECT 1 FROM rankings WHERE batch_id = ? AND annotator_id = ?", [batch_id, annotator_id]
    ).fetchone():
        raise RankingError("this item was already submitted (stale page?); reload to get the next one")
    if holder is None and cursor.execute("SELECT 1 FROM rankings WHERE batch_id = ?", [batch_id]).fetchone():
        raise RankingError("this item was already ranked by someone else; reload to get the next one")
    if status != "ranked":
        if ranking:
            raise RankingError(f"a {status} item carries no ranking")
        return prompt_id
    sampled = cursor.execute(f"SELECT id FROM responses r WHERE batch_id = ? AND {SAMPLED}", [batch_id]).fetchall()
    expected = {row[0] for row in sampled} | ({answer_id} if answer_id is not None else set())
    given = [response_id for group in ranking for response_id in group]
    if any(not group for group in ranking):
        raise RankingError("the ranking has an empty tie group")
    if len(given) != len(set(given)) or set(given) != expected:
        raise RankingError(
            f"the ranking must order each of this item's {len(expected)} responses exactly once "
            f"(got ids {sorted(given)}, expected {sorted(expected)})"
        )
    if len(ranking) < 2:
        raise RankingError("all responses are tied: that says nothing; rank them, or skip the item")
    return prompt_id


def submit_ranking(
    store: Store,
    annotator_id: int,
    batch_id: int,
    ranking: list[list[int]],
    status: str = "ranked",
    comment: str | None = None,
    seconds_spent: float | None = None,
    submission_token: str | None = None,
    follow_up: str | None = None,
    demonstration: Demonstration | None = None,
) -> int:
    """Store one submission in one transaction and return its id; a repeated submission token returns the first.

    A token belongs to the annotator and item it was first submitted for: the same token on anything else is
    refused, never taken as a repeat. A `demonstration` (the annotator's own or edited answer) is stored as a
    response and ranked with the others (`data.demonstrations`), and a `follow_up` (the next user message after the
    best response) stores the continued conversation as a new prompt, both in the same transaction.
    """
    ranking = [[_response_id(i) for i in group] for group in ranking]
    follow_up = (follow_up or "").strip() or None
    if follow_up and status != "ranked":
        raise RankingError(f"a {status} item cannot be continued: rank it to continue the conversation")
    if demonstration is not None:
        try:
            demonstrations.check(demonstration, status, ranking)
        except DemonstrationError as error:
            raise RankingError(str(error)) from None

    def insert(cursor) -> int:
        if submission_token is not None:
            seen = cursor.execute(
                "SELECT id, annotator_id, batch_id FROM rankings WHERE submission_token = ?", [submission_token]
            ).fetchone()
            if seen and (seen[1], seen[2]) != (annotator_id, batch_id):
                raise RankingError("this submission token was already used for another item or annotator")
            if seen:
                return seen[0]
        final, answer_id = ranking, None
        if demonstration is not None:
            try:
                answer_id = demonstrations.insert_answer(cursor, batch_id, demonstration)
            except DemonstrationError as error:
                raise RankingError(str(error)) from None
            final = demonstrations.place(ranking, answer_id, demonstration)
        prompt_id = _check_ranking(cursor, batch_id, annotator_id, status, final, answer_id)
        if follow_up and len(final[0]) > 1:
            raise RankingError("a follow-up continues the one best response: break the tie for first place")
        ranking_id = cursor.execute(
            "INSERT INTO rankings (batch_id, prompt_id, annotator_id, status, ranking, comment, seconds_spent,"
            " submission_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [batch_id, prompt_id, annotator_id, status, final, comment or None, seconds_spent, submission_token],
        ).fetchone()[0]
        if answer_id is not None:
            demonstrations.record_answer(cursor, answer_id, ranking_id, annotator_id, demonstration.parent_response_id)
        if follow_up:
            try:
                insert_follow_up(cursor, ranking_id, final[0][0], follow_up)
            except ConversationError as error:
                raise RankingError(f"cannot continue the conversation: {error}") from None
        return ranking_id

    return store.write(insert)


def progress(store: Store, annotator_id: int | None = None) -> dict:
    """Return counts for the progress bars: this annotator's rankings, all rankings, prompts ranked at least once."""
    (total_prompts,) = store.query("SELECT count(*) FROM prompts")[0]
    ranked, covered = store.query("SELECT count(*), count(DISTINCT prompt_id) FROM rankings WHERE status = 'ranked'")[0]
    mine = 0
    if annotator_id is not None:
        mine = store.query(
            "SELECT count(*) FROM rankings WHERE annotator_id = ? AND status = 'ranked'", [annotator_id]
        )[0][0]
    return {"prompts": total_prompts, "rankings": ranked, "prompts_ranked": covered, "mine": mine}


def rankings_per_annotator(store: Store):
    return store.query_df(
        """
        SELECT a.name AS annotator,
               count(*) FILTER (WHERE k.status = 'ranked') AS ranked,
               count(*) FILTER (WHERE k.status = 'skipped') AS skipped,
               count(*) FILTER (WHERE k.status = 'flagged') AS flagged,
               round(median(k.seconds_spent), 1) AS median_seconds
        FROM rankings k JOIN annotators a ON a.id = k.annotator_id
        GROUP BY a.name ORDER BY ranked DESC
        """
    )


def coverage(store: Store):
    """Return how many prompts have 0, 1, 2, ... rankings."""
    return store.query_df(
        """
        SELECT rankings, count(*) AS prompts FROM (
            SELECT p.id, count(k.id) FILTER (WHERE k.status = 'ranked') AS rankings
            FROM prompts p LEFT JOIN rankings k ON k.prompt_id = p.id GROUP BY p.id)
        GROUP BY rankings ORDER BY rankings
        """
    )


def counts(store: Store) -> dict:
    tables = ("prompts", "batches", "responses", "rankings", "annotators")
    return {table: store.query(f"SELECT count(*) FROM {table}")[0][0] for table in tables}


def active_annotators(store: Store, minutes: int = 15) -> list[int]:
    """Return the ids of annotators who claimed or submitted something in the last `minutes`."""
    rows = store.query(
        f"""
        SELECT DISTINCT annotator_id FROM (
            SELECT annotator_id FROM claims WHERE claimed_at >= now() - INTERVAL {int(minutes)} MINUTE
            UNION ALL
            SELECT annotator_id FROM rankings WHERE created_at >= now() - INTERVAL {int(minutes)} MINUTE)
        ORDER BY annotator_id
        """
    )
    return [row[0] for row in rows]


def prompts_left_for(store: Store, annotator_id: int) -> int:
    """Return how many prompts this annotator has not yet ranked, skipped or flagged."""
    return store.query(
        "SELECT count(*) FROM prompts p WHERE NOT EXISTS ("
        "  SELECT 1 FROM rankings k WHERE k.prompt_id = p.id AND k.annotator_id = ?)",
        [annotator_id],
    )[0][0]


def overlap_every(share: float) -> int:
    """Return n such that every n-th batch is shown to several annotators (0: none)."""
    if not 0 <= share <= 1:
        raise ValueError(f"overlap share must be between 0 and 1, got {share}")
    return round(1 / share) if share > 0 else 0


def store_scores(store: Store, reward_model: str, scores: dict[int, float]) -> None:
    """Store a reward model's score of each response id (one transaction)."""
    store.write(
        lambda cursor: cursor.executemany(
            "INSERT OR REPLACE INTO response_scores (response_id, reward_model, score) VALUES (?, ?, ?)",
            [(response_id, reward_model, float(score)) for response_id, score in scores.items()],
        )
    )


def scores_for(store: Store, reward_model: str, response_ids: list[int]) -> dict[int, float]:
    """Return the stored scores of these responses under one reward model (missing ones left out)."""
    if not response_ids:
        return {}
    placeholders = ", ".join("?" for _ in response_ids)
    return dict(
        store.query(
            f"SELECT response_id, score FROM response_scores WHERE reward_model = ? AND response_id IN ({placeholders})",
            [reward_model, *response_ids],
        )
    )


def unscored_responses(store: Store, reward_model: str, limit: int = 64) -> list[tuple[int, object, str]]:
    """Return (response id, prompt, response) of unranked batches' responses this reward model has not scored."""
    rows = store.query(
        f"""
        SELECT r.id, p.text, pm.messages, r.text FROM responses r JOIN prompts p ON p.id = r.prompt_id {MESSAGES_JOIN}
        WHERE NOT EXISTS (SELECT 1 FROM response_scores s WHERE s.response_id = r.id AND s.reward_model = ?)
          AND NOT EXISTS (SELECT 1 FROM rankings k WHERE k.batch_id = r.batch_id)
        ORDER BY r.id LIMIT ?
        """,
        [reward_model, limit],
    )
    return [(response_id, from_stored(text, messages), response) for response_id, text, messages, response in rows]
