"""Prompts: add (skipping duplicates), browse and count. A prompt is text or a conversation (`core.chat`)."""

import json
from dataclasses import dataclass

import pyarrow

from data.conversations import checked, from_stored, prompt_key, stored_text
from data.store import Store

MAX_PROMPT_CHARS = 20_000

# Each prompt `p` with its messages `pm.messages` (NULL for one user message): `FROM {PROMPTS_WITH_MESSAGES}`.
MESSAGES_JOIN = "LEFT JOIN prompt_messages pm ON pm.prompt_id = p.id"
PROMPTS_WITH_MESSAGES = f"prompts p {MESSAGES_JOIN}"


def prompt_hash(prompt) -> str:
    """Return the key that decides whether two prompts are duplicates: the whole conversation, whitespace trimmed."""
    return prompt_key(prompt)


@dataclass
class AddReport:
    added: int
    skipped_duplicates: int


def add_prompts(store: Store, prompts: list, source: str) -> AddReport:
    """Add prompts (text or conversations) in one transaction; duplicates are skipped and counted."""
    return store.write(insert_prompts, prompts, source)


def insert_prompts(cursor, prompts: list, source: str) -> AddReport:
    """Insert prompts inside the caller's transaction, skipping duplicates of stored prompts and of each other."""
    unique: dict[str, object] = {}
    for prompt in prompts:
        prompt = prompt if isinstance(prompt, str) else checked(prompt)  # one user message is stored as text
        unique.setdefault(prompt_hash(prompt), prompt)
    if not unique:
        return AddReport(0, len(prompts))
    # One columnar insert: row-by-row executemany takes seconds for a 100k-prompt file.
    incoming = pyarrow.table(
        {
            "text": [stored_text(prompt) for prompt in unique.values()],
            "text_hash": list(unique.keys()),
            "messages": [None if isinstance(p, str) else json.dumps(p, ensure_ascii=False) for p in unique.values()],
        },
        schema=pyarrow.schema(
            [("text", pyarrow.string()), ("text_hash", pyarrow.string()), ("messages", pyarrow.string())]
        ),
    )
    cursor.register("incoming_arrow", incoming)
    cursor.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM incoming_arrow")
    cursor.unregister("incoming_arrow")
    cursor.execute("DELETE FROM incoming WHERE text_hash IN (SELECT text_hash FROM prompts)")
    new = cursor.execute("SELECT count(*) FROM incoming").fetchone()[0]
    cursor.execute("INSERT INTO prompts (text, text_hash, source) SELECT text, text_hash, ? FROM incoming", [source])
    cursor.execute(
        "INSERT INTO prompt_messages (prompt_id, messages) SELECT p.id, i.messages "
        "FROM incoming i JOIN prompts p ON p.text_hash = i.text_hash WHERE i.messages IS NOT NULL"
    )
    cursor.execute("DROP TABLE incoming")
    return AddReport(new, len(prompts) - new)


def prompt_count(store: Store) -> int:
    return store.query("SELECT count(*) FROM prompts")[0][0]


def get_prompt(store: Store, prompt_id: int):
    """Return a stored prompt: its text, or its messages when it is a conversation."""
    rows = store.query(f"SELECT p.text, pm.messages FROM {PROMPTS_WITH_MESSAGES} WHERE p.id = ?", [prompt_id])
    if not rows:
        raise KeyError(f"no prompt with id {prompt_id}")
    return from_stored(*rows[0])


def all_prompts(store: Store) -> list[tuple[int, object]]:
    """Return every (prompt id, prompt) in id order, conversations as their messages."""
    rows = store.query(f"SELECT p.id, p.text, pm.messages FROM {PROMPTS_WITH_MESSAGES} ORDER BY p.id")
    return [(prompt_id, from_stored(text, messages)) for prompt_id, text, messages in rows]


def browse_prompts(store: Store, search: str = "", limit: int = 200):
    """Return prompts matching `search` (case-insensitive substring) with their response and ranking counts."""
    return store.query_df(
        """
        SELECT p.id, p.text, p.source, (SELECT count(*) FROM prompt_messages pm WHERE pm.prompt_id = p.id) > 0
               AS conversation,
               (SELECT count(*) FROM responses r WHERE r.prompt_id = p.id) AS responses,
               (SELECT count(*) FROM rankings k WHERE k.prompt_id = p.id AND k.status = 'ranked') AS rankings,
               p.created_at
        FROM prompts p
        WHERE contains(lower(p.text), lower(?))
        ORDER BY p.id
        LIMIT ?
        """,
        [search, limit],
    )
