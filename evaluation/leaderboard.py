"""Judge models from blind human votes: a win rate with a confidence interval, and a Bradley-Terry leaderboard."""

import math
from dataclasses import dataclass

from core.stats import wilson_interval

VOTES = ("a", "b", "tie", "both_bad")


@dataclass
class WinRate:
    wins: int
    losses: int
    ties: int  # ties and "both bad" both count half a win each way
    rate: float
    low: float
    high: float


def win_rate(votes: list[str], z: float = 1.96) -> WinRate:
    """Return model A's win rate over B from votes 'a', 'b', 'tie', 'both_bad'; a tie counts half."""
    unknown = set(votes) - set(VOTES)
    if unknown:
        raise ValueError(f"unknown votes {sorted(unknown)}; expected {VOTES}")
    wins, losses = votes.count("a"), votes.count("b")
    ties = len(votes) - wins - losses
    n = len(votes)
    rate = (wins + ties / 2) / n if n else 0.5
    low, high = wilson_interval(wins + ties / 2, n, z)
    return WinRate(wins, losses, ties, rate, low, high)


def bradley_terry(
    matches: list[tuple[str, str, float]], iterations: int = 1000, tol: float = 1e-10
) -> dict[str, float]:
    """Return each model's Bradley-Terry strength as a log score centred on 0.

    matches: (model_i, model_j, score of i) with score 1 = i won, 0 = j won, 0.5 = tie.
    P(i beats j) = p_i / (p_i + p_j); fitted with Hunter's (2004) MM updates
    p_i <- W_i / sum_j n_ij / (p_i + p_j). A model that never wins or never loses has no finite
    maximum-likelihood strength, so every pair gets a tiny prior of one tie (0.01 weight) to keep it finite.
    """
    models = sorted({m for i, j, _ in matches for m in (i, j)})
    index = {m: k for k, m in enumerate(models)}
    size = len(models)
    wins = [[0.0] * size for _ in range(size)]  # wins[i][j]: i's score against j
    for i, j, score in matches:
        wins[index[i]][index[j]] += score
        wins[index[j]][index[i]] += 1 - score
    prior = 0.01
    for i in range(size):
        for j in range(size):
            if i != j:
                wins[i][j] += prior / 2
    strength = [1.0] * size
    for _ in range(iterations):
        updated = []
        for i in range(size):
            total_wins = sum(wins[i])
            denominator = sum((wins[i][j] + wins[j][i]) / (strength[i] + strength[j]) for j in range(size) if j != i)
            updated.append(total_wins / denominator if denominator else strength[i])
        geometric_mean = math.exp(sum(math.log(s) for s in updated) / size)
        updated = [s / geometric_mean for s in updated]
        done = max(abs(a - b) for a, b in zip(updated, strength, strict=True)) < tol
        strength = updated
        if done:
            break
    return {m: math.log(strength[index[m]]) for m in models}
