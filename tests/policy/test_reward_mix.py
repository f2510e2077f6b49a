"""Weighted reward components: the sum, the columns as keywords, and errors that name the function, row and value."""

import math

import pytest
import torch

from policy.config import GRPOConfig
from policy.reward_mix import RewardComponent, RewardError, RewardMix, as_reward_mix, build_mix, reward_metrics
from policy.reward_specs import component_metric_names, format_rewards, parse_rewards
from policy.rewards import exact_answer, format_answer_line

from . import reward_fixtures

FIXTURES = "tests.policy.reward_fixtures"


def test_rewards_string_parses_sources_weights_and_names():
    specs = parse_rewards(
        "policy.rewards:exact_answer=1.0, policy.rewards:format_answer_line=0.5,model:runs/rm-1=2,x.y:exact_answer"
    )
    assert [(s.name, s.weight, s.kind) for s in specs] == [
        ("exact_answer", 1.0, "function"), ("format_answer_line", 0.5, "function"), ("rm-1", 2.0, "model"),
        ("exact_answer_2", 1.0, "function"),
    ]  # fmt: skip
    assert specs[2].target == "runs/rm-1"
    assert parse_rewards(format_rewards(specs)) == specs
    assert component_metric_names(specs[:1]) == ("rewards/exact_answer/mean",)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("a.b:f=heavy", "not a number"), ("nocolon=1", "package.module:function"), ("a.b:f,,c.d:g", "empty"),
     ("model:=1", "reward-model run"), ("a.b:f=nan", "finite")],
)  # fmt: skip
def test_a_malformed_rewards_string_is_refused_by_the_config(text, problem, tmp_path):
    with pytest.raises(ValueError, match=problem):
        GRPOConfig(rewards=text, output_dir=str(tmp_path / "run"))


def test_config_without_rewards_keeps_its_one_reward(tmp_path):
    config = GRPOConfig(reward_kind="function", reward_function="policy.rewards:prefer_short", output_dir=str(tmp_path))
    assert [(s.source, s.weight, s.name) for s in config.reward_specs()] == [
        ("policy.rewards:prefer_short", 1.0, "prefer_short")
    ]
    assert GRPOConfig(reward_model="runs/rm", output_dir=str(tmp_path)).reward_specs()[0].source == "model:runs/rm"


def test_the_total_is_the_weighted_sum_of_the_components():
    class Scorer:  # a reward model's shape: .score(prompts, responses) -> tensor
        def score(self, prompts, responses):
            return torch.tensor([0.25 * len(r) for r in responses])

    mix = RewardMix([
        RewardComponent("exact_answer", 1.0, "policy.rewards:exact_answer", exact_answer),
        RewardComponent("format_answer_line", 0.5, "policy.rewards:format_answer_line", format_answer_line),
        RewardComponent("rm", -2.0, "model:rm", Scorer()),
    ])  # fmt: skip
    responses = ["2 + 2 = 4\nAnswer: 4", "5", "Answer: 4"]
    total, parts = mix.score(["q"] * 3, responses, [{"answer": "4"}, {"answer": "4"}, {"answer": 4}])
    assert parts["exact_answer"].tolist() == [1.0, 0.0, 1.0]
    assert parts["format_answer_line"].tolist() == [1.0, 0.0, 0.0]
    expected = parts["exact_answer"] + 0.5 * parts["format_answer_line"] - 2.0 * parts["rm"]
    assert torch.allclose(total, expected)
    with pytest.raises(RewardError, match="exact_answer needs the column 'answer'.*none"):
        mix(["q"] * 3, responses)  # a mix is also a plain (prompts, responses) reward: no columns
    metrics = reward_metrics(parts)
    assert set(metrics) == {
        f"rewards/{n}/{s}" for n in ("exact_answer", "format_answer_line", "rm") for s in ("mean", "std")
    }
    assert math.isclose(metrics["rewards/exact_answer/mean"].item(), 2 / 3, rel_tol=1e-6)


def test_a_function_receives_its_prompts_columns_and_the_two_argument_form_still_works():
    reward_fixtures.CALLS.clear()
    mix = build_mix(parse_rewards(f"{FIXTURES}:echo_answer,{FIXTURES}:takes_everything,{FIXTURES}:two_arguments"),
                    None, None)  # fmt: skip
    prompts = ["what is 3+4?", [{"role": "user", "content": "and 5+5?"}]]  # text or messages
    total, parts = mix.score(prompts, ["7", "ten"], [{"answer": "7", "difficulty": 1}, {"answer": "10"}], [False, True])
    # Prompts arrive as text: a conversation as its plain transcript; its turns come as `messages` to who asks.
    assert reward_fixtures.CALLS[0] == {"prompts": ["what is 3+4?", "User: and 5+5?"], "answer": ["7", "10"]}
    assert reward_fixtures.CALLS[1] == {"keywords": ["answer", "difficulty", "messages", "truncated"]}
    assert parts["two_arguments"].tolist() == [1.0, 3.0]
    assert total.tolist() == [2.5, 4.5]


def test_a_failing_function_names_itself_the_row_and_the_error():
    mix = build_mix(parse_rewards(f"{FIXTURES}:fails_on_seven"), None, None)
    with pytest.raises(RewardError, match=r"fails_on_seven failed at row 1 .*'what is 3\+4\?'.*ZeroDivisionError"):
        mix.score(["what is 1+1?", "what is 3+4?"], ["2", "7"], [{"answer": "2"}, {"answer": "7"}])


def test_a_non_finite_value_names_the_function_the_row_and_the_value():
    mix = build_mix(parse_rewards(f"{FIXTURES}:nan_on_second"), None, None)
    with pytest.raises(RewardError, match=r"nan_on_second returned nan at row 1 \(prompt 'b', response 'y'\)"):
        mix.score(["a", "b", "c"], ["x", "y", "z"])
    wrong_count = as_reward_mix(lambda prompts, responses: [1.0])
    with pytest.raises(RewardError, match="returned 1 values for 2 responses"):
        wrong_count.score(["a", "b"], ["x", "y"])
    not_a_number = as_reward_mix(lambda prompts, responses: ["high", 1.0])
    with pytest.raises(RewardError, match="returned 'high' at row 0"):
        not_a_number.score(["a", "b"], ["x", "y"])


def test_a_column_the_prompts_lack_is_named():
    mix = build_mix(parse_rewards(f"{FIXTURES}:needs_solution"), None, None)
    with pytest.raises(RewardError, match=r"needs_solution needs the column 'solution'.*\['answer'\]"):
        mix.score(["a"], ["x"], [{"answer": "1"}])
