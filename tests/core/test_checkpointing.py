"""Gradient checkpointing: the same loss and the same LoRA gradients as keeping the activations, for the policy
and the reward model, and never a silently frozen adapter."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from core.models import checkpointing, enable_gradient_checkpointing
from policy.logprobs import token_logprobs
from rm.model import load_backbone, sequence_rewards
from tests.policy.test_logprobs import grouped_batch


def lora_policy(tiny_model_dir):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    for name, parameter in model.named_parameters():  # B starts at zero: move it so every LoRA weight gets a gradient
        if "lora_B" in name:
            parameter.data.normal_(std=0.02)
    return model.train()


def lora_gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and "lora_" in name}


def policy_loss_and_gradients(model) -> tuple[torch.Tensor, dict]:
    input_ids, attention_mask, completion_mask = grouped_batch()  # GRPO's layout: three responses share a prompt
    model.zero_grad()
    logprobs, _ = token_logprobs(model, input_ids, attention_mask, completion_mask, temperature=0.7)
    loss = -(logprobs * torch.linspace(0.5, 1.5, logprobs.shape[0])[:, None]).sum()
    loss.backward()
    return loss.detach(), lora_gradients(model)


def test_policy_lora_gradients_are_the_same_with_checkpointing(tiny_model_dir):
    model = lora_policy(tiny_model_dir)
    loss, plain = policy_loss_and_gradients(model)
    assert not checkpointing(model)
    enable_gradient_checkpointing(model)
    assert checkpointing(model)
    checkpointed_loss, checkpointed = policy_loss_and_gradients(model)

    torch.testing.assert_close(checkpointed_loss, loss, atol=1e-5, rtol=0)
    assert plain.keys() == checkpointed.keys() and len(plain) == 2 * 7 * 2  # A and B of 7 linears in 2 layers
    for name, gradient in plain.items():
        assert gradient.abs().sum() > 0, name  # every adapter learns
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-5, rtol=0)


def test_reward_model_lora_gradients_are_the_same_with_checkpointing(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    model, _ = load_backbone(str(tiny_model_dir), lora_rank=4, lora_alpha=8)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(std=0.02)
    model.train()
    batch = tokenizer(["A short answer.", "A longer answer with more words in it."], padding=True, return_tensors="pt")

    def gradients():
        model.zero_grad()
        rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"])
        (rewards[0] - 2 * rewards[1]).backward()
        return rewards.detach(), lora_gradients(model)

    rewards, plain = gradients()
    enable_gradient_checkpointing(model)
    checkpointed_rewards, checkpointed = gradients()
    torch.testing.assert_close(checkpointed_rewards, rewards, atol=1e-5, rtol=0)
    assert len(plain) == 2 * 7 * 2
    for name, gradient in plain.items():
        assert gradient.abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-5, rtol=0)


def test_a_model_without_checkpointing_support_gets_a_clear_error():
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2))
