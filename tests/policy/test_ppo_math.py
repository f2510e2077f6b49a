"""PPO's pieces: GAE against a written-out loop, reward shaping, clipped losses, the KL controller, masking."""

import math

import pytest
import torch

from policy.gae import gae, masked_whiten
from policy.ppo import (
    AdaptiveKLController,
    PolicyAndValue,
    ValueHead,
    clipped_policy_loss,
    clipped_value_loss,
    per_token_rewards,
)


def reference_gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """GAE for one episode, token by token, as in the paper: the value after the last token is 0."""
    advantages = [0.0] * len(rewards)
    for t in range(len(rewards)):
        total = 0.0
        for k in range(t, len(rewards)):
            next_value = values[k + 1] if k + 1 < len(rewards) else 0.0
            delta = rewards[k] + gamma * next_value - values[k]
            total += (gamma * lam) ** (k - t) * delta
        advantages[t] = total
    return advantages


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_equals_written_out_sum(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    lengths = [6, 1, 3, 5]
    mask = (torch.arange(6).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).float()
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row, length in enumerate(lengths):
        expected = reference_gae(rewards[row, :length].tolist(), values[row, :length].tolist(), gamma, lam)
        assert advantages[row, :length].tolist() == pytest.approx(expected, abs=1e-5)
        assert returns[row, :length].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, values[row, :length].tolist(), strict=True)], abs=1e-5
        )
        assert advantages[row, length:].abs().sum() == 0 and returns[row, length:].abs().sum() == 0


def test_score_lands_on_the_last_real_token_and_kl_everywhere():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -9.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = per_token_rewards(torch.tensor([10.0, 20.0]), logprobs, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.0, -1.0], [1.0, 1.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.0, 10.1], [-0.1, 19.9, 0.0]]))


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 3)
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1
    advantages = torch.tensor([[1.0, -1.0, 2.0]])
    loss, ratio = clipped_policy_loss(logprobs, old, advantages, torch.ones(1, 3), clip_eps=0.2)
    # per token: max(-1*1.5, -1*1.2) = -1.2;  max(0.5, 0.8) = 0.8;  max(-2.2, -2.2) = -2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    torch.testing.assert_close(ratio, torch.tensor([[1.5, 0.5, 1.1]]))


def test_clipped_value_loss_by_hand():
    values, old, returns = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    loss, clipfrac = clipped_value_loss(values, old, returns, torch.ones(1, 2), value_clip_eps=0.2)
    # token 0: max((1-2)^2, (0.2-2)^2) = 3.24;  token 1: max(1, 1) = 1
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1) / 2, abs=1e-6)
    assert clipfrac.item() == 0.5


def test_adaptive_kl_controller_moves_toward_target():
    controller = AdaptiveKLController(0.1, target_kl=6.0, horizon=100)
    assert controller.update(current_kl=12.0, num_samples=10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller = AdaptiveKLController(0.1, target_kl=6.0, horizon=100)
    assert controller.update(current_kl=3.0, num_samples=10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))


def test_whitening_uses_valid_tokens_only():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    whitened = masked_whiten(values, mask)
    assert whitened[0, :3].tolist() == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)], abs=1e-4)
    assert whitened[0, 3] == 0


def test_padding_and_after_eos_never_change_ppo_losses():
    generator = torch.Generator().manual_seed(0)
    shape = (3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]).float()
    tensors = [torch.randn(shape, generator=generator) for _ in range(5)]

    def losses(logprobs, old, values, old_values, rewards):
        adv, returns = gae(rewards, old_values, mask)
        policy, _ = clipped_policy_loss(logprobs, old, masked_whiten(adv, mask), mask, 0.2)
        value, _ = clipped_value_loss(values, old_values, returns, mask, 0.2)
        return torch.stack([policy, value])

    before = losses(*tensors)
    noisy = [torch.where(mask.bool(), tensor, tensor + 7 * torch.randn(shape)) for tensor in tensors]
    torch.testing.assert_close(losses(*noisy), before)


def test_value_head_starts_near_zero_and_reads_the_state_before_each_token(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = PolicyAndValue(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    input_ids = torch.randint(3, 100, (2, 6))
    logits, values = model(input_ids, torch.ones_like(input_ids))
    assert values.shape == (2, 6) and logits.shape[:2] == (2, 6)
    assert values.abs().max() < 0.1
    assert values[:, 0].abs().sum() == 0  # no state precedes the first column
    changed = input_ids.clone()
    changed[:, 3] = 7  # a token only changes values of later actions (columns 4, 5)
    _, values_changed = model(changed, torch.ones_like(changed))
    torch.testing.assert_close(values_changed[:, :4], values[:, :4])
    assert isinstance(model.value_head, ValueHead)
