"""PPO/GRPO rollouts feed a conversation as the chat template over its history; Python reward functions get
strings, and the messages when they ask; prompts whose last turn cannot fit are refused by id before a run."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.chat import PromptTooLong, plain_layout
from orchestration.preflight import check_prompt_lengths
from policy.reward_mix import as_reward_mix
from policy.rollout import collect_rollout, prompt_rows

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a fruit."},
    {"role": "assistant", "content": "Apple."},
    {"role": "user", "content": "Another?"},
]


def test_a_rollout_feeds_the_chat_template_of_the_whole_history(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    seen = {}

    def reward(prompts, responses, messages):
        seen.update(prompts=prompts, messages=messages)
        return [0.0] * len(responses)

    torch.manual_seed(0)
    rollout = collect_rollout(
        model, tokenizer, [CONVERSATION, "Say hi."], as_reward_mix(reward), responses_per_prompt=2,
        max_new_tokens=4, max_prompt_tokens=256, need_old_logprobs=False, need_ref_logprobs=False,
    )  # fmt: skip
    expected = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=False)
    prompt_part = rollout.input_ids[:, : rollout.prompt_width]
    prompt_mask = rollout.attention_mask[:, : rollout.prompt_width]
    fed = [row[mask.bool()].tolist() for row, mask in zip(prompt_part, prompt_mask, strict=True)]
    assert fed[0] == fed[1] == expected
    assert fed[2] == tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}],
                                                   add_generation_prompt=True, return_dict=False)  # fmt: skip
    # The reward function: single-turn prompts as plain strings, a conversation as its transcript, and messages.
    assert seen["prompts"] == [plain_layout(CONVERSATION, generation_prompt=False)] * 2 + ["Say hi."] * 2
    assert seen["messages"][0] == CONVERSATION and seen["messages"][2] == [{"role": "user", "content": "Say hi."}]


def test_reward_functions_without_messages_get_strings_only():
    calls = []
    reward = as_reward_mix(lambda prompts, responses: calls.append(prompts) or [1.0] * len(responses))
    assert reward(["hi", CONVERSATION], ["a", "b"]).tolist() == [1.0, 1.0]
    assert calls == [["hi", plain_layout(CONVERSATION, generation_prompt=False)]]


def test_long_histories_lose_old_turns_and_an_unfitting_last_turn_is_refused_by_id(tokenizer):
    long_history = copy.deepcopy(CONVERSATION)
    long_history[1]["content"] = "Tell me about fruit. " * 50
    kept = tokenizer.apply_chat_template([CONVERSATION[0], CONVERSATION[3]], add_generation_prompt=True,
                                         return_dict=False)  # fmt: skip
    assert prompt_rows(tokenizer, [long_history], len(kept)) == [kept]
    huge_last = CONVERSATION[:3] + [{"role": "user", "content": "Why? " * 200}]
    problems = check_prompt_lengths(
        tokenizer, [[CONVERSATION[0], CONVERSATION[3]], long_history, huge_last], len(kept), prompt_ids=[4, 8, 15]
    )
    assert len(problems) == 1 and problems[0].startswith("prompt(s) 15: the last user turn alone")
    with pytest.raises(PromptTooLong):
        prompt_rows(tokenizer, [huge_last], len(kept))
