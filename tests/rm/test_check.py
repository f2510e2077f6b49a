"""Reward-model check: agreement counted over untied pairs by hand, held-out ids from data.json, a tiny trained RM."""

import json
import math
from itertools import combinations

import pytest
import torch

from rm.check import CheckResult, check_ranking, check_reward_model, held_out, trained_ranking_ids
from rm.config import RewardConfig
from rm.data import Ranking, split_rankings
from rm.score import RewardScorer
from rm.synthetic import synthetic_rankings
from rm.train import train_reward_model


def test_agreement_counts_untied_pairs_and_names_the_worst_miss():
    ranking = Ranking(7, 7, "Q", ["best", "mid-1", "mid-2", "worst"], [0, 1, 1, 2])
    rewards = torch.tensor([3.0, 1.0, 2.0, 2.5])
    # untied pairs (better, worse) and gaps: (0,1) +2, (0,2) +1, (0,3) +0.5, (1,3) -1.5, (2,3) -0.5
    check = check_ranking(ranking, rewards)
    assert (check.agreed, check.pairs) == (3, 5)
    assert (check.worst_better, check.worst_worse) == ("mid-1", "worst")
    assert check.accuracy == pytest.approx(0.6)


def test_a_reward_tie_is_a_miss_and_a_perfect_ranking_names_nothing():
    ranking = Ranking(1, 1, "Q", ["a", "b"], [0, 1])
    assert check_ranking(ranking, torch.tensor([1.0, 1.0])).agreed == 0
    perfect = check_ranking(ranking, torch.tensor([2.0, 1.0]))
    assert (perfect.agreed, perfect.worst_better, perfect.worst_worse) == (1, "", "")


def write_record(folder, source: str, train_ids: list[int]):
    folder.mkdir(exist_ok=True)
    (folder / "data.json").write_text(json.dumps({"source": source, "train_ranking_ids": train_ids}))
    return folder


def test_trained_ids_come_from_data_json_of_the_same_database_only(tmp_path):
    db = tmp_path / "studio.duckdb"
    assert trained_ranking_ids(write_record(tmp_path / "a", f"duckdb:{db}", [1, 3]), db) == {1, 3}
    assert trained_ranking_ids(write_record(tmp_path / "b", f"duckdb:{tmp_path / 'other.duckdb'}", [1]), db) == set()
    assert trained_ranking_ids(write_record(tmp_path / "c", "pairs:hh.jsonl", [0, 1, 2]), db) == set()
    assert trained_ranking_ids(tmp_path / "bare-model", db) == set()
    rankings = [Ranking(i, i, "Q", ["a", "b"], groups) for i, groups in enumerate([[0, 1], [0, 1], [0, 0], [1, 0]])]
    assert [r.ranking_id for r in held_out(rankings, {1})] == [0, 3]  # 2 is all-tied: nothing to agree on


def test_empty_result_has_no_accuracy():
    result = CheckResult([], [], 4)
    assert math.isnan(result.accuracy) and math.isnan(result.length_correlation)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A tiny decoder RM trained (2 epochs) on synthetic rankings where more numbered steps rank higher."""
    rankings = synthetic_rankings(48, k=4, seed=1)
    config = RewardConfig(
        backbone=str(tiny_model_dir), epochs=2, lora_rank=0, learning_rate=1e-3, batch_size=8, max_length=96,
        validation_fraction=0.25, output_dir=str(tmp_path_factory.mktemp("rm") / "run"),
        precision="fp32",  # training's held-out accuracy is compared with the float32 scorer's, pair for pair
    )  # fmt: skip
    result = train_reward_model(config, rankings=rankings)
    return config, rankings, result


def test_check_scores_only_held_out_rankings_and_matches_a_pair_by_pair_count(trained):
    config, rankings, result = trained
    scorer = RewardScorer.from_run(result.run_dir, device="cpu")
    trained_ids = trained_ranking_ids(result.run_dir)
    _, validation = split_rankings(rankings, config.validation_fraction, config.seed)
    shares = []
    check = check_reward_model(scorer, rankings, trained_ids, progress=shares.append)

    assert sorted(c.ranking_id for c in check.rankings) == sorted(r.ranking_id for r in validation)
    assert check.skipped_trained == len(rankings) - len(validation)
    assert shares[-1] == 1.0 and len(shares) == len(validation)
    # Independent count: score each response, compare every pair of different human rank.
    agreed = total = 0
    for ranking in validation:
        rewards = scorer.score([ranking.prompt] * 4, ranking.responses).tolist()
        for i, j in combinations(range(4), 2):
            if ranking.tie_groups[i] != ranking.tie_groups[j]:
                better, worse = (i, j) if ranking.tie_groups[i] < ranking.tie_groups[j] else (j, i)
                agreed += rewards[better] > rewards[worse]
                total += 1
    assert (check.agreed, check.pairs) == (agreed, total) == (agreed, 6 * len(validation))
    assert check.accuracy == pytest.approx(result.metrics["val/accuracy"])  # training's own held-out accuracy
    assert check.accuracy >= 0.8  # it learned the rule
    accuracies = [c.accuracy for c in check.rankings]
    assert accuracies == sorted(accuracies)  # most wrong first
    assert len(check.points) == 4 * len(validation)
    assert all(p["length"] > 0 for p in check.points)
    assert -1 <= check.length_correlation <= 1
