"""Inputs longer than the limit: each trainer cuts them by one rule (an answer loses its end, a conversation its
oldest whole turns), says once how many it cut, and records the count in the run's metrics."""

from core.runs import read_metrics
from policy.config import DPOConfig, GRPOConfig, SFTConfig
from policy.dpo import train_dpo
from policy.grpo import train_grpo
from policy.sft import train_sft
from rm.config import RewardConfig
from rm.data import Ranking
from rm.train import train_reward_model

LONG = "word " * 80  # about 80 tokens: over a 48-token limit with any prompt
SHORT = "Yes."
HISTORY = [
    {"role": "user", "content": "Tell me a long story. " + "Once upon a time " * 10},
    {"role": "assistant", "content": "There was a king. " * 10},
    {"role": "user", "content": "Shorter, please."},
]
COMMON = {"device": "cpu", "lora_rank": 4}


def data_record(run_dir) -> dict:
    [record] = [record for record in read_metrics(run_dir) if "data/cut_to_max_length" in record]
    return record


def test_reward_model_counts_the_rankings_it_cut(tiny_model_dir, tmp_path, capsys):
    rankings = [Ranking(i, i, f"Question {i}?", [LONG if i < 3 else SHORT, "No."], [0, 1]) for i in range(10)]
    config = RewardConfig(backbone=str(tiny_model_dir), max_length=48, epochs=1, output_dir=str(tmp_path / "rm"),
                          **COMMON)  # fmt: skip
    train_reward_model(config, rankings=rankings)
    record = data_record(tmp_path / "rm")
    assert (record["data/cut_to_max_length"], record["data/examples"], record["data/max_length"]) == (3, 10, 48)
    assert "3 of 10 rankings cut to 48 tokens" in capsys.readouterr().out


def test_dpo_and_sft_count_the_pairs_and_answers_they_cut(tiny_model_dir, tmp_path, capsys):
    pairs = [{"prompt": HISTORY if i == 0 else [{"role": "user", "content": f"Question {i}?"}], "chosen": LONG if i in (1, 2) else SHORT,
              "rejected": "No."} for i in range(6)]  # fmt: skip
    train_dpo(DPOConfig(model=str(tiny_model_dir), max_length=48, output_dir=str(tmp_path / "dpo"), **COMMON),
              pairs=pairs)  # fmt: skip
    assert data_record(tmp_path / "dpo")["data/cut_to_max_length"] == 3  # two long answers, one long history
    demonstrations = [{"prompt": pair["prompt"], "completion": pair["chosen"]} for pair in pairs]
    train_sft(SFTConfig(model=str(tiny_model_dir), max_length=48, output_dir=str(tmp_path / "sft"), **COMMON),
              demonstrations=demonstrations)  # fmt: skip
    assert data_record(tmp_path / "sft")["data/cut_to_max_length"] == 3
    out = capsys.readouterr().out
    assert "3 of 6 pairs cut to 48 tokens" in out and "3 of 6 demonstrations cut to 48 tokens" in out


def test_grpo_counts_the_prompts_whose_history_it_cut(tiny_model_dir, tmp_path, capsys):
    config = GRPOConfig(model=str(tiny_model_dir), max_prompt_tokens=64, steps=1, batch_prompts=2, max_new_tokens=4,
                        reward_kind="function", reward_function="tests.policy.reward_fixtures:two_arguments",
                        output_dir=str(tmp_path / "grpo"), **COMMON)  # fmt: skip
    train_grpo(config, prompts=[HISTORY, "Hi?", "Hello?"])
    record = data_record(tmp_path / "grpo")
    assert (record["data/cut_to_max_length"], record["data/examples"]) == (1, 3)
    assert "1 of 3 prompts cut to 64 tokens" in capsys.readouterr().out
