"""Prompts: add (skipping duplicates), browse and count."""

import hashlib
from dataclasses import dataclass

import pyarrow

from data.store import Store

MAX_PROMPT_CHARS = 20_000


def prompt_hash(text: str) -> str:
    """Return the key that decides whether two prompts are duplicates (surrounding whitespace ignored)."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


@dataclass
class AddReport:
    added: int
    skipped_duplicates: int


def add_prompts(store: Store, texts: list[str], source: str) -> AddReport:
    """Add prompts in one transaction; duplicates of stored prompts or of each other are skipped and counted."""

    def insert(cursor) -> AddReport:
        unique: dict[str, str] = {}
        for text in texts:
            unique.setdefault(prompt_hash(text), text.strip())
        if not unique:
            return AddReport(0, len(texts))
        # One columnar insert: row-by-row executemany takes seconds for a 100k-prompt file.
        incoming = pyarrow.table({"text": list(unique.values()), "text_hash": list(unique.keys())})
        cursor.register("incoming_arrow", incoming)
        cursor.execute("CREATE OR REPLACE TEMP TABLE incoming AS SELECT * FROM incoming_arrow")
        cursor.unregister("incoming_arrow")
        new = cursor.execute(
            "SELECT count(*) FROM incoming WHERE text_hash NOT IN (SELECT text_hash FROM prompts)"
        ).fetchone()[0]
        cursor.execute(
            "INSERT INTO prompts (text, text_hash, source) "
            "SELECT text, text_hash, ? FROM incoming WHERE text_hash NOT IN (SELECT text_hash FROM prompts)",
            [source],
        )
        cursor.execute("DROP TABLE incoming")
        return AddReport(new, len(texts) - new)

    return store.write(insert)


def prompt_count(store: Store) -> int:
    return store.query("SELECT count(*) FROM prompts")[0][0]


def get_prompt(store: Store, prompt_id: int) -> str:
    rows = store.query("SELECT text FROM prompts WHERE id = ?", [prompt_id])
    if not rows:
        raise KeyError(f"no prompt with id {prompt_id}")
    return rows[0][0]


def browse_prompts(store: Store, search: str = "", limit: int = 200):
    """Return prompts matching `search` (case-insensitive substring) with their response and ranking counts."""
    return store.query_df(
        """
        SELECT p.id, p.text, p.source,
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
