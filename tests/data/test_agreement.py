"""Kendall's tau-b on hand-worked rankings."""

import math

import pytest

from data.agreement import kendall_tau_b, rank_of


def test_identical_and_reversed_rankings():
    order = rank_of([[1], [2], [3], [4]])
    assert kendall_tau_b(order, order) == 1.0
    assert kendall_tau_b(order, rank_of([[4], [3], [2], [1]])) == -1.0


def test_one_swap_of_four():
    # 6 pairs, one discordant (3,4): (5 − 1) / 6
    assert kendall_tau_b(rank_of([[1], [2], [3], [4]]), rank_of([[1], [2], [4], [3]])) == pytest.approx(4 / 6)


def test_ties_use_tau_b_denominator():
    # first: 1 > 2 > 3; second: 1 > {2, 3}. C = 2 (1-2, 1-3), D = 0, n0 = 3, n1 = 0, n2 = 1: 2 / √(3·2)
    assert kendall_tau_b(rank_of([[1], [2], [3]]), rank_of([[1], [2, 3]])) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau_b(rank_of([[1, 2]]), rank_of([[1], [2]])))
    with pytest.raises(ValueError, match="different responses"):
        kendall_tau_b(rank_of([[1], [2]]), rank_of([[1], [3]]))
