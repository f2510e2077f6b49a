"""DeepSpeed ZeRO-3 through accelerate, two CPU processes, started the way a user starts them: `--accelerate-config`.

The same DPO run sharded over two processes (2 pairs each) and in one process (4 pairs) gives the same losses
and the same saved weights; each rank holds about half of the parameters; the saved folders load in plain
transformers and peft. GRPO runs sharded to the end too (its samples differ by rank, so its losses are not
compared), and a run resumed from its sharded checkpoint takes the uninterrupted run's
steps. Tolerance: 1e-4 on losses and weights (float32; the sharded gradient is an all-reduced mean).
"""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from core.runs import read_metrics
from tests.sharding import parameters_held_per_rank, studio


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    rows = [
        {"prompt": f"What is {n} plus {n}?", "chosen": f"It is {2 * n}.", "rejected": "I do not know, maybe five?"}
        for n in range(18)  # 2 prompts held out, 16 to train on: 4 steps of 4 pairs, or of 2 x 2 sharded
    ]
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_each_rank_holds_about_half_of_the_parameters(zero3_config, tiny_model_dir):
    ranks = parameters_held_per_rank(zero3_config, "policy", tiny_model_dir)
    assert sorted(rank["rank"] for rank in ranks) == [0, 1]
    for rank in ranks:
        assert rank["type"] == "DistributedType.DEEPSPEED"
        assert 0.45 <= rank["model"]["held"] / rank["model"]["total"] <= 0.55, rank


def test_dpo_sharded_over_two_processes_matches_one_process(zero3_config, tiny_model_dir, pairs_file, tmp_path):
    common = ["train-policy", "--algo", "dpo", "--model", str(tiny_model_dir), "--pairs-file", str(pairs_file),
              "--lora-rank", "4", "--device", "cpu", "--precision", "fp32", "--learning-rate", "1e-3", "--log-every",
              "1"]  # fmt: skip
    sharded = studio("--db", str(tmp_path / "a.duckdb"), *common, "--batch-prompts", "2",
                     "--output-dir", str(tmp_path / "zero3"), "--accelerate-config", str(zero3_config))  # fmt: skip
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    assert "accelerate launch --config_file" in sharded.stdout  # relaunched itself under the launcher
    single = studio("--db", str(tmp_path / "b.duckdb"), *common, "--batch-prompts", "4",
                    "--output-dir", str(tmp_path / "single"))  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    def losses(run):
        return [r["losses/policy_loss"] for r in read_metrics(tmp_path / run) if "losses/policy_loss" in r]

    assert len(losses("zero3")) == len(losses("single")) >= 3
    assert losses("zero3") == pytest.approx(losses("single"), abs=1e-4)
    assert losses("zero3")[-1] < losses("zero3")[0]  # it learned
    merged_sharded = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3" / "merged").state_dict()
    merged_single = AutoModelForCausalLM.from_pretrained(tmp_path / "single" / "merged").state_dict()
    assert not any(".base_layer" in key or "base_model.model" in key for key in merged_sharded)
    for name, weight in merged_single.items():
        torch.testing.assert_close(merged_sharded[name], weight, atol=1e-4, rtol=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = PeftModel.from_pretrained(base, tmp_path / "zero3" / "adapter").merge_and_unload().state_dict()
    for name, weight in merged_sharded.items():
        torch.testing.assert_close(adapter[name], weight, atol=1e-5, rtol=0)


def test_grpo_trains_sharded_saves_a_loadable_model_and_resumes_exactly(zero3_config, stopping_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hi", "name a color", "say something"]))

    def grpo(run: str, *args: str):
        common = [
            "--db", str(tmp_path / f"{run}.duckdb"), "train-policy", "--algo", "grpo", "--model",
            str(stopping_model_dir), "--batch-prompts", "1", "--num-generations", "2", "--max-new-tokens", "6",
            "--lora-rank", "4", "--device", "cpu", "--prompts-file", str(prompts), "--reward-kind", "function",
            "--reward-function", "policy.rewards:prefer_short", "--accelerate-config", str(zero3_config),
        ]  # fmt: skip
        result = studio(*common, *args)
        assert result.returncode == 0, result.stderr[-3000:]

    grpo("grpo", "--steps", "2", "--output-dir", str(tmp_path / "grpo"))
    assert [record["step"] for record in read_metrics(tmp_path / "grpo")] == [1, 2]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "grpo" / "merged")
    base = AutoModelForCausalLM.from_pretrained(stopping_model_dir).state_dict()
    assert any(not torch.equal(weight, base[name]) for name, weight in model.state_dict().items())  # full, trained
    output = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert output.shape == (1, 6)

    # Each process's optimizer part and random state were saved, so a resumed run takes the uninterrupted run's step.
    assert sorted(path.name for path in (tmp_path / "grpo" / "engine_state-2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]
    grpo("resumed", "--resume", str(tmp_path / "grpo"), "--steps", "3")
    assert sorted(path.name for path in (tmp_path / "grpo").glob("engine_state-*")) == ["engine_state-3"]
    grpo("straight", "--steps", "3", "--output-dir", str(tmp_path / "straight"))
    resumed, straight = read_metrics(tmp_path / "grpo"), read_metrics(tmp_path / "straight")
    assert [record["step"] for record in resumed] == [1, 2, 3]
    losses = [name for name in straight[-1] if name.startswith(("losses/", "objective/"))]
    assert losses and {name: resumed[-1][name] for name in losses} == pytest.approx(
        {name: straight[-1][name] for name in losses}, abs=1e-5
    )
    resumed_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "grpo" / "merged").state_dict()
    for name, weight in AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "merged").state_dict().items():
        torch.testing.assert_close(resumed_weights[name], weight, atol=1e-5, rtol=0)


def test_ppo_value_trunk_and_head_are_split_about_half_per_rank(zero3_config, tiny_model_dir, tmp_path):
    ranks = parameters_held_per_rank(zero3_config, "ppo", tiny_model_dir, str(tmp_path / "ppo"))
    assert sorted(rank["rank"] for rank in ranks) == [0, 1]
    for rank in ranks:
        for part in ("value_trunk", "value_head"):
            assert 0.45 <= rank[part]["held"] / rank[part]["total"] <= 0.55, (part, rank)


def test_a_full_fine_tuning_reference_is_split_about_half_per_rank_and_trains(zero3_config, tiny_model_dir, tmp_path):
    ranks = parameters_held_per_rank(zero3_config, "full-grpo", tiny_model_dir, str(tmp_path / "grpo"))
    assert sorted(rank["rank"] for rank in ranks) == [0, 1]
    for rank in ranks:
        assert rank["reference"]["total"] == rank["policy"]["total"] > 0  # a whole frozen copy, not the adapter
        for part in ("policy", "reference"):
            assert 0.45 <= rank[part]["held"] / rank[part]["total"] <= 0.55, (part, rank)
        # A step ran on the split models: sampling in lockstep, the reference's KL, the update.
        assert rank["step"]["objective/kl"] >= 0 and rank["step"]["losses/grad_norm"] >= 0, rank["step"]


def test_ppo_trains_sharded_saves_whole_and_resumes_exactly(zero3_config, stopping_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hi", "name a color", "say something"]))

    def ppo(run: str, *args: str):
        common = [
            "--db", str(tmp_path / f"{run}.duckdb"), "train-policy", "--algo", "ppo", "--model",
            str(stopping_model_dir), "--batch-prompts", "2", "--max-new-tokens", "6", "--lora-rank", "4",
            "--value-model", "separate", "--device", "cpu", "--prompts-file", str(prompts), "--reward-kind",
            "function", "--reward-function", "policy.rewards:prefer_short", "--accelerate-config", str(zero3_config),
        ]  # fmt: skip
        result = studio(*common, *args)
        assert result.returncode == 0, result.stderr[-3000:]

    ppo("ppo", "--steps", "2", "--output-dir", str(tmp_path / "ppo"))
    state = torch.load(tmp_path / "ppo" / "trainer_state.pt", weights_only=False)
    whole = AutoModelForCausalLM.from_pretrained(stopping_model_dir).state_dict()
    value = state["value_model"]
    assert value["value_head.linear.weight"].shape == (1, 64)  # saved whole, not a rank's shard
    trunk = {name.removeprefix("value_trunk.base_model.model."): tensor for name, tensor in value.items()}
    assert trunk["model.embed_tokens.weight"].shape == whole["model.embed_tokens.weight"].shape

    ppo("resumed", "--resume", str(tmp_path / "ppo"), "--steps", "3")
    ppo("straight", "--steps", "3", "--output-dir", str(tmp_path / "straight"))
    resumed, straight = read_metrics(tmp_path / "ppo"), read_metrics(tmp_path / "straight")
    assert [record["step"] for record in resumed] == [1, 2, 3]
    compared = [name for name in straight[-1] if name.startswith(("losses/", "objective/"))]
    assert compared and {name: resumed[-1][name] for name in compared} == pytest.approx(
        {name: straight[-1][name] for name in compared}, abs=1e-5
    )
    resumed_weights = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo" / "merged").state_dict()
    for name, weight in AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "merged").state_dict().items():
        torch.testing.assert_close(resumed_weights[name], weight, atol=1e-5, rtol=0)
