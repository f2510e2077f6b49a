"""Direct Preference Optimization: the policy learns from chosen/rejected pairs, with no reward model and no sampling.

Rafailov et al. 2023. The reference log-probs are computed once over the pairs and cached before training, so
each step runs the policy only, and a full-fine-tuning reference copy is freed once the cache is built. In a
step each prompt runs once and its key/value cache serves both the chosen and the rejected completion.
"""

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.chat import chat_prompt_ids
from core.models import disable_dropout, training_dtype
from core.runs import METRICS_FILE, MetricsWriter
from core.splits import split_by_prompt
from data.export import pairs_dataset
from data.registry import check_run_name, record_run
from data.store import Store
from data.tables import load_table
from policy.config import DPOConfig
from policy.logprobs import sequence_logprobs
from policy.lora import LoraSettings, load_policy, reference_mode, save_checkpoint
from policy.runner import (
    from_main_process,
    full_parameters,
    make_accelerator,
    make_optimizer,
    mean_over_processes,
    whole_model_loading,
)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
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


@dataclass
class PairLogps:
    """Summed completion log-probs of a batch of pairs, and the completion lengths IPO averages over."""

    chosen: torch.Tensor  # (B,)
    rejected: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor  # (B,)
    rejected_tokens: torch.Tensor  # (B,)


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


# ---------------------------------------------------------------------------------------------------------------
# Pairs: load, check, split by prompt, tokenize, batch, log-probs.


def load_pairs(source) -> datasets.Dataset:
    """Return a prompt/chosen/rejected table from a Store, a Dataset, a list of dicts, or a file or folder path.

    Paths may be JSONL, Parquet, or a folder written by `Dataset.save_to_disk`. Extra columns are kept.
    """
    if isinstance(source, Store):
        table = pairs_dataset(source)
    elif isinstance(source, datasets.Dataset):
        table = source
    elif isinstance(source, list):
        table = datasets.Dataset.from_list(source)
    else:
        table = _read_pairs_file(Path(source))
    return _checked_pairs(table, str(source) if not isinstance(source, (list, datasets.Dataset)) else "pairs")


def _read_pairs_file(path: Path) -> datasets.Dataset:
    """Read a .jsonl/.parquet file or a datasets folder with the reward model's reader (one format, one reader)."""
    _, rows = load_table(str(path))
    if not rows:
        raise ValueError(f"{path} holds no pairs: rank some responses first, or import a pairs file")
    return datasets.Dataset.from_list(rows)


def _checked_pairs(table: datasets.Dataset, name: str) -> datasets.Dataset:
    missing = [column for column in PAIR_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"{name} lacks column(s) {missing}; DPO pairs need {list(PAIR_COLUMNS)}")
    if len(table) == 0:
        raise ValueError(f"{name} holds no pairs: rank some responses first, or import a pairs file")
    for row, example in enumerate(table.select_columns(list(PAIR_COLUMNS))):
        empty = [column for column in PAIR_COLUMNS if not isinstance(example[column], str) or not example[column]]
        if empty:
            raise ValueError(f"{name} row {row}: {empty} must be non-empty text")
    return table


def tokenize_pairs(tokenizer, pairs: datasets.Dataset, max_length: int, max_prompt_tokens: int) -> list[dict]:
    """Return one dict of token ids per pair: chat-formatted prompt, and each response followed by EOS.

    The prompt keeps its last `min(max_prompt_tokens, max_length - 1)` tokens; each completion keeps its first
    tokens up to `max_length` in all (a cut completion loses its EOS, as it would at sampling time).
    """
    prompt_cache: dict[str, list[int]] = {}
    examples = []
    for index, pair in enumerate(pairs.select_columns(list(PAIR_COLUMNS))):
        if pair["prompt"] not in prompt_cache:
            prompt_cache[pair["prompt"]] = chat_prompt_ids(tokenizer, pair["prompt"])
        prompt_ids = prompt_cache[pair["prompt"]][-min(max_prompt_tokens, max_length - 1) :]
        room = max_length - len(prompt_ids)
        completions = tokenizer([pair["chosen"], pair["rejected"]], add_special_tokens=False)["input_ids"]
        chosen_ids, rejected_ids = (ids + [tokenizer.eos_token_id] for ids in completions)
        examples.append(
            {
                "index": index,
                "prompt_ids": prompt_ids,
                "chosen_ids": chosen_ids[:room],
                "rejected_ids": rejected_ids[:room],
            }
        )
    return examples


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Return one batch of 2B rows, the B chosen rows first, so chosen and rejected share one forward pass.

    Prompts are left-padded and completions right-padded, so every prompt ends in the same column.
    """
    prompt_width = max(len(example["prompt_ids"]) for example in examples)
    completion_width = max(len(example[key]) for example in examples for key in ("chosen_ids", "rejected_ids"))
    input_ids, attention_mask, completion_mask = [], [], []
    for key in ("chosen_ids", "rejected_ids"):
        for example in examples:
            prompt, completion = example["prompt_ids"], example[key]
            left, right = prompt_width - len(prompt), completion_width - len(completion)
            input_ids.append([pad_token_id] * left + prompt + completion + [pad_token_id] * right)
            attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)) + [0] * right)
            completion_mask.append([0] * prompt_width + [1] * len(completion) + [0] * right)
    return {
        "index": torch.tensor([example["index"] for example in examples]),  # (B,)
        "input_ids": torch.tensor(input_ids),  # (2B, T)
        "attention_mask": torch.tensor(attention_mask),  # (2B, T)
        "completion_mask": torch.tensor(completion_mask),  # (2B, T)
    }


def pair_logps(model, batch: dict[str, torch.Tensor]) -> PairLogps:
    """Return the summed completion log-probs of a collated batch: one forward pass over chosen and rejected."""
    logps = completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])  # (2B,)
    tokens = batch["completion_mask"].sum(-1).to(logps.dtype)  # (2B,)
    chosen, rejected = logps.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    return PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)


def completion_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Return log p(completion | prompt) per row of a `collate_pairs` batch.

    A pair's chosen and rejected rows share their prompt, so `sequence_logprobs` runs it once and feeds its
    key/value cache to both completions: a pair costs P + 2C tokens, not 2(P + C).
    """
    return sequence_logprobs(model, input_ids, attention_mask, completion_mask)


# ---------------------------------------------------------------------------------------------------------------
# The reference: one pass over the data, cached.


@dataclass
class ReferenceCache:
    """Reference log-probs of every pair, indexed by the pair's `index`; computed once, then read each step."""

    chosen: torch.Tensor  # (N,)
    rejected: torch.Tensor  # (N,)

    def lookup(self, batch: dict[str, torch.Tensor]) -> PairLogps:
        index = batch["index"].cpu()
        device = batch["input_ids"].device
        tokens = batch["completion_mask"].sum(-1).float()  # (2B,)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        return PairLogps(self.chosen[index].to(device), self.rejected[index].to(device), chosen_tokens, rejected_tokens)


@torch.no_grad()
def cache_reference_logps(
    policy, reference, examples: list[dict], pad_token_id: int, batch_size: int, device: torch.device
) -> ReferenceCache:
    """Return the reference's log-probs of every pair: the explicit copy, or the LoRA policy with adapters off."""
    chosen = torch.zeros(len(examples))
    rejected = torch.zeros(len(examples))
    batches = [examples[start : start + batch_size] for start in range(0, len(examples), batch_size)]
    with reference_mode(policy, reference) as model:
        was_training = model.training
        model.eval()
        for chunk in tqdm(batches, desc="reference log-probs", unit="batch", leave=False):
            batch = {key: value.to(device) for key, value in collate_pairs(chunk, pad_token_id).items()}
            logps = pair_logps(model, batch)
            chosen[batch["index"].cpu()] = logps.chosen.float().cpu()
            rejected[batch["index"].cpu()] = logps.rejected.float().cpu()
        model.train(was_training)
    return ReferenceCache(chosen, rejected)


@torch.no_grad()
def evaluate_pairs(
    policy, ref_cache: ReferenceCache, pairs: list[dict], beta: float = 0.1, batch_size: int = 8
) -> dict:
    """Return held-out preference accuracy (implicit reward of chosen > rejected) and mean reward margin β·h."""
    device = next(policy.parameters()).device
    pad_token_id = policy.config.pad_token_id  # set apart from EOS by `ensure_pad_token` when the policy loaded
    was_training = policy.training
    policy.eval()
    correct, margin_sum = 0.0, 0.0
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start : start + batch_size], pad_token_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        logps, reference = pair_logps(policy, batch), ref_cache.lookup(batch)
        margins = beta * ((logps.chosen - reference.chosen) - (logps.rejected - reference.rejected))
        correct += (margins > 0).float().sum().item()
        margin_sum += margins.sum().item()
    policy.train(was_training)
    return {"eval/accuracy": correct / len(pairs), "eval/margin": margin_sum / len(pairs)}


# ---------------------------------------------------------------------------------------------------------------
# Training.


def dpo_step(policy, batch: dict[str, torch.Tensor], ref_cache: ReferenceCache, config: DPOConfig):
    """Return (loss, metrics) of one batch of pairs; the caller runs backward and the optimizer."""
    logps = pair_logps(policy, batch)
    reference = ref_cache.lookup(batch)
    loss = pair_losses(logps, reference, config.loss_type, config.beta, config.label_smoothing).mean()
    chosen_rewards = config.beta * (logps.chosen - reference.chosen).detach()  # implicit rewards β·log(π/ref)
    rejected_rewards = config.beta * (logps.rejected - reference.rejected).detach()
    metrics = {
        "losses/policy_loss": loss.item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        # Chosen log-probs can fall while the margin grows (DPO repo #32): log both sides.
        "logps/chosen": logps.chosen.detach().mean().item(),
        "logps/rejected": logps.rejected.detach().mean().item(),
    }
    return loss, metrics


@dataclass
class PreparedPairs:
    """Tokenized pairs with their cached reference log-probs: all a DPO epoch reads."""

    examples: list[dict]
    reference: ReferenceCache


def prepare_pairs(policy, reference, tokenizer, table: datasets.Dataset, config: DPOConfig, device) -> PreparedPairs:
    """Tokenize the pairs and run the reference over them once."""
    examples = tokenize_pairs(tokenizer, table, config.max_length, config.max_prompt_tokens)
    cache = cache_reference_logps(policy, reference, examples, tokenizer.pad_token_id, config.batch_prompts, device)
    return PreparedPairs(examples, cache)


def fit_dpo(
    policy, tokenizer, train: PreparedPairs, config: DPOConfig, accelerator: Accelerator, writer: MetricsWriter
) -> tuple[object, dict]:
    """Run `config.epochs` passes of DPO over the prepared pairs; return (the unwrapped policy, last metrics)."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        train.examples,
        batch_size=config.batch_prompts,
        shuffle=True,
        generator=generator,
        collate_fn=lambda examples: collate_pairs(examples, tokenizer.pad_token_id),
    )
    optimizer = make_optimizer(policy, config.learning_rate, eps=1e-8)
    trainable = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    policy, optimizer, loader = accelerator.prepare(policy, optimizer, loader)
    disable_dropout(policy)
    policy.train()
    step, metrics = 0, {}
    progress = tqdm(total=config.epochs * len(loader), desc="DPO", unit="step", disable=not accelerator.is_main_process)
    for epoch in range(config.epochs):
        for batch_number, batch in enumerate(loader, start=1):
            started = time.perf_counter()
            loss, metrics = dpo_step(policy, batch, train.reference, config)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            elapsed = time.perf_counter() - started
            step += 1
            metrics = mean_over_processes(accelerator, metrics)
            metrics |= {
                "epoch": epoch + batch_number / len(loader),
                "losses/grad_norm": float(grad_norm),
                "charts/learning_rate": config.learning_rate,
                "charts/step_time_s": elapsed,
                "charts/tokens_per_s": batch["attention_mask"].sum().item() / elapsed,
            }
            writer.write(step, metrics)
            progress.update(1)
            progress.set_postfix(
                loss=f"{metrics['losses/policy_loss']:.3f}", margin=f"{metrics['rewards/margins']:.3f}"
            )
            if config.save_every and step % config.save_every == 0 and accelerator.is_main_process:
                save_checkpoint(
                    accelerator.unwrap_model(policy),
                    tokenizer,
                    writer.path.parent / f"checkpoint-{step}",
                    {"step": step},
                )
    progress.close()
    return accelerator.unwrap_model(policy), metrics | {"steps": step}


def train_dpo(config: DPOConfig, store=None, pairs=None) -> Path:
    """Train a policy with DPO and return the run folder; pairs come from `pairs`, else `config.pairs_file`, else the store.

    Bad input fails before any model is loaded or file written. The run folder (a fresh one: DPO does not
    resume) gets config.json, metrics.jsonl (held-out accuracy and margin last) and the checkpoint (adapter/,
    merged/); with a store the run is recorded as a 'policy' model.
    """
    accelerator, choice = make_accelerator(config.device)
    rows, config.output_dir = from_main_process(
        accelerator, lambda: _checked_inputs(config, store, pairs).to_list(), config.output_dir
    )
    fraction = EVAL_FRACTION if len({row["prompt"] for row in rows}) >= MIN_PROMPTS_FOR_EVAL else 0.0
    train_rows, eval_rows = split_by_prompt(rows, lambda row: row["prompt"], fraction, config.seed)
    run_dir = Path(config.output_dir)
    torch.manual_seed(config.seed + accelerator.process_index)
    lora = LoraSettings(rank=config.lora_rank, alpha=config.lora_alpha)
    with whole_model_loading(accelerator):
        policy, reference, tokenizer = load_policy(config.model, lora, accelerator.device, training_dtype(choice))

    train, held_out = (
        prepare_pairs(policy, reference, tokenizer, datasets.Dataset.from_list(rows), config, accelerator.device)
        if rows
        else None
        for rows in (train_rows, eval_rows)
    )
    del reference  # cached: a full-fine-tuning reference copy is no longer needed
    gc.collect()

    if accelerator.is_main_process:
        config.save(run_dir)
    writer = MetricsWriter(run_dir, accelerator.is_main_process, config.report_to, config.to_dict())
    policy, last = fit_dpo(policy, tokenizer, train, config, accelerator, writer)
    metrics = dict(last)  # the last step's metrics, then the held-out ones
    if held_out is not None:
        held_out_metrics = evaluate_pairs(policy, held_out.reference, held_out.examples, config.beta)
        writer.write(last["steps"], held_out_metrics)
        metrics |= held_out_metrics
    with full_parameters(accelerator, policy):  # ZeRO-3: every process gathers, rank 0 writes
        if accelerator.is_main_process:
            save_checkpoint(policy, tokenizer, run_dir, {"algo": "dpo", "config": config.to_dict(), "metrics": metrics})
    if accelerator.is_main_process:
        if store is not None:
            record_run(store, "policy", run_dir, {"algo": config.algo, **config.to_dict()}, metrics)
    writer.close()
    accelerator.wait_for_everyone()
    return run_dir


def _checked_inputs(config: DPOConfig, store, pairs) -> datasets.Dataset:
    """Return the pairs to train on, after checking them, the run folder and the run's registry name."""
    source = pairs if pairs is not None else (config.pairs_file or store)
    if source is None:
        raise ValueError("DPO needs preference pairs: pass a store with rankings, a pairs table, or set pairs_file")
    table = load_pairs(source)
    run_dir = Path(config.output_dir)
    if (run_dir / METRICS_FILE).exists():
        raise ValueError(f"{run_dir} already holds a run; choose another output_dir (DPO runs do not resume)")
    if store is not None:
        check_run_name(store, run_dir)
    return table
