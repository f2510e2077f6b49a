"""Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath): no value model, the group is the baseline.

Each prompt gets G sampled responses; a response's advantage is its reward relative to its group's, broadcast to
every one of its tokens. Variants: DAPO token averaging and clip-higher (Yu et al. 2025), Dr. GRPO's
unscaled advantages and constant normaliser (Liu et al. 2025).
"""

from pathlib import Path

import torch

from core.memory import ModelShape, training_pass
from core.models import DeviceChoice
from core.runs import MetricWindow, is_log_step
from policy.config import GRPOConfig
from policy.logprobs import token_logprobs
from policy.reward_mix import reward_metrics
from policy.rollout import collect_rollout, lockstep_sharing
from policy.runner import (
    RunContext,
    failure_marked,
    finish_run,
    make_optimizer,
    prepare_training,
    progress_bar,
    prompt_batch,
    run_memory,
    save_run,
    start_policy_gradient_run,
)

# What the Jobs page plots for a GRPO run (names as written to metrics.jsonl), beside each reward component's mean.
PLOTTED_METRICS = ("objective/reward_mean", "objective/kl", "policy/entropy", "charts/response_length")
STD_EPS = 1e-4  # as TRL: keeps a group whose rewards all tie at advantage 0 instead of 0/0


# ---------------------------------------------------------------------------------------------------------------
# The math: advantages, the per-token objective, and one small function per loss averaging.


# Â_i = (r_i − mean(r_group)) / (std(r_group) + eps)
def grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str = "group") -> torch.Tensor:
    """Return one advantage per response; rows of a group are contiguous (group g holds rows g*G .. g*G+G-1)."""
    grouped = rewards.view(-1, num_generations)  # (num_prompts, G)
    centred = (grouped - grouped.mean(dim=1, keepdim=True)).view(-1)  # (B,)
    if scale_rewards == "group":
        return centred / (grouped.std(dim=1).repeat_interleave(num_generations) + STD_EPS)
    if scale_rewards == "batch":
        return centred / (rewards.std() + STD_EPS)
    if scale_rewards == "none":  # Dr. GRPO: the std division biases toward easy and hard prompts
        return centred
    raise ValueError(f"unknown scale_rewards {scale_rewards!r}; expected 'group', 'batch' or 'none'")


def tied_group_fraction(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Return the share of groups whose G rewards are all equal (0-dim): they carry no learning signal."""
    grouped = rewards.view(-1, num_generations)
    return (grouped == grouped[:, :1]).all(dim=1).float().mean()


# KL_t ≈ exp(ref − logp) − (ref − logp) − 1   (k3 estimator, Schulman 2020: unbiased and always >= 0)
def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1


# L_t = −min(ρ_t Â, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â) + β KL_t,   ρ_t = π(o_t) / π_old(o_t)
def grpo_token_loss(logprobs, old_logprobs, advantages, epsilon_low, epsilon_high, beta=0.0, ref_logprobs=None):
    """Return (per-token loss, ratio), both (B, T); advantages are (B,) and broadcast over tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    advantages = advantages.unsqueeze(1)  # (B, 1)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    if beta != 0.0:
        per_token = per_token + beta * k3_kl(logprobs, ref_logprobs)
    return per_token, ratio


def sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, **_) -> torch.Tensor:
    """'grpo': average each sequence over its own tokens, then over sequences (short answers weigh more per token)."""
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def token_mean(per_token: torch.Tensor, mask: torch.Tensor, token_count: torch.Tensor | None = None, **_):
    """'dapo': average over every valid token of the batch (`token_count`: the global count per process under DDP)."""
    count = mask.sum() if token_count is None else token_count
    return (per_token * mask).sum() / count.clamp(min=1.0)


def constant_mean(per_token: torch.Tensor, mask: torch.Tensor, max_completion_length: int = 1, **_) -> torch.Tensor:
    """'dr_grpo': divide by B x max_completion_length, a constant, so no length bias enters the gradient."""
    return (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)


LOSS_AVERAGING = {"grpo": sequence_mean, "dapo": token_mean, "dr_grpo": constant_mean}


def average_loss(loss_type: str, per_token: torch.Tensor, mask: torch.Tensor, **normalisers) -> torch.Tensor:
    if loss_type not in LOSS_AVERAGING:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {tuple(LOSS_AVERAGING)}")
    return LOSS_AVERAGING[loss_type](per_token, mask.to(per_token.dtype), **normalisers)


# ---------------------------------------------------------------------------------------------------------------
# The loop.


def memory_plan(
    config: GRPOConfig, shape: ModelShape, reward_shapes: list[ModelShape], length: int, device: DeviceChoice
):
    """Return (models kept, training passes) of a step: the policy (and reference), the reward models, and one pass
    over the G responses of each prompt, vocabulary logits over the responses' columns."""
    sequences, new = config.batch_prompts * config.num_generations, config.max_new_tokens
    # Without checkpointing (and out of lockstep) each prompt runs once for its G responses.
    shared = (
        0 if config.gradient_checkpointing else config.batch_prompts * (config.num_generations - 1) * (length - new)
    )
    models = run_memory(config, shape, reward_shapes, device)
    step = training_pass(shape, sequences, length, new + 1, device, config.gradient_checkpointing, shared,
                         weight_bytes=models[0].weight_bytes)  # fmt: skip
    return models, [step]


def train_grpo(
    config: GRPOConfig,
    reward=None,
    prompts: list[str] | None = None,
    store=None,
    resume: bool = False,
    load_reward_model=None,
) -> Path:
    """Train a policy with GRPO and return the run folder (checkpoint in merged/ and adapter/)."""
    ctx = start_policy_gradient_run(config, reward, prompts, store, resume, load_reward_model)
    optimizer = make_optimizer(ctx.policy, config.learning_rate, eps=1e-8)
    model, optimizer = prepare_training(ctx, ctx.policy, optimizer, config.batch_prompts * config.num_generations)
    record, window = {}, MetricWindow()
    with failure_marked(ctx):
        for step in progress_bar(ctx, "grpo"):
            window.add(grpo_step(ctx, model, optimizer, step))
            if is_log_step(step + 1, config.steps, config.log_every):
                record = ctx.writer.write(step + 1, window.read(ctx.sharding) | {"charts/kl_coef": config.beta})
            if config.save_every and (step + 1) % config.save_every == 0:
                save_run(ctx, step + 1, model, optimizer)
    objective = {key: value for key, value in record.items() if key.startswith(("objective/", "rewards/"))}
    return finish_run(ctx, store, model, objective, lambda: save_run(ctx, config.steps, model, optimizer))


def grpo_step(ctx: RunContext, model, optimizer, step: int) -> dict:
    """Sample G responses per prompt, compute group advantages, take num_iterations optimizer steps; return this
    process's metrics, left on the device (`MetricWindow` reads them)."""
    config, accelerator = ctx.config, ctx.accelerator
    batch = (step, config.batch_prompts, ctx.sharding.rank, ctx.sharding.world, config.seed)
    prompts, columns = prompt_batch(ctx.inputs, *batch), prompt_batch(ctx.prompt_columns, *batch)
    rollout = collect_rollout(
        ctx.policy,
        ctx.tokenizer,
        prompts,
        ctx.reward_fn,
        reference=ctx.reference,
        responses_per_prompt=config.num_generations,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        max_prompt_tokens=config.max_prompt_tokens,
        missing_eos_penalty=config.missing_eos_penalty,
        need_old_logprobs=config.num_iterations > 1,  # mu = 1: old = detached current, no extra pass
        need_ref_logprobs=config.beta != 0.0,  # beta = 0: no reference pass at all
        lockstep=ctx.sharding.lockstep,
        columns=columns,
    )
    advantages = grpo_advantages(rollout.rewards, config.num_generations, config.scale_rewards)
    mask = rollout.completion_mask.float()
    # DAPO normaliser: the global token count split over processes, so DDP's gradient mean is the global token mean.
    token_count = accelerator.reduce(mask.sum(), reduction="sum") / accelerator.num_processes
    model.train()
    sharing = lockstep_sharing(rollout.prompt_width, ctx.sharding.lockstep)
    for _ in range(config.num_iterations):
        logprobs, entropy = token_logprobs(
            model, rollout.input_ids, rollout.attention_mask, rollout.completion_mask, config.temperature, sharing
        )
        old_logprobs = rollout.old_logprobs if rollout.old_logprobs is not None else logprobs.detach()
        per_token, ratio = grpo_token_loss(
            logprobs,
            old_logprobs,
            advantages,
            config.epsilon_low,
            config.epsilon_high,
            config.beta,
            rollout.ref_logprobs,
        )
        loss = average_loss(
            config.loss_type, per_token, mask, token_count=token_count, max_completion_length=config.max_new_tokens
        )
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    return grpo_metrics(
        config, rollout, advantages, logprobs.detach(), entropy.detach(), ratio.detach(), loss, grad_norm
    )


def grpo_metrics(config, rollout, advantages, logprobs, entropy, ratio, loss, grad_norm) -> dict:
    """Return this process's metrics of a step as 0-dim tensors (no host read)."""
    mask = rollout.completion_mask.float()
    clipped = ((ratio < 1 - config.epsilon_low) | (ratio > 1 + config.epsilon_high)).float()
    metrics = {
        "objective/reward_mean": rollout.rewards.mean(),
        "objective/reward_std": rollout.rewards.std(),
        "objective/tied_group_frac": tied_group_fraction(rollout.rewards, config.num_generations),
        "policy/entropy": (entropy * mask).sum() / mask.sum().clamp(min=1),
        "policy/advantage_abs": advantages.abs().mean(),
        "losses/policy_loss": loss.detach(),
        "losses/clipfrac": (clipped * mask).sum() / mask.sum().clamp(min=1),
        "losses/grad_norm": torch.as_tensor(grad_norm).float(),
        "charts/response_length": rollout.response_lengths.float().mean(),
        "charts/eos_frac": rollout.has_eos.float().mean(),
        "charts/tokens": mask.sum(),
        **reward_metrics(rollout.reward_components),
    }
    if rollout.ref_logprobs is not None:
        metrics["objective/kl"] = (k3_kl(logprobs, rollout.ref_logprobs) * mask).sum() / mask.sum().clamp(min=1)
    return metrics
