"""An accuracy is shown with its count and a Wilson interval, and flagged when too few pairs or rankings back it."""

import pytest

from rm.accuracy import MIN_PAIRS, MIN_RANKINGS, Accuracy, held_out_accuracy


def test_the_interval_and_counts_match_hand_worked_numbers():
    # 30 of 40: p = 0.75, z = 1.96; centre (0.75 + 0.048) / 1.096 = 0.728, half-width 0.130
    accuracy = Accuracy(30, 40, 10)
    assert accuracy.interval == pytest.approx((0.5981, 0.8581), abs=1e-4)
    assert str(accuracy) == "75% (95% CI 60%–86%, 40 pairs from 10 rankings)"
    assert accuracy.warning() is None


def test_one_ranking_is_flagged_not_shown_as_a_bare_percentage():
    accuracy = Accuracy(0, 1, 1)  # the "0.0% from 1 ranking" a user once saw
    low, high = accuracy.interval
    assert low == 0 and high == pytest.approx(0.7935, abs=1e-4)
    assert str(accuracy) == "0% (95% CI 0%–79%, 1 pair from 1 ranking)"
    assert accuracy.warning().startswith("Only 1 pair from 1 ranking: too few")
    assert Accuracy(MIN_PAIRS, MIN_PAIRS, MIN_RANKINGS - 1).too_few  # many pairs from too few rankings
    assert not Accuracy(MIN_PAIRS, MIN_PAIRS, MIN_RANKINGS).too_few
    assert str(Accuracy(0, 0)) == "no pairs to measure on"


def test_a_runs_metrics_give_back_its_accuracy():
    accuracy = held_out_accuracy({"val/accuracy": 0.75, "val/pairs": 48, "val/rankings": 8})
    assert (accuracy.correct, accuracy.pairs, accuracy.rankings) == (36, 48, 8)
    assert held_out_accuracy({"val/accuracy": 0.75}) is None  # a run from before counts were recorded
