"""Fused LoRA layers (the SFT and reward-model loops'): the same loss and gradients as peft's own forward, and peft's forward
wherever the layer is not the plain case (adapter disabled)."""

import pytest
import torch

from core import fused_lora as fused_lora_module
from core.fused_lora import fused_lora
from policy.lora import LoraSettings, load_policy
from policy.sft import batch_loss, collate_demonstrations, tokenize_demonstrations

ROWS = [
    {"prompt": "What is 2 plus 2?", "completion": "It is 4."},
    {"prompt": "Name a color, please, and say why you like it.", "completion": "Blue, like the sky."},
]


def loss_and_grads(policy, batch, fused: bool, autocast: bool = False):
    policy.zero_grad(set_to_none=True)
    with fused_lora(policy, enabled=fused), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = batch_loss(policy, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.requires_grad}
    return float(loss), grads


def test_fused_lora_matches_peft_in_value_and_gradient(tiny_model_dir, tokenizer):
    torch.manual_seed(0)
    policy, _, _ = load_policy(str(tiny_model_dir), LoraSettings(rank=4, alpha=8), torch.device("cpu"), torch.float32)
    for name, parameter in policy.named_parameters():  # peft starts B at zero: give every adapter a say
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    batch = collate_demonstrations(tokenize_demonstrations(tokenizer, ROWS, 64), tokenizer.pad_token_id)
    peft_loss, peft_grads = loss_and_grads(policy, batch, fused=False)
    fused_loss, fused_grads = loss_and_grads(policy, batch, fused=True)
    assert fused_loss == pytest.approx(peft_loss, abs=1e-6)
    assert peft_grads.keys() == fused_grads.keys() and peft_grads
    for name, grad in peft_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    with fused_lora(policy), policy.disable_adapter(), torch.no_grad():  # falls back to peft: the base model
        disabled = float(batch_loss(policy, batch))
    with policy.disable_adapter(), torch.no_grad():
        assert disabled == pytest.approx(float(batch_loss(policy, batch)), abs=1e-6)
    assert all("forward" not in vars(module) for module in policy.modules())  # restored after the block


def test_fused_lora_under_bf16_autocast_matches_peft_under_it(tiny_model_dir, tokenizer, monkeypatch):
    """Under autocast the fused layers run their products in bf16, as autocast runs peft's, and the float32
    adapters get float32 gradients."""
    torch.manual_seed(0)
    policy, _, _ = load_policy(str(tiny_model_dir), LoraSettings(rank=4, alpha=8), torch.device("cpu"), torch.float32)
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.02)
    batch = collate_demonstrations(tokenize_demonstrations(tokenizer, ROWS, 64), tokenizer.pad_token_id)
    peft_loss, peft_grads = loss_and_grads(policy, batch, fused=False, autocast=True)
    fused_calls = []
    original = fused_lora_module.LoraLinearFunction.apply
    monkeypatch.setattr(
        fused_lora_module.LoraLinearFunction, "apply", lambda *a: fused_calls.append(a[0].dtype) or original(*a)
    )
    fused_loss, fused_grads = loss_and_grads(policy, batch, fused=True, autocast=True)
    assert fused_calls and set(fused_calls) == {torch.bfloat16}  # every LoRA layer fused, its input in bf16
    assert fused_loss == pytest.approx(peft_loss, rel=1e-2)
    for name, grad in peft_grads.items():
        assert fused_grads[name].dtype == torch.float32
        torch.testing.assert_close(fused_grads[name], grad, rtol=0.05, atol=0.02 * float(grad.abs().max()), msg=name)
