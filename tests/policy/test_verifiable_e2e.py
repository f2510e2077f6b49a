"""End to end on CPU: GRPO with an exact-answer reward read from the prompts' `answer` column, several weighted
components logged apart and recorded, and a failing or NaN-returning reward that stops the run marked failed."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.runs import read_metrics
from data.registry import list_models
from data.store import Store
from orchestration.follow import plotted_metrics
from policy.config import GRPOConfig
from policy.grpo import train_grpo
from policy.reward_mix import RewardError
from policy.rollout import left_pad_prompts

from .conftest import PROMPTS

TINY_RUN = {"max_new_tokens": 12, "learning_rate": 5e-3, "lora_rank": 8, "device": "cpu"}
MIX = "policy.rewards:exact_answer=1.0,policy.rewards:prefer_short=0.5"  # prefer_short: the two-argument form
FIXTURES = "tests.policy.reward_fixtures"


@pytest.fixture(scope="module")
def digits_model_dir(tmp_path_factory, tiny_model_dir, tokenizer):
    """A tiny model that answers with one number from 3 to 7 ("6") and stops: the answer is 7 about 1 time in 5, a
    reward GRPO can find in a few steps."""
    folder = tmp_path_factory.mktemp("tiny-digits-lm")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    digits = list(range(35, 40))  # "3".."7" in the SmolLM2 tokenizer
    assert tokenizer.decode(digits) == "34567"
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        prompt_ids, prompt_mask = left_pad_prompts(tokenizer, [PROMPTS[i % len(PROMPTS)] for i in range(8)], 64, "cpu")
        picks = torch.randint(0, 5, (8,), generator=generator).tolist()
        completions = torch.tensor([[digits[pick], tokenizer.eos_token_id] for pick in picks])
        completion_mask = torch.ones_like(completions)
        input_ids = torch.cat([prompt_ids, completions], dim=1)
        labels = torch.where(torch.cat([torch.zeros_like(prompt_mask), completion_mask], 1).bool(), input_ids, -100)
        logits = model(input_ids=input_ids, attention_mask=torch.cat([prompt_mask, completion_mask], 1),
                       logits_to_keep=3).logits  # fmt: skip
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, -3:][:, 1:].flatten(), ignore_index=-100
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def answers_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("answers") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "answer": "7", "difficulty": 1}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory, digits_model_dir, answers_file):
    folder = tmp_path_factory.mktemp("grpo-mix")
    store = Store(folder / "studio.duckdb")
    config = GRPOConfig(
        model=str(digits_model_dir), output_dir=str(folder / "grpo-answers"), prompts_file=str(answers_file),
        batch_prompts=2, num_generations=8, steps=20, rewards=MIX, **TINY_RUN,
    )  # fmt: skip
    run_dir = train_grpo(config, store=store)
    models = list_models(store, "policy")
    store.close()
    return run_dir, models


def test_grpo_raises_the_exact_answer_reward(mixed_run):
    exact = [record["rewards/exact_answer/mean"] for record in read_metrics(mixed_run[0])]
    assert len(exact) == 20
    first, last = sum(exact[:5]) / 5, sum(exact[-5:]) / 5
    assert last > first + 0.15, (first, last)


def test_each_component_is_logged_plotted_and_recorded(mixed_run):
    run_dir, models = mixed_run
    for record in read_metrics(run_dir):
        for name in ("exact_answer", "prefer_short"):
            assert f"rewards/{name}/mean" in record and f"rewards/{name}/std" in record
        weighted = record["rewards/exact_answer/mean"] + 0.5 * record["rewards/prefer_short/mean"]
        assert record["objective/reward_mean"] == pytest.approx(weighted, abs=1e-5)
    config = json.loads((run_dir / "config.json").read_text())
    assert {"rewards/exact_answer/mean", "rewards/prefer_short/mean"} <= set(plotted_metrics("train-policy", config))
    (record,) = models
    assert record["config"]["reward_components"] == [
        {"name": "exact_answer", "weight": 1.0, "source": "policy.rewards:exact_answer"},
        {"name": "prefer_short", "weight": 0.5, "source": "policy.rewards:prefer_short"},
    ]
    assert "rewards/exact_answer/mean" in record["metrics"]
    lineage = json.loads((run_dir / "checkpoint.json").read_text())
    assert lineage["rewards"] == record["config"]["reward_components"]


@pytest.mark.parametrize(
    ("function", "message"),
    [("nan_on_second", r"nan_on_second returned nan at row 1 \(prompt '.+', response '.*'\)"),
     ("fails_on_seven", r"fails_on_seven failed at row 0 \(prompt .+\): ZeroDivisionError")],
)  # fmt: skip
def test_a_bad_reward_stops_the_run_with_a_clear_error_and_marks_it_failed(
    function, message, tmp_path, digits_model_dir, answers_file
):
    store = Store(tmp_path / "studio.duckdb")
    run_dir = tmp_path / "grpo-bad"
    config = GRPOConfig(
        model=str(digits_model_dir), output_dir=str(run_dir), prompts_file=str(answers_file), batch_prompts=2,
        num_generations=2, steps=3, rewards=f"policy.rewards:exact_answer=1,{FIXTURES}:{function}=0.5", **TINY_RUN,
    )  # fmt: skip
    with pytest.raises(RewardError, match=message):
        train_grpo(config, store=store)
    failed = json.loads((run_dir / "failed.json").read_text())
    assert failed["status"] == "failed" and function in failed["error"]
    assert not (run_dir / "trainer_state.pt").exists() and not (run_dir / "merged").exists()
    assert list_models(store, "policy") == []
    with pytest.raises(ValueError, match="already holds a run"):  # the folder is not taken for a new run
        train_grpo(config, store=store)
    store.close()
