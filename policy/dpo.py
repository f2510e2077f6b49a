"""Direct Preference Optimization: the policy learns from chosen/rejected pairs, with no reward model and no sampling.

Rafailov et al. 2023. The reference log-probs are computed once over the pairs (no backward: large,
length-sorted batches) and cached before training, so each step runs the policy only, and a full-fine-tuning
reference copy is freed once the cache is built.

Two forward modes, picked by device (`forward_mode`), give the same log-probs: on a CPU each prompt runs
once and its key/value cache serves both the chosen and the rejected completion (least compute); on a GPU
chosen and rejected run in one padded pass over pairs of similar length (fewest kernel launches). A step never
reads a value back from the device; metrics stay there until the loop reads them every `log_every` steps.
"""

import gc
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from core.distributed import Sharding
from core.memory import ModelShape, training_pass
from core.models import DeviceChoice, disable_dropout
from core.runs import MetricsWriter, MetricWindow, is_log_step, report_cut
from core.splits import split_by_prompt
from policy.config import DPOConfig
from policy.pairs import (
    COLLATORS,
    PairLogps,
    batch_to,
    forward_mode,
    load_pairs,
    pair_logps,
    pairs_loader,
    prompt_of_pair,
    tokenize_pairs,
)
from policy.reference import ReferenceCache, cache_reference_logps
from policy.runner import finish_run, make_optimizer, run_memory, save_weights, start_run

# What the Jobs page plots for a DPO run (names as written to metrics.jsonl).
PLOTTED_METRICS = ("losses/policy_loss", "rewards/margins", "rewards/accuracies", "eval/accuracy")
EVAL_FRACTION = 0.1  # share of prompts held out for accuracy and margin; pairs of one prompt never straddle the split
MIN_PROMPTS_FOR_EVAL = 10  # fewer prompts than this: train on all of them and report no held-out numbers


# ---------------------------------------------------------------------------------------------------------------
# The objective: each variant is one function of the log-ratio difference h.


# L = −log σ(β·h),   h = [log π(y_w) − log ref(y_w)] − [log π(y_l) − log ref(y_l)]   (DPO, Rafailov et al. 2023)
def dpo_loss(h: torch.Tensor, beta: float) -> torch.Tensor:
    return -F.logsigmoid(beta * h)


# L = −(1−ε)·log σ(β·h) − ε·log σ(−β·h)   (conservative DPO: each label is assumed flipped with probability ε)
def conservative_dpo_loss(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


# L = (h̄ − 1/(2β))²,   h̄ = h computed from per-token averaged log-probs   (IPO, Azar et al. 2023, Eq. 17)
def ipo_loss(h_bar: torch.Tensor, beta: float) -> torch.Tensor:
    return (h_bar - 1 / (2 * beta)) ** 2


def pair_losses(
    policy: PairLogps, reference: PairLogps, loss_type: str, beta: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Return the per-pair loss of `loss_type` ('sigmoid', with label smoothing when ε > 0, or 'ipo')."""
    chosen_logratios = policy.chosen - reference.chosen  # log π(y_w) − log ref(y_w)
    rejected_logratios = policy.rejected - reference.rejected  # log π(y_l) − log ref(y_l)
    if loss_type == "ipo":
        chosen_average = chosen_logratios / policy.chosen_tokens.clamp(min=1)  # per-token averages
        rejected_average = rejected_logratios / policy.rejected_tokens.clamp(min=1)
        return ipo_loss(chosen_average - rejected_average, beta)
    if loss_type == "sigmoid":
        h = chosen_logratios - rejected_logratios
        return conservative_dpo_loss(h, beta, label_smoothing) if label_smoothing > 0 else dpo_loss(h, beta)
    raise ValueError(f"unknown DPO loss_type {loss_type!r}; expected 'sigmoid' or 'ipo'")


@torch.no_grad()
def evaluate_pairs(
    policy, ref_cache: ReferenceCache, pairs: list[dict], beta: float = 0.1, batch_size: int = 8, collate=None
) -> dict:
    """Return held-out preference accuracy (implicit reward of chosen > rejected) and mean reward margin β·h."""
    device = next(policy.parameters()).device
    collate = collate or COLLATORS[forward_mode("auto", device)]
    pad_token_id = policy.config.pad_token_id  # set apart from EOS by `ensure_pad_token` when the policy loaded
    was_training = policy.training
    policy.eval()
    correct, margin_sum = torch.zeros((), device=device), torch.zeros((), device=device)
    for start in range(0, len(pairs), batch_size):
        batch = batch_to(collate(pairs[start : start + batch_size], pad_token_id), device)
        logps, reference = pair_logps(policy, batch), ref_cache.lookup(batch)
        margins = beta * ((logps.chosen - reference.chosen) - (logps.rejected - reference.rejected))
        correct += (margins > 0).float().sum()
        margin_sum += margins.sum()
    policy.train(was_training)
    correct, margin_sum = torch.stack([correct, margin_sum]).tolist()  # the one host read
    return {"eval/accuracy": correct / len(pairs), "eval/margin": margin_sum / len(pairs)}


# ---------------------------------------------------------------------------------------------------------------
# Training.


def dpo_step(policy, batch: dict, ref_cache: ReferenceCache, config: DPOConfig):
    """Return (loss, metrics) of one batch of pairs; the caller runs backward and the optimizer.

    The metrics are detached 0-dim tensors left on the device: reading one is a host synchronisation, which
    `MetricWindow` does once per logging interval, not here.
    """
    logps = pair_logps(policy, batch)
    reference = ref_cache.lookup(batch)
    loss = pair_losses(logps, reference, config.loss_type, config.beta, config.label_smoothing).mean()
    chosen_rewards = config.beta * (logps.chosen - reference.chosen).detach()  # implicit rewards β·log(π/ref)
    rejected_rewards = config.beta * (logps.rejected - reference.rejected).detach()
    metrics = {
        "losses/policy_loss": loss.detach(),
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        # Chosen log-probs can fall while the margin grows (DPO repo #32): log both sides.
        "logps/chosen": logps.chosen.detach().mean(),
        "logps/rejected": logps.rejected.detach().mean(),
    }
    return loss, metrics


@dataclass
class PreparedPairs:
    """Tokenized pairs with their cached reference log-probs: all a DPO epoch reads."""

    examples: list[dict]
    reference: ReferenceCache


def prepare_pairs(policy, reference, tokenizer, table: datasets.Dataset, config: DPOConfig, device) -> PreparedPairs:
    """Tokenize the pairs and run the reference over them once, in the forward mode training will use."""
    examples = tokenize_pairs(tokenizer, table, config.max_length, config.max_prompt_tokens)
    collate = COLLATORS[forward_mode(config.forward_mode, device)]
    cache = cache_reference_logps(
        policy, reference, examples, tokenizer.pad_token_id, config.batch_prompts, device, collate
    )
    return PreparedPairs(examples, cache)


def fit_dpo(
    policy, tokenizer, train: PreparedPairs, config: DPOConfig, sharding: Sharding, writer: MetricsWriter, save=None
) -> tuple[object, dict]:
    """Run `config.epochs` passes of DPO over the prepared pairs; return (the prepared policy, last metrics).

    Nothing in a step reads a value back from the device: metrics are read and written every `config.log_every`
    steps (and at the first and last). `save(model, step)` writes a checkpoint every `config.save_every` steps.
    """
    accelerator = sharding.accelerator
    loader = pairs_loader(
        train.examples, forward_mode(config.forward_mode, sharding.device), config, tokenizer.pad_token_id
    )
    optimizer = make_optimizer(policy, config.learning_rate, eps=1e-8)
    trainable = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    policy, optimizer, loader = sharding.prepare(policy, optimizer, config.batch_prompts, config.max_grad_norm, loader)
    disable_dropout(policy)
    policy.train()
    total_steps = config.epochs * len(loader)
    step, metrics, window = 0, {}, MetricWindow()
    progress = tqdm(total=total_steps, desc="DPO", unit="step", disable=not sharding.is_main)
    for epoch in range(config.epochs):
        for batch_number, batch in enumerate(loader, start=1):
            loss, step_metrics = dpo_step(policy, batch, train.reference, config)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            step += 1
            step_metrics["charts/tokens"] = batch["attention_mask"].sum()
            if grad_norm is not None:  # None where the engine clips on its own and reports no norm
                step_metrics["losses/grad_norm"] = torch.as_tensor(grad_norm).detach()
            window.add(step_metrics)
            progress.update(1)
            if is_log_step(step, total_steps, config.log_every):
                metrics = window.read(sharding) | {
                    "epoch": epoch + batch_number / len(loader),
                    "charts/learning_rate": config.learning_rate,
                }
                writer.write(step, metrics)
                progress.set_postfix(
                    loss=f"{metrics['losses/policy_loss']:.3f}", margin=f"{metrics['rewards/margins']:.3f}"
                )
            if save and config.save_every and step % config.save_every == 0:
                save(policy, step)
    progress.close()
    return policy, metrics | {"steps": step}


def memory_plan(config: DPOConfig, shape: ModelShape, length: int, answer: int, device: DeviceChoice):
    """Return (models kept, training passes) of a step: the policy (a full fine-tuning run's reference too, while
    it caches the reference log-probs), and one pass over the chosen and rejected rows of a batch of pairs."""
    models = run_memory(config, shape, [], device)
    shares = not config.gradient_checkpointing and forward_mode(config.forward_mode, device.device) == "shared_prompt"
    shared = config.batch_prompts * (length - answer) if shares else 0  # each pair's prompt runs once
    rows = 2 * config.batch_prompts
    step = training_pass(shape, rows, length, answer + 1, device, config.gradient_checkpointing, shared,
                         weight_bytes=models[0].weight_bytes)  # fmt: skip
    return models, [step]


def train_dpo(config: DPOConfig, store=None, pairs=None) -> Path:
    """Train a policy with DPO and return the run folder; pairs come from `pairs`, else `config.pairs_file`, else the store.

    Bad input fails before any model is loaded or file written. The run folder (a fresh one: DPO does not
    resume) gets config.json, metrics.jsonl (held-out accuracy and margin last) and the checkpoint (adapter/,
    merged/, checkpoint.json with the lineage); with a store the run is recorded as a 'policy' model.
    """
    ctx = start_run(config, lambda: _read_pairs(config, store, pairs), store)
    rows = ctx.inputs
    fraction = EVAL_FRACTION if len({prompt_of_pair(row) for row in rows}) >= MIN_PROMPTS_FOR_EVAL else 0.0
    train_rows, eval_rows = split_by_prompt(rows, prompt_of_pair, fraction, config.seed)
    device = ctx.sharding.device
    train, held_out = (
        prepare_pairs(ctx.policy, ctx.reference, ctx.tokenizer, datasets.Dataset.from_list(rows), config, device)
        if rows
        else None
        for rows in (train_rows, eval_rows)
    )
    ctx.reference = None  # cached: a full-fine-tuning reference copy is no longer needed
    gc.collect()
    examples = train.examples + (held_out.examples if held_out is not None else [])
    report_cut(ctx.writer, sum(example["cut"] for example in examples), len(examples), "pairs", config.max_length)

    def save(model, step):
        save_weights(ctx, model, step, ctx.run_dir / f"checkpoint-{step}")

    policy, last = fit_dpo(ctx.policy, ctx.tokenizer, train, config, ctx.sharding, ctx.writer, save)
    metrics = dict(last)  # the last step's metrics, then the held-out ones
    if held_out is not None:
        collate = COLLATORS[forward_mode(config.forward_mode, device)]
        plain = ctx.accelerator.unwrap_model(policy)  # the model itself: an engine's `.config` is the engine's
        held_out_metrics = evaluate_pairs(plain, held_out.reference, held_out.examples, config.beta, collate=collate)
        ctx.writer.write(last["steps"], held_out_metrics)
        metrics |= held_out_metrics
    return finish_run(ctx, store, policy, metrics, lambda: save_weights(ctx, policy, last["steps"]))


def _read_pairs(config: DPOConfig, store, pairs) -> tuple[list[dict], dict]:
    """Return (the pairs to train on, checked, as rows; their lineage)."""
    source = pairs if pairs is not None else (config.pairs_file or store)
    if source is None:
        raise ValueError("DPO needs preference pairs: pass a store with rankings, a pairs table, or set pairs_file")
    described = "given" if pairs is not None else (config.pairs_file or "duckdb")
    return load_pairs(source).to_list(), {"pairs": described}
