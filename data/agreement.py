"""Inter-annotator agreement: Kendall's tau-b between two people's rankings of the same responses."""

import math
from itertools import combinations

from data.store import Store


def rank_of(groups: list[list[int]]) -> dict[int, int]:
    """Turn tie groups (best first) into {response id: rank}, tied responses sharing a rank."""
    return {response_id: rank for rank, group in enumerate(groups) for response_id in group}


def kendall_tau_b(first: dict[int, int], second: dict[int, int]) -> float:
    """Return Kendall's tau-b of two rankings of the same items: (C − D) / √((n0 − n1)(n0 − n2)).

    C, D: concordant and discordant pairs; n1, n2: pairs tied in the first, second ranking; n0 all pairs.
    NaN when either ranking ties everything (no order to agree with). Written out rather than taken
    from scipy, which the project does not otherwise need.
    """
    if set(first) != set(second):
        raise ValueError("the two rankings order different responses")
    concordant = discordant = tied_first = tied_second = 0
    for a, b in combinations(sorted(first), 2):
        dx, dy = first[a] - first[b], second[a] - second[b]
        tied_first += dx == 0
        tied_second += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    pairs = len(first) * (len(first) - 1) // 2
    denominator = math.sqrt((pairs - tied_first) * (pairs - tied_second))
    return (concordant - discordant) / denominator if denominator else math.nan


def agreement(store: Store) -> tuple[list[dict], float]:
    """Return (per annotator pair: mean tau-b and items shared, overall mean tau-b) over doubly-ranked items."""
    rows = store.query(
        """
        SELECT x.batch_id, ax.name, x.ranking, ay.name, y.ranking
        FROM rankings x JOIN rankings y ON x.batch_id = y.batch_id AND x.annotator_id < y.annotator_id
        JOIN annotators ax ON ax.id = x.annotator_id JOIN annotators ay ON ay.id = y.annotator_id
        WHERE x.status = 'ranked' AND y.status = 'ranked'
        """
    )
    per_pair: dict[tuple[str, str], list[float]] = {}
    for _, name_x, ranking_x, name_y, ranking_y in rows:
        first, second = rank_of(ranking_x), rank_of(ranking_y)
        shared = first.keys() & second.keys()  # each person's own written answer is theirs alone
        tau = kendall_tau_b({i: first[i] for i in shared}, {i: second[i] for i in shared})
        if not math.isnan(tau):
            per_pair.setdefault(tuple(sorted((name_x, name_y))), []).append(tau)
    table = [
        {"annotators": f"{a} · {b}", "items": len(taus), "kendall_tau": sum(taus) / len(taus)}
        for (a, b), taus in sorted(per_pair.items())
    ]
    every = [tau for taus in per_pair.values() for tau in taus]
    return table, (sum(every) / len(every) if every else math.nan)
