"""Overlap shows a share of items to a second annotator (for agreement); the next item follows the chosen order."""

import pytest

from core.generation import Sample
from data import agreement, annotation
from data.prompts import add_prompts


def make_batches(store, count, k=3):
    add_prompts(store, [f"p{i}" for i in range(count)], "t")
    for prompt_id in range(1, count + 1):
        annotation.add_batch(store, prompt_id, "m", {}, [Sample(f"{prompt_id}-{j}", "eos", 1) for j in range(k)])


def rank_all(store, annotator_id, reverse=False, **claim_options):
    ranked = []
    while (item := annotation.claim_next_item(store, annotator_id, **claim_options)) is not None:
        ids = list(reversed(item.response_ids)) if reverse else item.response_ids
        annotation.submit_ranking(store, annotator_id, item.batch_id, [[i] for i in ids])
        ranked.append(item.batch_id)
    return ranked


def test_without_overlap_each_item_goes_to_one_person(store):
    make_batches(store, 6)
    ada, bob = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "bob")
    assert len(rank_all(store, ada)) == 6
    assert rank_all(store, bob) == []


def test_overlap_every_second_item_gets_a_second_ranking_and_agreement(store):
    make_batches(store, 6)
    ada, bob = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "bob")
    every = annotation.overlap_every(0.5)
    assert every == 2
    rank_all(store, ada, overlap_every=every)
    second = rank_all(store, bob, reverse=True, overlap_every=every)
    assert second == [2, 4, 6]  # only the overlap share comes back, and never a third time
    carol = annotation.ensure_annotator(store, "carol")
    assert rank_all(store, carol, overlap_every=every) == []
    table, overall = agreement.agreement(store)
    assert table == [{"annotators": "ada · bob", "items": 3, "kendall_tau": -1.0}]
    assert overall == -1.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        annotation.overlap_every(1.5)


def test_someone_elses_ranked_item_cannot_be_submitted_again(store):
    make_batches(store, 1)
    ada, bob = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "bob")
    item = annotation.claim_next_item(store, ada)
    annotation.submit_ranking(store, ada, item.batch_id, [[i] for i in item.response_ids])
    with pytest.raises(annotation.RankingError, match="another annotator|someone else"):
        annotation.submit_ranking(store, bob, item.batch_id, [[i] for i in item.response_ids])


def test_uncertain_first_orders_by_smallest_reward_gap(store):
    make_batches(store, 3)
    scores = {}
    gaps = {1: 2.0, 2: 0.1, 3: 0.7}  # batch -> gap between its two closest responses
    for batch_id, gap in gaps.items():
        response_ids = [
            r for (r,) in store.query("SELECT id FROM responses WHERE batch_id = ? ORDER BY id", [batch_id])
        ]
        scores |= dict(zip(response_ids, [0.0, gap, gap + 5.0], strict=True))
    annotation.store_scores(store, "rm-1", scores)
    ada = annotation.ensure_annotator(store, "ada")
    assert rank_all(store, ada, order="uncertain", reward_model="rm-1") == [2, 3, 1]
    assert annotation.scores_for(store, "rm-1", [1, 2]) == {1: 0.0, 2: 2.0}
    with pytest.raises(ValueError, match="needs a reward model"):
        annotation.claim_next_item(store, ada, order="uncertain")


def test_fewest_rankings_first(store):
    make_batches(store, 2)
    ada, bob = annotation.ensure_annotator(store, "ada"), annotation.ensure_annotator(store, "bob")
    first = annotation.claim_next_item(store, ada)
    annotation.submit_ranking(store, ada, first.batch_id, [[i] for i in first.response_ids])
    annotation.add_batch(store, first.prompt_id, "m", {}, [Sample("x", "eos", 1), Sample("y", "eos", 1)])
    assert annotation.claim_next_item(store, bob).prompt_id != first.prompt_id  # the unranked prompt first
