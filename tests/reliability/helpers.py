"""Build a store full of items to rank, for the reliability tests."""

from data import annotation
from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store
from policy.sampling import Sample


def fill_items(store, count: int, k: int = 2) -> None:
    """Add `count` prompts, each with one sampled batch of k hand-made responses."""
    add_prompts(store, [f"prompt {i}" for i in range(count)], "reliability")
    prompt_ids = [row[0] for row in store.query("SELECT id FROM prompts ORDER BY id")]
    for prompt_id in prompt_ids:
        annotation.add_batch(store, prompt_id, "m", {"k": k}, [Sample(f"r{j}", "eos", 1) for j in range(k)])


def prepare(db, prompts: list[str], responses: list[str]) -> None:
    """Store prompts with hand-made batches and keep the sampler idle: no model is needed in these tests."""
    store = Store(db)
    add_prompts(store, prompts, "test")
    for (prompt_id,) in store.query("SELECT id FROM prompts ORDER BY id"):
        annotation.add_batch(store, prompt_id, "m", {}, [Sample(text, "eos", 1) for text in responses])
    save_settings(store, {"ready_per_annotator": 0})
    store.close()
