"""Blind comparisons: the display order hides the model, votes land in model terms, results add up."""

import random

import pytest

from data import annotation, compare
from evaluation.leaderboard import bradley_terry, win_rate


def test_votes_are_translated_from_screen_side_to_model(store):
    voter = annotation.ensure_annotator(store, "ada")
    rng = random.Random(0)
    sides = []
    for n in range(20):
        comparison_id = compare.add_comparison(store, f"p{n}", "base", f"base {n}", "policy", f"policy {n}", rng)
        shown = compare.next_comparison(store, voter)
        assert shown.comparison_id == comparison_id
        choice = "left" if shown.left.startswith("policy") else "right"  # always pick the policy's answer
        sides.append(choice)
        compare.record_vote(store, comparison_id, voter, choice, token=f"t{n}")
        compare.record_vote(store, comparison_id, voter, choice, token=f"t{n}")  # a retry is stored once
    assert {"left", "right"} <= set(sides)  # the policy was shown on both sides
    assert compare.votes_by_pair(store) == {("base", "policy"): ["b"] * 20}
    assert win_rate(compare.votes_by_pair(store)[("base", "policy")]).rate == 0.0
    assert compare.next_comparison(store, voter) is None


def test_bad_votes_are_refused(store):
    voter = annotation.ensure_annotator(store, "ada")
    comparison_id = compare.add_comparison(store, "p", "x", "1", "y", "2")
    with pytest.raises(ValueError, match="unknown choice"):
        compare.record_vote(store, comparison_id, voter, "up")
    compare.record_vote(store, comparison_id, voter, "tie")
    with pytest.raises(ValueError, match="already voted"):
        compare.record_vote(store, comparison_id, voter, "left")
    with pytest.raises(ValueError, match="two different models"):
        compare.add_comparison(store, "p", "x", "1", "x", "2")
    assert store.query("SELECT count(*) FROM votes") == [(1,)]


def test_leaderboard_from_votes(store):
    voter_ids = [annotation.ensure_annotator(store, name) for name in ("a1", "a2", "a3")]
    for model_a, model_b in [("m1", "m2"), ("m2", "m3"), ("m1", "m3")]:
        comparison_id = compare.add_comparison(store, "p", model_a, "x", model_b, "y", random.Random(1))
        for voter in voter_ids:
            shown_a_left = store.query("SELECT a_on_left FROM comparisons WHERE id = ?", [comparison_id])[0][0]
            compare.record_vote(store, comparison_id, voter, "left" if shown_a_left else "right")  # a always wins
    scores = bradley_terry(compare.matches(store))
    assert scores["m1"] > scores["m2"] > scores["m3"]
