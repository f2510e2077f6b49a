"""Build a store full of items to rank, and hold a database from another process, for the reliability tests."""

import contextlib
import subprocess
import sys

from core.generation import Sample
from data import annotation
from data.prompts import add_prompts
from data.settings import save_settings
from data.store import Store


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


@contextlib.contextmanager
def held_by_another_process(db):
    """Keep `db` open in a second process (as a running app would) for the duration of the block."""
    code = f"import duckdb, time; c = duckdb.connect({str(db)!r}); print('ok', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        yield
    finally:
        holder.kill()
        holder.wait()
