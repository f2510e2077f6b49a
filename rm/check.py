"""Check a reward model against people: pairwise agreement on rankings it never trained on, and length bias.

A reward model that ranks held-out human rankings no better than chance, or whose reward mostly tracks
response length, will teach a policy the wrong thing; these numbers say so before PPO spends hours on it.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from rm.data import Ranking
from rm.loss import comparison_pairs


@dataclass
class RankingCheck:
    """How one human ranking fared under the reward model."""

    ranking_id: int
    prompt: str
    agreed: int  # untied pairs the reward model orders as people did
    pairs: int  # untied pairs in the ranking
    worst_better: str  # of the pairs it got wrong, the one with the largest reward gap: people preferred this...
    worst_worse: str  # ...over this, the model scored them the other way round ("" when it got none wrong)

    @property
    def accuracy(self) -> float:
        return self.agreed / self.pairs


@dataclass
class CheckResult:
    rankings: list[RankingCheck]  # most wrong first
    points: list[dict]  # one per response: ranking_id, reward, length (tokens), human group (0 = best)
    skipped_trained: int  # rankings left out because the reward model trained on them

    @property
    def agreed(self) -> int:
        return sum(r.agreed for r in self.rankings)

    @property
    def pairs(self) -> int:
        return sum(r.pairs for r in self.rankings)

    @property
    def accuracy(self) -> float:
        return self.agreed / self.pairs if self.pairs else math.nan

    @property
    def length_correlation(self) -> float:
        """Pearson correlation of reward with length: near 1 hints the model rewards length, not quality."""
        if len(self.points) < 2:
            return math.nan
        values = torch.tensor([[p["reward"], p["length"]] for p in self.points], dtype=torch.float64).T
        if (values.std(dim=1) == 0).any():
            return math.nan
        return torch.corrcoef(values)[0, 1].item()


def trained_ranking_ids(run_dir: str | Path, store_path: str | Path | None = None) -> set[int]:
    """Return the ids of the store rankings a reward-model run trained on (read from its data.json).

    A run trained on a pairs file, on another database, or a bare model folder without data.json trained on
    none of this store's rankings: every ranking is held out for it.
    """
    record_file = Path(run_dir) / "data.json"
    if not record_file.exists():
        return set()
    record = json.loads(record_file.read_text())
    source = record.get("source", "")
    if source.startswith("pairs:"):
        return set()  # its ids are row numbers of that file
    if source.startswith("duckdb:") and store_path is not None:
        if Path(source.removeprefix("duckdb:")).resolve() != Path(store_path).resolve():
            return set()
    return set(record.get("train_ranking_ids", []))


def data_summary(run_dir: str | Path) -> str:
    """Return what a reward-model run learned from, as its data.json says (e.g. 'store: 24 train / 8 held-out
    rankings'), or "" without one."""
    record_file = Path(run_dir) / "data.json"
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return ""
    source = record.get("source", "")
    kind, _, where = source.partition(":")
    origin = {"duckdb": "store", "rankings": "store rankings", "pairs": f"pairs file {where}"}.get(kind, kind)
    train, held = len(record.get("train_ranking_ids", [])), len(record.get("validation_ranking_ids", []))
    return f"{origin}: {train} train / {held} held-out rankings"


def held_out(rankings: list[Ranking], trained_ids: set[int]) -> list[Ranking]:
    """Return the rankings the reward model did not train on that have at least one untied pair."""
    return [r for r in rankings if r.ranking_id not in trained_ids and r.num_comparisons > 0]


def check_ranking(ranking: Ranking, rewards: torch.Tensor) -> RankingCheck:
    """Return how many of the ranking's untied pairs the rewards order as people did, and the worst miss."""
    better, worse = comparison_pairs(torch.tensor(ranking.tie_groups))
    gap = rewards[better] - rewards[worse]  # > 0: the model agrees with people on this pair
    agreed = int((gap > 0).sum())
    worst_better = worst_worse = ""
    if agreed < len(gap):
        worst = int(gap.argmin())
        worst_better, worst_worse = ranking.responses[better[worst]], ranking.responses[worse[worst]]
    return RankingCheck(ranking.ranking_id, ranking.prompt, agreed, len(gap), worst_better, worst_worse)


def check_reward_model(
    scorer, rankings: list[Ranking], trained_ids: set[int] = frozenset(), progress=None
) -> CheckResult:
    """Score every held-out ranking's responses with `scorer` (a RewardScorer) and compare with people.

    Accuracy counts untied pairs only; a reward tie counts as a miss (as in training accuracy). `progress`,
    if given, is called with the share done after each ranking.
    """
    candidates = held_out(rankings, trained_ids)
    checks, points = [], []
    for done, ranking in enumerate(candidates, start=1):
        rewards = scorer.score([ranking.prompt] * len(ranking.responses), ranking.responses)
        checks.append(check_ranking(ranking, rewards))
        for response, reward, group in zip(ranking.responses, rewards.tolist(), ranking.tie_groups, strict=True):
            length = len(scorer.tokenizer(response, add_special_tokens=False)["input_ids"])
            points.append({"ranking_id": ranking.ranking_id, "reward": reward, "length": length, "group": group})
        if progress:
            progress(done / len(candidates))
    checks.sort(key=lambda c: (c.accuracy, -c.pairs, c.ranking_id))
    skipped = sum(r.ranking_id in trained_ids for r in rankings)
    return CheckResult(checks, points, skipped)
