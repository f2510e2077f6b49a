"""Annotation: claiming items, submitting rankings with ties, refusing bad rankings, and concurrent annotators."""

import threading

import pytest

from core.generation import Sample
from data import annotation
from data.annotation import RankingError, claim_next_item, ensure_annotator, submit_ranking
from data.prompts import add_prompts


def add_items(store, count: int, k: int = 3) -> list[int]:
    """Add `count` prompts with one batch of `k` responses each; return the batch ids."""
    add_prompts(store, [f"prompt {i}" for i in range(count)], "test")
    prompt_ids = [row[0] for row in store.query("SELECT id FROM prompts ORDER BY id")][-count:]
    return [
        annotation.add_batch(
            store,
            prompt_id,
            "tiny",
            {"k": k},
            [Sample(f"response {prompt_id}.{j}", "eos", 3) for j in range(k)],
        )
        for prompt_id in prompt_ids
    ]


def rankings_count(store) -> int:
    return annotation.counts(store)["rankings"]


def test_claim_gives_the_oldest_batch_and_keeps_giving_it_until_submitted(store):
    first, second = add_items(store, 2)
    alice = ensure_annotator(store, "alice")
    assert ensure_annotator(store, " alice ") == alice

    item = claim_next_item(store, alice)
    assert item.batch_id == first
    assert item.prompt == "prompt 0" and item.model == "tiny"
    assert item.responses == ["response 1.0", "response 1.1", "response 1.2"]
    assert claim_next_item(store, alice).batch_id == first  # a reload shows the same item

    submit_ranking(store, alice, first, [[item.response_ids[2]], [item.response_ids[0]], [item.response_ids[1]]])
    assert claim_next_item(store, alice).batch_id == second


def test_ranking_with_ties_is_stored_as_groups_and_counted(store):
    (batch,) = add_items(store, 1, k=4)
    alice = ensure_annotator(store, "alice")
    ids = claim_next_item(store, alice).response_ids
    ranking = annotation.ranks_to_groups({ids[0]: 2, ids[1]: 1, ids[2]: 2, ids[3]: 3})
    assert ranking == [[ids[1]], [ids[0], ids[2]], [ids[3]]]

    ranking_id = submit_ranking(store, alice, batch, ranking, comment="close call", seconds_spent=12.5)
    stored = store.query("SELECT ranking, status, comment, seconds_spent FROM rankings WHERE id = ?", [ranking_id])
    assert stored == [(ranking, "ranked", "close call", 12.5)]
    assert annotation.progress(store, alice) == {"prompts": 1, "rankings": 1, "prompts_ranked": 1, "mine": 1}
    assert claim_next_item(store, alice) is None


@pytest.mark.parametrize("status", ["skipped", "flagged"])
def test_skip_and_flag_store_no_ranking_and_free_the_annotator(store, status):
    first, second = add_items(store, 2)
    alice = ensure_annotator(store, "alice")
    claim_next_item(store, alice)
    submit_ranking(store, alice, first, [], status=status, comment="off-topic")
    assert store.query("SELECT status, ranking FROM rankings") == [(status, [])]
    assert annotation.progress(store, alice)["rankings"] == 0  # only real rankings count
    assert claim_next_item(store, alice).batch_id == second


def test_invalid_submissions_are_refused_and_write_nothing(store):
    mine, other = add_items(store, 2)
    alice = ensure_annotator(store, "alice")
    a, b, c = claim_next_item(store, alice).response_ids
    other_ids = [row[0] for row in store.query("SELECT id FROM responses WHERE batch_id = ?", [other])]
    bad = {
        "not a permutation": ([[a], [b]], "exactly once"),
        "another prompt's ids": ([[a], [b], [other_ids[0]]], "exactly once"),
        "duplicate ids": ([[a], [b], [c], [a]], "exactly once"),
        "duplicate inside a tie": ([[a, a], [b], [c]], "exactly once"),
        "all tied": ([[a, b, c]], "all responses are tied"),
        "empty group": ([[a], [], [b, c]], "empty tie group"),
    }
    for ranking, message in bad.values():
        with pytest.raises(RankingError, match=message):
            submit_ranking(store, alice, mine, ranking)
    with pytest.raises(RankingError, match="unknown status"):
        submit_ranking(store, alice, mine, [[a], [b], [c]], status="maybe")
    with pytest.raises(RankingError, match="a skipped item carries no ranking"):
        submit_ranking(store, alice, mine, [[a], [b], [c]], status="skipped")
    with pytest.raises(RankingError, match="no item with batch id 999"):
        submit_ranking(store, alice, 999, [[a], [b], [c]])
    assert rankings_count(store) == 0


def test_stale_resubmit_is_refused_but_a_repeated_token_returns_the_first_ranking(store):
    (batch,) = add_items(store, 1)
    alice = ensure_annotator(store, "alice")
    a, b, c = claim_next_item(store, alice).response_ids

    first = submit_ranking(store, alice, batch, [[a], [b], [c]], submission_token="click-1")
    assert submit_ranking(store, alice, batch, [[a], [b], [c]], submission_token="click-1") == first
    with pytest.raises(RankingError, match="already submitted"):
        submit_ranking(store, alice, batch, [[c], [b], [a]], submission_token="click-2")
    with pytest.raises(RankingError, match="already submitted"):
        submit_ranking(store, alice, batch, [[c], [b], [a]])
    assert store.query("SELECT ranking FROM rankings") == [([[a], [b], [c]],)]


def test_two_annotators_get_different_batches_and_not_one_they_already_ranked(store):
    batches = add_items(store, 2)
    alice, bob = ensure_annotator(store, "alice"), ensure_annotator(store, "bob")
    alice_item, bob_item = claim_next_item(store, alice), claim_next_item(store, bob)
    assert {alice_item.batch_id, bob_item.batch_id} == set(batches)
    assert claim_next_item(store, ensure_annotator(store, "carol")) is None
    with pytest.raises(RankingError, match="handed to another annotator"):
        submit_ranking(store, bob, alice_item.batch_id, [[i] for i in alice_item.response_ids])

    # A second batch for a prompt alice ranked goes to someone else, never back to alice.
    ids = alice_item.response_ids
    submit_ranking(store, alice, alice_item.batch_id, [[ids[0]], [ids[1], ids[2]]])
    again = annotation.add_batch(
        store, alice_item.prompt_id, "tiny", {}, [Sample("x", "eos", 1), Sample("y", "eos", 1)]
    )
    assert claim_next_item(store, alice) is None
    assert claim_next_item(store, ensure_annotator(store, "carol")).batch_id == again


def test_stale_claim_returns_to_the_pool(store):
    (batch,) = add_items(store, 1)
    alice, bob = ensure_annotator(store, "alice"), ensure_annotator(store, "bob")
    ids = claim_next_item(store, alice).response_ids
    assert claim_next_item(store, bob) is None and annotation.open_batch_count(store) == 0

    minutes = annotation.STALE_CLAIM_MINUTES + 1
    store.write(lambda cursor: cursor.execute(f"UPDATE claims SET claimed_at = now() - INTERVAL {minutes} MINUTE"))
    assert annotation.open_batch_count(store) == 1
    assert claim_next_item(store, bob).batch_id == batch
    with pytest.raises(RankingError, match="handed to another annotator"):
        submit_ranking(store, alice, batch, [[ids[0]], [ids[1]], [ids[2]]])
    submit_ranking(store, bob, batch, [[ids[0]], [ids[1]], [ids[2]]])
    assert rankings_count(store) == 1


def run_together(workers: list) -> list:
    """Start every callable at the same moment on its own thread; return results (or raised errors) in order."""
    results = [None] * len(workers)
    barrier = threading.Barrier(len(workers))

    def run(index, work):
        barrier.wait()
        try:
            results[index] = work()
        except Exception as error:  # collected so the test can show it
            results[index] = error

    threads = [threading.Thread(target=run, args=(i, work)) for i, work in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_annotators_through_one_store_claim_distinct_items_and_all_submissions_land(store):
    add_items(store, 12)
    annotators = [ensure_annotator(store, f"annotator {i}") for i in range(6)]

    def rank_two(annotator_id):
        done = []
        for _ in range(2):
            item = claim_next_item(store, annotator_id)
            submit_ranking(store, annotator_id, item.batch_id, [[i] for i in item.response_ids])
            done.append(item.batch_id)
        return done

    results = run_together([lambda a=a: rank_two(a) for a in annotators])
    assert not [r for r in results if isinstance(r, Exception)], results
    ranked = [batch for done in results for batch in done]
    assert len(ranked) == len(set(ranked)) == 12
    assert rankings_count(store) == 12
    assert store.query("SELECT count(DISTINCT batch_id) FROM rankings")[0][0] == 12


def test_concurrent_double_submit_of_one_item_stores_it_once(store):
    (batch,) = add_items(store, 1)
    alice = ensure_annotator(store, "alice")
    ranking = [[i] for i in claim_next_item(store, alice).response_ids]

    results = run_together([lambda: submit_ranking(store, alice, batch, ranking) for _ in range(4)])
    stored = [r for r in results if isinstance(r, int)]
    assert len(stored) == 1
    assert all(isinstance(r, RankingError) for r in results if not isinstance(r, int))

    same_token = run_together([lambda: submit_ranking(store, alice, batch, ranking, submission_token="t")] * 3)
    assert all(isinstance(r, RankingError) for r in same_token)  # already ranked without a token
    assert rankings_count(store) == 1


def test_concurrent_resubmits_with_one_token_return_one_id(store):
    (batch,) = add_items(store, 1)
    alice = ensure_annotator(store, "alice")
    ranking = [[i] for i in claim_next_item(store, alice).response_ids]
    results = run_together([lambda: submit_ranking(store, alice, batch, ranking, submission_token="tok")] * 4)
    assert len(set(results)) == 1 and isinstance(results[0], int)
    assert rankings_count(store) == 1


def test_empty_annotator_name_is_refused(store):
    with pytest.raises(ValueError, match="annotator name is empty"):
        ensure_annotator(store, "   ")
