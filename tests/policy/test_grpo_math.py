"""GRPO's advantages and loss against TRL's own code on identical log-probs, advantages and masks."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

from policy.grpo import average_loss, grpo_advantages, grpo_token_loss, k3_kl, tied_group_fraction

B, P, C = 6, 3, 5  # sequences, prompt width, completion width


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """TRL GRPOTrainer._generate_and_score_completions' group computation, copied (it is inline in a long method)."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1).repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_equal_trl(scale_rewards):
    rewards = torch.tensor([1.0, 0.0, 2.0, 5.0, 5.0, 5.0, -1.0, 3.0, 0.5])
    ours = grpo_advantages(rewards, 3, scale_rewards)
    torch.testing.assert_close(ours, trl_advantages(rewards, 3, scale_rewards))


def test_tied_groups_get_zero_advantage_and_are_counted():
    rewards = torch.tensor([1.0, 0.0, 2.0, 5.0, 5.0, 5.0])
    assert grpo_advantages(rewards, 3)[3:].abs().max() == 0
    assert tied_group_fraction(rewards, 3) == 0.5


def test_unknown_scaling_raises():
    with pytest.raises(ValueError, match="scale_rewards"):
        grpo_advantages(torch.zeros(4), 2, "median")
    with pytest.raises(ValueError, match="loss_type"):
        average_loss("bnpo2", torch.zeros(2, 2), torch.ones(2, 2))


def random_batch(seed: int = 0):
    """Completion log-probs (B, C) as leaves we can differentiate, a ragged mask, advantages."""
    generator = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(B, C, generator=generator) * 3).requires_grad_()
    old = (logps.detach() + 0.3 * torch.randn(B, C, generator=generator)).clamp(max=0)
    ref = (logps.detach() + 0.3 * torch.randn(B, C, generator=generator)).clamp(max=0)
    lengths = torch.tensor([5, 1, 3, 4, 2, 5])
    mask = (torch.arange(C).unsqueeze(0) < lengths.unsqueeze(1)).long()
    advantages = torch.randn(B, generator=generator)
    return logps, old, ref, mask, advantages


def trl_loss(logps, old, ref, mask, advantages, loss_type, beta, epsilon_low, epsilon_high):
    """Run TRL's real GRPOTrainer._compute_loss on a stand-in trainer that returns our log-probs."""
    trainer = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=epsilon_low,
        epsilon_high=epsilon_high,
        use_vllm=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=C,
        accelerator=Accelerator(cpu=True),
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list)},
    )
    inputs = {
        "prompt_ids": torch.zeros(B, P, dtype=torch.long),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.zeros(B, C, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    return GRPOTrainer._compute_loss(trainer, None, inputs)


def our_loss(logps, old, ref, mask, advantages, loss_type, beta, epsilon_low, epsilon_high):
    old = logps.detach() if old is None else old  # mu = 1, as in grpo_step
    per_token, _ = grpo_token_loss(logps, old, advantages, epsilon_low, epsilon_high, beta, ref)
    return average_loss(loss_type, per_token, mask, max_completion_length=C)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("mu_one", [False, True])
def test_loss_and_gradient_equal_trl(loss_type, beta, mu_one):
    settings = {"loss_type": loss_type, "beta": beta, "epsilon_low": 0.2, "epsilon_high": 0.28}
    logps, old, ref, mask, advantages = random_batch()
    old = None if mu_one else old
    expected = trl_loss(logps, old, ref, mask, advantages, **settings)
    (expected_grad,) = torch.autograd.grad(expected, logps)
    ours = our_loss(logps, old, ref, mask, advantages, **settings)
    (our_grad,) = torch.autograd.grad(ours, logps)
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(our_grad, expected_grad)
    assert our_grad.abs().sum() > 0


def test_k3_kl_is_zero_at_equality_and_positive_elsewhere():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    assert k3_kl(logps, logps).abs().max() == 0
    assert (k3_kl(logps, logps + torch.tensor([0.5, -0.5, 1.0])) > 0).all()


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_padding_and_after_eos_never_change_the_loss(loss_type):
    logps, old, ref, mask, advantages = random_batch(seed=1)
    settings = {"loss_type": loss_type, "beta": 0.1, "epsilon_low": 0.2, "epsilon_high": 0.2}
    before = our_loss(logps, old, ref, mask, advantages, **settings)
    off = mask == 0
    noise = torch.randn(B, C) * 5
    perturbed = [torch.where(off, tensor.detach() + noise, tensor.detach()) for tensor in (logps, old, ref)]
    after = our_loss(perturbed[0], perturbed[1], perturbed[2], mask, advantages, **settings)
    torch.testing.assert_close(after, before.detach())
