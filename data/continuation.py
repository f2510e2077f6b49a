"""Continuing a conversation: after a ranking, the best response and the annotator's next user message become a
new prompt, sampled ahead like any other. The tree is kept: each continuation names its parent prompt, the
response it continues and the ranking that chose it."""

import json

from core.chat import ConversationError, conversation
from data.conversations import from_stored, prompt_key, stored_text
from data.prompts import MAX_PROMPT_CHARS, MESSAGES_JOIN

FOLLOW_UP_SOURCE = "follow-up"


def insert_follow_up(cursor, ranking_id: int, response_id: int, user_message: str) -> int:
    """Store the ranked prompt + the chosen response + `user_message` as a prompt; return its id (an existing one
    when the same conversation is already stored). Runs inside the ranking's transaction."""
    row = cursor.execute(
        f"SELECT p.id, p.text, pm.messages, r.text FROM rankings k JOIN prompts p ON p.id = k.prompt_id {MESSAGES_JOIN} "
        "JOIN responses r ON r.id = ? AND r.batch_id = k.batch_id WHERE k.id = ?",
        [response_id, ranking_id],
    ).fetchone()
    if row is None:
        raise ConversationError(f"response {response_id} is not one of ranking {ranking_id}'s responses")
    parent_id, text, messages, response = row
    if not response.strip():
        raise ConversationError("the best response is empty: a conversation cannot continue from it")
    if not user_message or not user_message.strip():
        raise ConversationError("the follow-up message is empty")
    continued = conversation(
        conversation(from_stored(text, messages))
        + [{"role": "assistant", "content": response}, {"role": "user", "content": user_message.strip()}]
    )
    transcript = stored_text(continued)
    if len(transcript) > MAX_PROMPT_CHARS:
        raise ConversationError(
            f"the continued conversation has {len(transcript):,} characters, more than {MAX_PROMPT_CHARS:,}"
        )
    key = prompt_key(continued)
    existing = cursor.execute("SELECT id FROM prompts WHERE text_hash = ?", [key]).fetchone()
    if existing:
        return existing[0]
    prompt_id = cursor.execute(
        "INSERT INTO prompts (text, text_hash, source) VALUES (?, ?, ?) RETURNING id",
        [transcript, key, FOLLOW_UP_SOURCE],
    ).fetchone()[0]
    cursor.execute(
        "INSERT INTO prompt_messages (prompt_id, messages, parent_prompt_id, parent_response_id, parent_ranking_id) "
        "VALUES (?, ?, ?, ?, ?)",
        [prompt_id, json.dumps(continued, ensure_ascii=False), parent_id, response_id, ranking_id],
    )
    return prompt_id


def parent_of(cursor_or_store, prompt_id: int) -> tuple[int, int, int] | None:
    """Return (parent prompt id, continued response id, ranking id) of a continued conversation, else None."""
    query = "SELECT parent_prompt_id, parent_response_id, parent_ranking_id FROM prompt_messages WHERE prompt_id = ?"
    if hasattr(cursor_or_store, "query"):
        rows = cursor_or_store.query(query, [prompt_id])
    else:
        rows = cursor_or_store.execute(query, [prompt_id]).fetchall()
    return tuple(rows[0]) if rows and rows[0][0] is not None else None
