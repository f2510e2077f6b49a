"""Win rate and Bradley-Terry leaderboard checked on hand-worked examples."""

import math

import pytest

from evaluation.leaderboard import bradley_terry, wilson_interval, win_rate


def test_wilson_interval_for_8_of_10():
    # p = 0.8, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71674, half 1.96·√(0.016 + 0.0009604)/1.38416 = 0.22658
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)


def test_win_rate_counts_ties_and_both_bad_as_half():
    result = win_rate(["a"] * 6 + ["b"] * 2 + ["tie", "both_bad"])
    assert (result.wins, result.losses, result.ties) == (6, 2, 2)
    assert result.rate == pytest.approx(0.7)
    assert result.low < 0.7 < result.high
    with pytest.raises(ValueError, match="unknown votes"):
        win_rate(["a", "left"])


def test_bradley_terry_two_models_three_to_one():
    # P(A beats B) = 3/4 ⇒ p_A / p_B = 3 ⇒ log-strength difference log 3 (up to the tiny prior)
    scores = bradley_terry([("A", "B", 1.0)] * 3 + [("A", "B", 0.0)])
    assert scores["A"] - scores["B"] == pytest.approx(math.log(3), abs=0.01)
    assert scores["A"] + scores["B"] == pytest.approx(0.0, abs=1e-9)


def test_bradley_terry_cycle_is_a_draw_and_order_is_kept():
    cycle = [("A", "B", 1.0), ("B", "C", 1.0), ("C", "A", 1.0)]
    scores = bradley_terry(cycle)
    assert max(scores.values()) - min(scores.values()) < 1e-6
    ladder = bradley_terry([("A", "B", 1.0)] * 4 + [("B", "C", 1.0)] * 4 + [("A", "B", 0.0), ("B", "C", 0.0)])
    assert ladder["A"] > ladder["B"] > ladder["C"]


def test_bradley_terry_unbeaten_model_stays_finite():
    scores = bradley_terry([("A", "B", 1.0)] * 5)
    assert math.isfinite(scores["A"]) and scores["A"] > scores["B"]
