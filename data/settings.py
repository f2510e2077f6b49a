"""App settings (generator model, sampling parameters), stored in DuckDB so every session and the worker agree."""

import json

from data.store import Store

DEFAULTS = {
    "generator_model": "default",
    "k": 4,
    "temperature": 0.8,
    "top_p": 0.95,
    "max_new_tokens": None,  # None: chosen for the device (core.generation.default_max_new_tokens)
    "seed": None,
    "ready_per_annotator": 5,
    "batch_rows": None,  # sequences per generate call (several prompts' K responses); None: by device
    "next_order": "fewest",  # 'fewest' rankings first, or 'uncertain' first (needs suggestion_model)
    "overlap_share": 0.0,  # share of items also shown to a second annotator, to measure agreement
    "suggestion_model": None,  # reward-model run whose scores the sampler stores beside new responses
    "suggestions": "off",  # 'off', 'scores' or 'preorder': off by default so people are not anchored
    "guidelines": "",  # markdown shown beside every annotation item
    "continue_conversations": True,  # annotators may write the next user message after the best response
    "demonstrations": True,  # annotators may edit a response or write their own answer, ranked with the others
}


def load_settings(store: Store) -> dict:
    """Return the stored settings over the defaults."""
    stored = {key: json.loads(value) for key, value in store.query("SELECT key, value FROM settings")}
    return DEFAULTS | {key: value for key, value in stored.items() if key in DEFAULTS}


def save_settings(store: Store, changes: dict) -> None:
    """Store changed settings in one transaction; an unknown key is refused."""
    unknown = set(changes) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")

    def upsert(cursor):
        for key, value in changes.items():
            cursor.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", [key, json.dumps(value)])

    store.write(upsert)
