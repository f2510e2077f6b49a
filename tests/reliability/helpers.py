"""Build a store full of items to rank, for the reliability tests."""

from data import annotation
from data.prompts import add_prompts
from policy.sampling import Sample


def fill_items(store, count: int, k: int = 2) -> None:
    """Add `count` prompts, each with one sampled batch of k hand-made responses."""
    add_prompts(store, [f"prompt {i}" for i in range(count)], "reliability")
    prompt_ids = [row[0] for row in store.query("SELECT id FROM prompts ORDER BY id")]
    for prompt_id in prompt_ids:
        annotation.add_batch(store, prompt_id, "m", {"k": k}, [Sample(f"r{j}", "eos", 1) for j in range(k)])


def rank_next(store, annotator_id: int, token: str) -> int | None:
    """Claim the annotator's next item and rank its responses in reverse order; return the ranking id."""
    item = annotation.claim_next_item(store, annotator_id)
    if item is None:
        return None
    groups = [[response_id] for response_id in reversed(item.response_ids)]
    return annotation.submit_ranking(store, annotator_id, item.batch_id, groups, submission_token=token)
