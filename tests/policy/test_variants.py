"""Short runs of the options the e2e tests leave out: reference passes, mu > 1, separate value model, reward models."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

from core.runs import read_metrics
from data.prompts import add_prompts
from data.registry import record_model
from orchestration.cli import build_parser
from orchestration.train_policy_command import build_config
from policy.config import GRPOConfig, PPOConfig
from policy.grpo import train_grpo
from policy.ppo import train_ppo
from rm.score import RewardScorer
from tests.core.test_runs import assert_same_scalars

from .conftest import PROMPTS

TWO_STEPS = {"max_new_tokens": 8, "learning_rate": 1e-2, "device": "cpu", "steps": 2, "batch_prompts": 2}
SHORT_REWARD = {"reward_kind": "function", "reward_function": "policy.rewards:prefer_short"}


def test_grpo_full_finetuning_with_kl_and_two_inner_iterations(tmp_path, stopping_model_dir):
    config = GRPOConfig(
        model=str(stopping_model_dir), output_dir=str(tmp_path / "run"), lora_rank=0, beta=0.04, num_iterations=2,
        num_generations=3, loss_type="grpo", scale_rewards="none", **TWO_STEPS, **SHORT_REWARD,
    )  # fmt: skip
    run_dir = train_grpo(config, prompts=PROMPTS)
    first, second = read_metrics(run_dir)
    # KL is logged from the last inner pass, which follows one update: the frozen copy no longer equals the policy.
    assert 0 < first["objective/kl"] and 0 < second["objective/kl"]
    assert first["losses/clipfrac"] >= 0 and second["objective/reward_mean"] is not None
    assert not (run_dir / "adapter").exists() and (run_dir / "merged" / "model.safetensors").exists()


def test_ppo_separate_value_model_and_adaptive_kl(tmp_path, stopping_model_dir):
    config = PPOConfig(
        model=str(stopping_model_dir), output_dir=str(tmp_path / "run"), lora_rank=4, value_model="separate",
        adaptive_kl=True, target_kl=0.01, kl_horizon=10, num_minibatches=2, ppo_epochs=1, **TWO_STEPS, **SHORT_REWARD,
    )  # fmt: skip
    run_dir = train_ppo(config, prompts=PROMPTS)
    first, second = read_metrics(run_dir)
    assert first["charts/kl_coef"] == 0.05
    assert second["charts/kl_coef"] != 0.05  # the controller moved beta
    state = torch.load(run_dir / "trainer_state.pt", weights_only=False)
    assert any(name.startswith("value_trunk.") for name in state["value_model"])


@pytest.fixture
def reward_model_dir(tmp_path, tokenizer):
    """A tiny one-output sequence-classification model: what RewardScorer.from_run accepts besides an rm run."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, num_labels=1, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / "tiny-rm"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_grpo_with_a_reward_model_named_in_the_registry_and_prompts_from_duckdb(
    tmp_path, store, stopping_model_dir, reward_model_dir
):
    record_model(store, "reward", "tiny-rm", str(reward_model_dir))
    add_prompts(store, PROMPTS, source="test")
    config = GRPOConfig(
        model=str(stopping_model_dir), output_dir=str(tmp_path / "run"), reward_model="tiny-rm", num_generations=2,
        report_to="tensorboard", **TWO_STEPS,
    )  # fmt: skip
    run_dir = train_grpo(config, store=store, load_reward_model=RewardScorer.from_run)
    assert len(read_metrics(run_dir)) == 2
    assert_same_scalars(run_dir)  # --report-to tensorboard: the event files hold what metrics.jsonl holds
    assert json.loads((run_dir / "checkpoint.json").read_text())["prompts"] == "duckdb"
    policy = next(model for model in store.query("SELECT name, parent_id FROM models") if model[0] == "run")
    assert policy[1] == 1  # lineage: the reward model's registry id


def test_unknown_reward_model_fails_before_anything_is_written(tmp_path, store, stopping_model_dir):
    config = GRPOConfig(model=str(stopping_model_dir), output_dir=str(tmp_path / "run"), reward_model="nope")
    with pytest.raises(ValueError, match="neither a run folder nor a recorded"):
        train_grpo(config, prompts=PROMPTS, store=store, load_reward_model=RewardScorer.from_run)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="needs a loader"):  # policy/ does not import rm/: the caller passes it
        train_grpo(config, prompts=PROMPTS, store=store)


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"loss_type": "bnpo"}, "loss_type"),
        ({"scale_rewards": "max"}, "scale_rewards"),
        ({"num_generations": 1}, "num_generations"),
        ({"beta": -1.0}, "beta"),
        ({"temperature": 0.0}, "temperature"),
        ({"reward_kind": "magic"}, "reward_kind"),
        ({"reward_function": "no_colon"}, "reward_function"),
    ],
)
def test_grpo_config_rejects_bad_values(values, problem):
    with pytest.raises(ValueError, match=problem):
        GRPOConfig(**values)


def test_ppo_config_rejects_uneven_minibatches_and_unknown_value_model():
    with pytest.raises(ValueError, match="divisible"):
        PPOConfig(batch_prompts=6, num_minibatches=4)
    with pytest.raises(ValueError, match="value_model"):
        PPOConfig(value_model="twin")


def test_cli_builds_the_algorithms_config_and_refuses_foreign_flags():
    parser = build_parser()
    args = parser.parse_args(["train-policy", "--algo", "ppo", "--kl-coef", "0.1", "--lr", "3e-4", "--adaptive-kl"])
    config = build_config(args)
    assert isinstance(config, PPOConfig) and config.kl_coef == 0.1 and config.learning_rate == 3e-4
    assert config.adaptive_kl is True
    args = parser.parse_args(["train-policy", "--algo", "grpo", "--kl-coef", "0.1"])
    with pytest.raises(ValueError, match="--kl-coef do not apply to --algo grpo"):
        build_config(args)
    with pytest.raises(ValueError, match="choose an algorithm"):
        build_config(parser.parse_args(["train-policy"]))
