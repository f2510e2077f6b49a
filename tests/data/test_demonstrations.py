"""Demonstrations: an annotator's edited or written answer is stored with its ranking, once per token, ranked."""

import pytest
from trl.data_utils import is_conversational

from data import annotation, demonstrations
from data.agreement import agreement
from data.annotation import RankingError, claim_next_item, ensure_annotator, submit_ranking
from data.demonstrations import Demonstration
from data.export import best_ranked_demonstrations, export, ranked_items
from data.tables import load_table
from tests.data.test_annotation import add_items


def human_rows(store) -> list[tuple]:
    return store.query(
        "SELECT h.response_id, h.ranking_id, h.parent_response_id, r.text, r.model, r.batch_id "
        "FROM human_responses h JOIN responses r ON r.id = h.response_id ORDER BY h.response_id"
    )


def test_an_edited_response_keeps_its_parent_and_ranks_just_above_it(store):
    (batch,) = add_items(store, 1, k=3)
    alice = ensure_annotator(store, "alice")
    a, b, c = claim_next_item(store, alice).response_ids
    edited = Demonstration("  response 1.2, but better  ", parent_response_id=c)

    ranking_id = submit_ranking(store, alice, batch, [[a], [b], [c]], demonstration=edited, submission_token="t1")

    [(answer, stored_ranking, parent, text, model, answer_batch)] = human_rows(store)
    assert (stored_ranking, parent, text, model, answer_batch) == (
        ranking_id,
        c,
        "response 1.2, but better",
        "human",
        batch,
    )
    assert store.query("SELECT ranking FROM rankings WHERE id = ?", [ranking_id]) == [([[a], [b], [answer], [c]],)]
    assert demonstrations.demonstration_counts(store) == {"demonstrations": 1, "edited": 1, "written": 0}
    assert demonstrations.human_answers(store)[0]["parent_text"] == "response 1.2"


def test_a_written_answer_ranks_first_by_default_or_where_the_annotator_puts_it(store):
    first, second = add_items(store, 2, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, first, [[a], [b]], demonstration=Demonstration("My own answer."))
    c, d = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, second, [[c, d]], demonstration=Demonstration("Worse than both.", rank=2))

    (written, _, parent, *_), (last, *_) = human_rows(store)
    assert parent is None
    rankings = [row[0] for row in store.query("SELECT ranking FROM rankings ORDER BY id")]
    assert rankings == [[[written], [a], [b]], [[c, d], [last]]]  # all-tied sampled ones are fine beside an answer
    assert demonstrations.demonstration_counts(store) == {"demonstrations": 2, "edited": 0, "written": 2}


def test_a_demonstration_is_stored_once_per_submission_token(store):
    (batch,) = add_items(store, 1, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    edited = Demonstration("edited", parent_response_id=b)
    first = submit_ranking(store, alice, batch, [[a], [b]], demonstration=edited, submission_token="once")
    again = submit_ranking(store, alice, batch, [[a], [b]], demonstration=edited, submission_token="once")

    assert again == first
    assert len(human_rows(store)) == 1
    assert annotation.counts(store)["responses"] == 3 and annotation.counts(store)["rankings"] == 1
    bob = ensure_annotator(store, "bob")
    with pytest.raises(RankingError, match="already used"):
        submit_ranking(store, bob, batch, [[a], [b]], demonstration=edited, submission_token="once")


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (Demonstration("   "), "ranked", "empty"),
        (Demonstration("x", parent_response_id=10_000), "ranked", "not one of this item's"),
        (Demonstration("x", rank=9), "ranked", "between 1 and 3"),
        (Demonstration("x"), "skipped", "rank it to add one"),
    ],
)
def test_a_bad_demonstration_is_refused_and_writes_nothing(store, answer, status, message):
    (batch,) = add_items(store, 1, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    ranking = [[a], [b]] if status == "ranked" else []
    with pytest.raises(RankingError, match=message):
        submit_ranking(store, alice, batch, ranking, status=status, demonstration=answer)
    assert annotation.counts(store)["responses"] == 2 and annotation.counts(store)["rankings"] == 0
    assert human_rows(store) == []


def test_a_stale_submission_with_an_answer_writes_no_answer(store):
    (batch,) = add_items(store, 1, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, batch, [[a], [b]], submission_token="first")
    with pytest.raises(RankingError, match="already submitted"):
        submit_ranking(store, alice, batch, [[a], [b]], demonstration=Demonstration("late"), submission_token="2nd")
    assert annotation.counts(store)["responses"] == 2 and human_rows(store) == []


def test_the_next_annotator_ranks_only_the_sampled_responses_and_agreement_compares_those(store):
    add_items(store, 1, k=2)
    alice, bob = ensure_annotator(store, "alice"), ensure_annotator(store, "bob")
    overlap = {"overlap_every": 1, "overlap_annotators": 2}
    item = claim_next_item(store, alice, **overlap)
    a, b = item.response_ids
    submit_ranking(store, alice, item.batch_id, [[a], [b]], demonstration=Demonstration("mine", parent_response_id=b))

    seen_by_bob = claim_next_item(store, bob, **overlap)
    assert seen_by_bob.batch_id == item.batch_id and seen_by_bob.response_ids == [a, b]
    submit_ranking(store, bob, item.batch_id, [[a], [b]])
    assert agreement(store)[1] == 1.0


def test_a_human_answer_ranked_best_is_a_demonstration_for_sft(store):
    (batch,) = add_items(store, 1, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, batch, [[a], [b]], demonstration=Demonstration("The best answer.", rank=1))

    [item] = ranked_items(store)
    assert item["ranked_responses"] == [["The best answer."], ["response 1.0"], ["response 1.1"]]
    assert best_ranked_demonstrations(store) == [{"prompt": "prompt 0", "completion": "The best answer."}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_sft_export_is_trls_messages_format_and_sft_reads_it_back(store, tmp_path, fmt):
    from orchestration.cli import main
    from policy.sft import load_demonstrations

    first, second = add_items(store, 2, k=2)
    alice = ensure_annotator(store, "alice")
    a, b = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, first, [[b], [a]], demonstration=Demonstration("Edited.", parent_response_id=b))
    c, d = claim_next_item(store, alice).response_ids
    submit_ranking(store, alice, second, [[c, d]], demonstration=Demonstration("Worst.", rank=2))
    expected = [
        {"prompt": [{"role": "user", "content": "prompt 0"}], "completion": "Edited."},
        {"prompt": [{"role": "user", "content": "prompt 1"}], "completion": "response 2.0"},
        {"prompt": [{"role": "user", "content": "prompt 1"}], "completion": "response 2.1"},
    ]

    path = tmp_path / f"sft.{fmt}"
    assert export(store, path, kind="sft") == 3
    table = load_table(str(path))[1]
    assert table[0]["messages"] == [
        {"role": "user", "content": "prompt 0"}, {"role": "assistant", "content": "Edited."}
    ]  # fmt: skip
    assert [row["source"] for row in table] == ["human", "model", "model"]
    assert all(is_conversational(row) for row in table)  # TRL's SFTTrainer takes it as a messages dataset
    assert load_demonstrations(path) == expected
    assert [row["completion"] for row in load_demonstrations(store)] == [row["completion"] for row in expected]

    store.close()
    again = tmp_path / f"again.{fmt}"
    assert main(["--db", str(store.path), "export", str(again), "--kind", "sft"]) == 0
    assert load_demonstrations(again) == expected
