"""Shared-prompt log-probs: running each distinct prompt once gives the same values and gradients as full passes."""

import torch
from transformers import AutoModelForCausalLM

from policy.logprobs import logprobs_from_logits, position_ids_from_mask, token_logprobs
from tests.conftest import tiny_llama_config


def grouped_batch(pad_id: int = 0):
    """Two prompts (one left-padded) with three responses each of different lengths, GRPO's row layout."""
    prompts = [([pad_id, pad_id, 11, 12, 13, 14], [0, 0, 1, 1, 1, 1]), ([21, 22, 23, 24, 25, 26], [1] * 6)]
    rows, masks, completion_masks = [], [], []
    for prompt, prompt_mask in prompts:
        for n, length in enumerate((4, 3, 5)):
            completion = [100 + n, 101, 102 + n, 103, 2][:length]
            pad = 5 - length
            rows.append(prompt + completion + [pad_id] * pad)
            masks.append(prompt_mask + [1] * length + [0] * pad)
            completion_masks.append([0] * 6 + [1] * length + [0] * pad)
    return torch.tensor(rows), torch.tensor(masks), torch.tensor(completion_masks)


def full_pass(model, input_ids, attention_mask, completion_mask, temperature):
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).logits
    return logprobs_from_logits(logits, input_ids, completion_mask, temperature)


def test_shared_prompts_match_full_passes_in_value_and_gradient(tokenizer):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_llama_config(tokenizer))
    input_ids, attention_mask, completion_mask = grouped_batch()

    shared, shared_entropy = token_logprobs(model, input_ids, attention_mask, completion_mask, temperature=0.7)
    shared.sum().backward()
    shared_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    full, full_entropy = full_pass(model, input_ids, attention_mask, completion_mask, 0.7)
    full.sum().backward()

    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_entropy, full_entropy, atol=1e-4, rtol=1e-5)
    for shared_grad, param in zip(shared_grads, model.parameters(), strict=True):
        torch.testing.assert_close(shared_grad, param.grad, atol=1e-4, rtol=1e-3)
    assert (shared[completion_mask == 0] == 0).all()


def test_generation_from_a_shared_prompt_cache_matches_plain_generation(tiny_model_dir, tokenizer):
    from core.generation import shared_prompt_cache
    from policy.rollout import left_pad_prompts

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = ["Say something short.", "A much longer prompt, to force left padding of the other."]
    prompt_ids, prompt_mask = left_pad_prompts(tokenizer, [p for p in prompts for _ in range(3)], 64, "cpu")
    settings = dict(do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        plain = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **settings)
        cache = shared_prompt_cache(model, prompt_ids, prompt_mask)
        shared = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, cache=cache, **settings)
    assert cache is not None
    assert torch.equal(plain, shared)
    assert shared_prompt_cache(model, prompt_ids[::3], prompt_mask[::3]) is None  # no prompt repeats


def test_rollouts_ignore_the_models_own_sampling_filters(tiny_model_dir, tokenizer):
    """A model shipped with repetition_penalty/min_p must still sample from softmax(logits / T)."""
    from policy.rollout import generate

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    filtered = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    filtered.generation_config.repetition_penalty = 5.0
    filtered.generation_config.min_p = 0.5
    prompts = ["Count to three.", "Count to three.", "Name a fruit."]
    outputs = []
    for model in (plain, filtered):
        torch.manual_seed(0)
        outputs.append(generate(model, tokenizer, prompts, max_new_tokens=10, temperature=1.0, max_prompt_tokens=64))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert filtered.generation_config.repetition_penalty == 5.0  # restored afterwards
