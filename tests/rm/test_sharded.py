"""The reward model under DeepSpeed ZeRO-3 over two CPU processes, started as a user starts it
(`train-rm --accelerate-config`): the same steps as one process, half the parameters per rank, a plain saved model.

Batches of 5 rankings over 2 processes split 3 + 2 (and a last batch of 1 leaves one process only a weight-0
stand-in), so the test also checks the per-process weights that make the sharded step the single-process step.
The last epoch overfits, so the kept epoch's weights must be restored in every process.
Tolerance: 1e-4 on losses and rewards (float32; the sharded gradient is an all-reduced mean).
"""

import json

import pytest
import torch

from core.runs import read_metrics
from rm.model import head_name
from rm.score import RewardScorer
from rm.synthetic import synthetic_rankings
from tests.sharding import parameters_held_per_rank, studio


def test_each_rank_holds_about_half_of_the_reward_model_head_included(zero3_config, tiny_model_dir):
    ranks = parameters_held_per_rank(zero3_config, "reward", tiny_model_dir)
    assert sorted(rank["rank"] for rank in ranks) == [0, 1]
    for rank in ranks:
        assert rank["type"] == "DistributedType.DEEPSPEED"
        assert 0.45 <= rank["model"]["held"] / rank["model"]["total"] <= 0.55, rank


@pytest.fixture(scope="module")
def rankings_file(tmp_path_factory):
    """20 rankings of K=4 (16 train, 4 held out) in the app's rankings export format: tie groups of texts."""
    rows = []
    for ranking in synthetic_rankings(20, k=4, seed=1, ties=True):
        groups = [[] for _ in range(max(ranking.tie_groups) + 1)]
        for response, group in zip(ranking.responses, ranking.tie_groups, strict=True):
            groups[group].append(response)
        rows.append({"ranking_id": ranking.ranking_id, "prompt_id": ranking.prompt_key, "prompt": ranking.prompt,
                     "ranked_responses": groups})  # fmt: skip
    path = tmp_path_factory.mktemp("rankings") / "rankings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_reward_model_sharded_over_two_processes_matches_one_process(
    zero3_config, tiny_model_dir, rankings_file, tmp_path
):
    common = ["train-rm", "--backbone", str(tiny_model_dir), "--rankings", str(rankings_file), "--lora-rank", "4",
              "--epochs", "3", "--batch-size", "5", "--learning-rate", "1e-2", "--warmup-ratio", "0.25",
              "--log-every", "1", "--device", "cpu", "--max-length", "96", "--precision", "fp32"]  # fmt: skip
    sharded = studio("--db", str(tmp_path / "a.duckdb"), *common, "--output-dir", str(tmp_path / "zero3"),
                     "--accelerate-config", str(zero3_config))  # fmt: skip
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "accelerate launch --config_file" in sharded.stdout  # relaunched itself under the launcher
    assert sharded.stdout.count("reward model run:") == 1  # the main process reports
    # Sharded with gradient checkpointing (the default), one process without: the same steps either way.
    single = studio("--db", str(tmp_path / "b.duckdb"), *common, "--output-dir", str(tmp_path / "single"),
                    "--no-gradient-checkpointing")  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    configs = [json.loads((tmp_path / run / "config.json").read_text()) for run in ("zero3", "single")]
    assert [config["gradient_checkpointing"] for config in configs] == [True, False]

    def records(run, event):
        return [record for record in read_metrics(tmp_path / run) if record["event"] == event]

    steps = [record["train/loss"] for record in records("single", "train")]
    assert len(steps) == 3 * 4  # 16 rankings in batches of 5, 5, 5, 1; three epochs
    assert [record["train/loss"] for record in records("zero3", "train")] == pytest.approx(steps, abs=1e-4)
    for name in ("val/loss", "val/accuracy", "train/loss", "train/accuracy", "val/reward_mean", "val/reward_std"):
        sharded_values = [record[name] for record in records("zero3", "epoch")]
        assert sharded_values == pytest.approx([record[name] for record in records("single", "epoch")], abs=1e-4)
    assert steps[-1] < steps[0]  # it learned
    # The held-out loss rose in the last epoch, so the second epoch's weights are the ones saved: restored from
    # what each process kept (under ZeRO-3, small weights stay whole on every process, beside the shards).
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("zero3", "single")]
    assert summaries[0]["epoch"] == summaries[1]["epoch"] == 2 and summaries[0]["epochs_run"] == 3

    zero3, one = RewardScorer.from_run(tmp_path / "zero3", "cpu"), RewardScorer.from_run(tmp_path / "single", "cpu")
    assert not any(".base_layer" in key or "base_model.model" in key for key in zero3.model.state_dict())
    prompts = ["What is 2 plus 2?", "Name three colors."]
    responses = ["1. Four\n2. It is four.", "Red."]
    torch.testing.assert_close(zero3.score(prompts, responses), one.score(prompts, responses), atol=1e-4, rtol=0)
    normalization = [json.loads((tmp_path / run / "normalization.json").read_text()) for run in ("zero3", "single")]
    assert normalization[0] == pytest.approx(normalization[1], abs=1e-4)
    assert head_name(zero3.model) == "score"
