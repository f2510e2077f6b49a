"""Rollouts: left-padded chat prompts, completion masks that end at the EOS, log-probs that padding cannot touch."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.generation import completion_mask_from_ids
from policy.logprobs import logprobs_from_logits, position_ids_from_mask, token_logprobs
from policy.lora import LoraSettings, load_policy
from policy.rollout import collect_rollout, left_pad_prompts, score_responses

EOS = 2


def test_completion_mask_includes_the_first_eos_and_nothing_after():
    completions = torch.tensor([[5, 6, EOS, 0, 0], [5, EOS, 7, EOS, 9], [5, 6, 7, 8, 9]])
    mask, has_eos = completion_mask_from_ids(completions, {EOS})
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert has_eos.tolist() == [True, True, False]


def test_prompts_are_left_padded_with_the_chat_template(tokenizer):
    input_ids, attention_mask = left_pad_prompts(tokenizer, ["hi", "a much longer prompt than the other"], 512, "cpu")
    assert attention_mask[0, 0] == 0 and attention_mask[:, -1].all()
    assert input_ids[0, 0] == tokenizer.pad_token_id != tokenizer.eos_token_id
    assert "assistant" in tokenizer.decode(input_ids[0, -3:])  # ends with the generation prompt


def test_reward_output_is_checked():
    with pytest.raises(ValueError, match="shape"):
        score_responses(lambda prompts, responses: [1.0], ["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        score_responses(lambda prompts, responses: [1.0, float("nan")], ["p", "p"], ["a", "b"])


def test_token_logprobs_ignore_left_padding_ids_and_match_full_logits(tiny_model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    input_ids = torch.tensor([[0, 0, 11, 12, 13, 14, EOS, 0], [21, 22, 23, 24, 25, 26, 27, EOS]])
    attention_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    completion_mask = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
    logprobs, entropy = token_logprobs(model, input_ids, attention_mask, completion_mask, temperature=0.7)
    # Same numbers from logits over every column (token_logprobs skips the prompt's vocabulary projection).
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).logits
    full, full_entropy = logprobs_from_logits(logits, input_ids, completion_mask, 0.7)
    torch.testing.assert_close(logprobs, full)
    torch.testing.assert_close(entropy, full_entropy)
    assert (logprobs[completion_mask == 0] == 0).all() and (logprobs[completion_mask == 1] < 0).all()
    # Garbage in the pad columns (left pad and after the EOS) changes nothing on the completion.
    garbage = input_ids.clone()
    garbage[0, :2] = torch.tensor([777, 888])
    garbage[0, -1] = 999
    changed, _ = token_logprobs(model, garbage, attention_mask, completion_mask, temperature=0.7)
    torch.testing.assert_close(changed, logprobs)


def test_collect_rollout_shapes_masks_rewards_and_reference(stopping_model_dir, tokenizer):
    torch.manual_seed(0)
    policy, reference, _ = load_policy(
        str(stopping_model_dir), LoraSettings(rank=4), torch.device("cpu"), torch.float32
    )
    prompts = ["hi", "name a color"]
    rollout = collect_rollout(
        policy, tokenizer, prompts, lambda p, r: [float(len(x)) for x in r],
        responses_per_prompt=3, max_new_tokens=8, missing_eos_penalty=100.0,
    )  # fmt: skip
    assert rollout.input_ids.shape[0] == 6 and rollout.group_ids.tolist() == [0, 0, 0, 1, 1, 1]
    assert rollout.prompts == ["hi"] * 3 + ["name a color"] * 3
    completion = rollout.completion_mask[:, rollout.prompt_width :]
    for row in range(6):
        tokens = rollout.input_ids[row, rollout.prompt_width :][completion[row].bool()].tolist()
        if rollout.has_eos[row]:
            assert tokens[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in tokens[:-1]
        assert rollout.rewards[row] == len(rollout.texts[row]) - (0 if rollout.has_eos[row] else 100)
    assert (rollout.attention_mask[:, rollout.prompt_width :] == completion).all()
    # LoRA starts at B = 0, so the adapter-off reference equals the policy until training moves it.
    torch.testing.assert_close(rollout.old_logprobs, rollout.ref_logprobs)
    assert (rollout.old_logprobs[rollout.completion_mask == 1] < 0).all()


def test_checkpoint_keeps_the_base_generation_config(tiny_model_dir, tmp_path):
    """A second end-of-turn token in the base's generation config must survive the merged checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    from policy.lora import LoraSettings, load_policy, save_checkpoint

    policy, _, tokenizer = load_policy(str(tiny_model_dir), LoraSettings(rank=4), torch.device("cpu"), torch.float32)
    policy.get_base_model().generation_config.eos_token_id = [2, 7]
    save_checkpoint(policy, tokenizer, tmp_path / "run", {"step": 1})
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    assert merged.generation_config.eos_token_id == [2, 7]
