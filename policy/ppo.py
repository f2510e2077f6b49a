"""PPO for language models (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022), CleanRL-style.

One response per prompt is an episode: each token is an action, the per-token reward is −β·KL(policy‖reference),
and the reward model's score arrives at the last real token (the EOS). A value head estimates the return;
GAE (policy/gae.py) turns rewards and values into advantages.
"""

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from core.memory import ModelShape, training_pass
from core.models import DeviceChoice, disable_dropout, enable_gradient_checkpointing
from core.runs import MetricWindow, is_log_step
from policy.config import PPOConfig
from policy.gae import gae, masked_mean, masked_whiten
from policy.logprobs import logprobs_from_logits, position_ids_from_mask
from policy.lora import LoraSettings, load_policy
from policy.reward_mix import reward_metrics
from policy.rollout import Rollout, collect_rollout
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

# ---------------------------------------------------------------------------------------------------------------
# Models: the policy plus a value head, on the policy's own trunk or on a separate copy.


# What the Jobs page plots for a PPO run (names as written to metrics.jsonl).
PLOTTED_METRICS = ("objective/reward_mean", "objective/kl", "policy/entropy", "charts/response_length")


class ValueHead(nn.Module):
    """A linear read-out of the last hidden state, initialised near zero so early returns are not distorted."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.linear.weight, std=1e-3)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)  # (B, T)


class PolicyAndValue(nn.Module):
    """One module for DDP: forward returns (logits, values) for a batch; `policy` alone generates."""

    def __init__(self, policy: nn.Module, value_trunk: nn.Module | None = None):
        super().__init__()
        self.policy = policy
        self.value_trunk = value_trunk  # None: the value head reads the policy's own hidden states
        self.value_head = ValueHead(policy.get_input_embeddings().embedding_dim)

    def forward(self, input_ids, attention_mask, logits_to_keep: int = 0):
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids_from_mask(attention_mask),
        }
        output = self.policy(**inputs, output_hidden_states=self.value_trunk is None, logits_to_keep=logits_to_keep)
        if self.value_trunk is None:
            hidden = output.hidden_states[-1]
        else:
            hidden = self.value_trunk(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        # The value of the action at column t is read from the state before it, column t − 1.
        values = self.value_head(hidden)  # (B, T)
        values = torch.cat([values.new_zeros(values.shape[0], 1), values[:, :-1]], dim=1)
        return output.logits, values


def logprobs_and_values(model, rollout: Rollout, temperature: float) -> tuple[torch.Tensor, ...]:
    """Return (log-probs, entropy, values), each (B, C): one column per response token."""
    width = rollout.prompt_width
    logits, values = model(
        rollout.input_ids, rollout.attention_mask, logits_to_keep=rollout.input_ids.shape[1] - width + 1
    )
    logprobs, entropy = logprobs_from_logits(
        logits, rollout.input_ids[:, width - 1 :], rollout.completion_mask[:, width - 1 :], temperature
    )
    return logprobs[:, 1:], entropy[:, 1:], values[:, width:]


# ---------------------------------------------------------------------------------------------------------------
# The math.


# r_t = −β (log π(o_t) − log π_ref(o_t)),  plus the score s at the last real token
def per_token_rewards(scores, logprobs, ref_logprobs, mask, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (rewards, kl), both (B, C); k1 KL per token, score added at each row's last valid token (its EOS)."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.long().cumsum(-1).argmax(-1)).clamp(min=0)  # index of the last 1 in each row
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


# L_pg = E[max(−Â ρ, −Â clip(ρ, 1 − ε, 1 + ε))],   ρ = π(o_t) / π_old(o_t)
def clipped_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, ratio)."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    return masked_mean(torch.max(pg_loss1, pg_loss2), mask), ratio


# L_v = ½ E[max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²)]
def clipped_value_loss(values, old_values, returns, mask, value_clip_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, fraction of tokens where the clipped term was the larger)."""
    values_clipped = old_values + torch.clamp(values - old_values, -value_clip_eps, value_clip_eps)
    vf_losses1 = (values - returns) ** 2
    vf_losses2 = (values_clipped - returns) ** 2
    return 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask), masked_mean(
        (vf_losses2 > vf_losses1).float(), mask
    )


class AdaptiveKLController:
    """β_{n+1} = β_n (1 + clip(KL / KL_target − 1, −0.2, 0.2) · n / horizon)   (Ziegler et al. 2019)."""

    def __init__(self, kl_coef: float, target_kl: float, horizon: int):
        self.value, self.target, self.horizon = kl_coef, target_kl, horizon

    def update(self, current_kl: float, num_samples: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * num_samples / self.horizon
        return self.value


class FixedKLController:
    """β stays as configured."""

    def __init__(self, kl_coef: float, *_):
        self.value = kl_coef

    def update(self, current_kl: float, num_samples: int) -> float:
        return self.value


# ---------------------------------------------------------------------------------------------------------------
# The loop.


def build_model(ctx: RunContext, config: PPOConfig) -> PolicyAndValue:
    if config.value_model == "shared":
        return PolicyAndValue(ctx.policy)
    if config.value_model == "separate":
        lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
        dtype = next(ctx.policy.parameters()).dtype
        with ctx.sharding.loading():
            value_trunk, _, _ = load_policy(config.model, lora, ctx.sharding.device, dtype)
        disable_dropout(value_trunk)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(value_trunk)
        return PolicyAndValue(ctx.policy, value_trunk)
    raise ValueError(f"unknown value_model {config.value_model!r}; expected 'shared' or 'separate'")


def memory_plan(
    config: PPOConfig, shape: ModelShape, reward_shapes: list[ModelShape], length: int, device: DeviceChoice
):
    """Return (models kept, training passes) of a step: the policy (and reference), the reward models, a separate
    value model as `build_model` loads it, and a minibatch's pass through the policy (and the value trunk)."""
    models = run_memory(config, shape, reward_shapes, device)
    rows, checkpointing = config.batch_prompts // config.num_minibatches, config.gradient_checkpointing
    weight_bytes = models[0].weight_bytes  # the policy's; a separate value model is loaded like it
    passes = [training_pass(shape, rows, length, config.max_new_tokens + 1, device, checkpointing,
                            weight_bytes=weight_bytes)]  # fmt: skip
    if config.value_model == "separate":
        models += [replace(model, role="value model") for model in models if model.role == "policy"]
        passes.append(training_pass(shape, rows, length, 0, device, checkpointing, weight_bytes=weight_bytes))
    return models, passes


def value_state(model: PolicyAndValue) -> dict:
    """Return the trainable value-side weights (the policy's own are saved as its checkpoint)."""
    return {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("policy.")}


def train_ppo(
    config: PPOConfig,
    reward=None,
    prompts: list[str] | None = None,
    store=None,
    resume: bool = False,
    load_reward_model=None,
) -> Path:
    """Train a policy with PPO and return the run folder (checkpoint in merged/ and adapter/)."""
    ctx = start_policy_gradient_run(config, reward, prompts, store, resume, load_reward_model)
    accelerator = ctx.accelerator
    combined = build_model(ctx, config).to(ctx.sharding.device)
    state = ctx.resumed_state
    if state:
        _, unexpected = combined.load_state_dict(state["value_model"], strict=False)  # policy weights come separately
        if unexpected:
            raise RuntimeError(f"resuming {ctx.run_dir}: saved value weights do not fit: {unexpected[:3]}")
    rows = config.batch_prompts // config.num_minibatches
    optimizer = make_optimizer(combined, config.learning_rate, eps=1e-5)
    model, optimizer = prepare_training(ctx, combined, optimizer, rows)
    controller_class = AdaptiveKLController if config.adaptive_kl else FixedKLController
    kl_controller = controller_class(state.get("kl_coef", config.kl_coef), config.target_kl, config.kl_horizon)
    ctx.policy = accelerator.unwrap_model(model).policy

    def trainer_state() -> dict:
        return {"value_model": value_state(combined), "kl_coef": kl_controller.value}

    record, window = {}, MetricWindow()
    with failure_marked(ctx):
        for step in progress_bar(ctx, "ppo"):
            kl_coef = kl_controller.value  # the step's β (an adaptive controller updates it after the step)
            window.add(ppo_step(ctx, model, optimizer, kl_controller, step))
            if is_log_step(step + 1, config.steps, config.log_every):
                record = ctx.writer.write(step + 1, window.read(ctx.sharding) | {"charts/kl_coef": kl_coef})
            if config.save_every and (step + 1) % config.save_every == 0:
                save_run(ctx, step + 1, model, optimizer, trainer_state)
    objective = {key: value for key, value in record.items() if key.startswith(("objective/", "rewards/"))}
    return finish_run(
        ctx, store, model, objective, lambda: save_run(ctx, config.steps, model, optimizer, trainer_state)
    )


def ppo_step(ctx: RunContext, model, optimizer, kl_controller, step: int) -> dict:
    """Collect one rollout batch, compute advantages, run ppo_epochs over minibatches; return metrics."""
    config, accelerator = ctx.config, ctx.accelerator
    batch = (step, config.batch_prompts, ctx.sharding.rank, ctx.sharding.world, config.seed)
    prompts, columns = prompt_batch(ctx.inputs, *batch), prompt_batch(ctx.prompt_columns, *batch)
    unwrapped = accelerator.unwrap_model(model)
    rollout = collect_rollout(
        unwrapped.policy,
        ctx.tokenizer,
        prompts,
        ctx.reward_fn,
        reference=ctx.reference,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        max_prompt_tokens=config.max_prompt_tokens,
        missing_eos_penalty=config.missing_eos_penalty,
        need_old_logprobs=False,  # computed below in the same pass as the values
        lockstep=ctx.sharding.lockstep,
        columns=columns,
    )
    width = rollout.prompt_width
    mask = rollout.completion_mask[:, width:].float()  # (B, C)
    with torch.no_grad():
        old_logprobs, _, old_values = logprobs_and_values(unwrapped, rollout, config.temperature)
        rewards, kl = per_token_rewards(
            rollout.rewards, old_logprobs, rollout.ref_logprobs[:, width:], mask, kl_controller.value
        )
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)
    batch = {
        "old_logprobs": old_logprobs,
        "old_values": old_values * mask,
        "advantages": advantages,
        "returns": returns,
    }
    stats = ppo_epochs(ctx, model, optimizer, rollout, batch)
    kl_coef = kl_controller.value
    if config.adaptive_kl:  # the controller needs the batch's KL on the host: a read every step
        mean_kl = accelerator.reduce(kl.sum(-1).mean(), reduction="mean").item()
        kl_controller.update(mean_kl, config.batch_prompts * accelerator.num_processes)
    return ppo_metrics(rollout, kl, kl_coef, stats, returns, old_values, mask)


def ppo_epochs(ctx: RunContext, model, optimizer, rollout: Rollout, batch: dict) -> dict:
    """Run ppo_epochs passes over shuffled minibatches; return losses and fractions averaged over every minibatch."""
    config, accelerator = ctx.config, ctx.accelerator
    width = rollout.prompt_width
    size = rollout.input_ids.shape[0] // config.num_minibatches
    stats: dict[str, list] = {}
    model.train()
    for _ in range(config.ppo_epochs):
        order = torch.randperm(rollout.input_ids.shape[0], device=rollout.input_ids.device)
        for start in range(0, len(order), size):
            index = order[start : start + size]
            minibatch = rollout.rows(index)
            mask = minibatch.completion_mask[:, width:].float()
            logprobs, entropy, values = logprobs_and_values(model, minibatch, config.temperature)
            pg_loss, ratio = clipped_policy_loss(
                logprobs, batch["old_logprobs"][index], batch["advantages"][index], mask, config.clip_eps
            )
            vf_loss, vf_clipfrac = clipped_value_loss(
                values, batch["old_values"][index], batch["returns"][index], mask, config.value_clip_eps
            )
            loss = pg_loss + config.vf_coef * vf_loss
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            log_ratio = logprobs.detach() - batch["old_logprobs"][index]
            for key, value in {
                "losses/policy_loss": pg_loss,
                "losses/value_loss": vf_loss,
                "losses/clipfrac": masked_mean(((ratio - 1).abs() > config.clip_eps).float(), mask),
                "losses/vf_clipfrac": vf_clipfrac,
                "losses/approx_kl": masked_mean(0.5 * log_ratio**2, mask),
                "losses/grad_norm": torch.as_tensor(grad_norm),
                "policy/entropy": masked_mean(entropy, mask),
            }.items():
                stats.setdefault(key, []).append(value.detach().float())
    return {key: torch.stack(values).mean() for key, values in stats.items()}


def ppo_metrics(rollout, kl, kl_coef, stats, returns, old_values, mask) -> dict:
    """Return this process's metrics of a step as 0-dim tensors (no host read; `MetricWindow` reads them)."""
    sequence_kl = kl.sum(-1)
    residual_variance = masked_mean((returns - old_values) ** 2, mask) - masked_mean(returns - old_values, mask) ** 2
    returns_variance = masked_mean(returns**2, mask) - masked_mean(returns, mask) ** 2
    return {
        "objective/reward_mean": rollout.rewards.mean(),
        "objective/reward_std": rollout.rewards.std() if len(rollout.rewards) > 1 else torch.tensor(0.0),
        "objective/kl": sequence_kl.mean(),
        "objective/rlhf_reward": (rollout.rewards - kl_coef * sequence_kl).mean(),
        "val/explained_variance": 1 - residual_variance / returns_variance.clamp(min=1e-8),
        "charts/response_length": rollout.response_lengths.float().mean(),
        "charts/eos_frac": rollout.has_eos.float().mean(),
        "charts/tokens": mask.sum(),
        **reward_metrics(rollout.reward_components),
        **stats,
    }
