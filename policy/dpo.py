"""Direct Preference Optimization: the policy learns from chosen/rejected pairs, with no reward model and no sampling.

Rafailov et al. 2023. The reference log-probs are computed once over the pairs (no backward: large,
length-sorted batches) and cached before training, so each step runs the policy only, and a full-fine-tuning
reference copy is freed once the cache is built.

Two forward layouts, picked by device (`forward_layout`), give the same log-probs: on a CPU each prompt runs
once and its key/value cache serves both the chosen and the rejected completion (least compute); on a GPU
chosen and rejected run in one padded pass over pairs of similar length (fewest kernel launches). A step never
reads a value back from the device; metrics stay there until the loop reads them every `log_every` steps.
"""

import gc
import math
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from core.chat import chat_prompt_ids
from core.distributed import (
    configure_deepspeed,
    from_main_process,
    full_parameters,
    make_accelerator,
    mean_over_processes,
    whole_model_loading,
)
from core.models import disable_dropout, training_dtype
from core.runs import METRICS_FILE, MetricsWriter
from core.splits import split_by_prompt
from data.export import pairs_dataset
from data.registry import check_run_name, record_run
from data.store import Store
from data.tables import load_table
from policy.config import DPOConfig
from policy.logprobs import PromptLayout, sequence_logprobs
from policy.lora import LoraSettings, load_policy, reference_mode, save_checkpoint
from policy.runner import make_optimizer

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


def collate_pairs(examples: list[dict], pad_token_id: int) -> dict:
    """Return one batch of 2B rows in the shared-prompt layout, the B chosen rows first.

    Prompts are left-padded and completions right-padded, so every prompt ends in the same column and a pair's
    prompt runs once for both its completions (`pair_logps`): a pair costs P + 2C tokens, not 2(P + C).
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
        "prompt_width": prompt_width,  # P: a plain int, so the forward needs no host read to find it
        "prompt_of_row": torch.arange(len(examples)).repeat(2),  # (2B,) row i and row B + i share prompt i
    }


def collate_padded_pairs(examples: list[dict], pad_token_id: int) -> dict:
    """Return one batch of 2B rows in the padded layout, the B chosen rows first: one plain forward over all.

    Each prompt + completion is left-padded to the longest, so all completions end in the last column and only
    the last (longest completion + 1) positions need logits. More tokens than the shared-prompt layout, but two
    fewer model calls and no cache to copy: fewer, larger kernels, which is what a GPU wants.
    """
    rows = [(example["prompt_ids"], example[key]) for key in ("chosen_ids", "rejected_ids") for example in examples]
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    completion_width = max(len(completion) for _, completion in rows)
    input_ids, attention_mask, completion_mask = [], [], []
    for prompt, completion in rows:
        left = width - len(prompt) - len(completion)
        input_ids.append([pad_token_id] * left + prompt + completion)
        attention_mask.append([0] * left + [1] * (len(prompt) + len(completion)))
        completion_mask.append([0] * (width - len(completion)) + [1] * len(completion))
    return {
        "index": torch.tensor([example["index"] for example in examples]),  # (B,)
        "input_ids": torch.tensor(input_ids),  # (2B, T)
        "attention_mask": torch.tensor(attention_mask),  # (2B, T)
        "completion_mask": torch.tensor(completion_mask),  # (2B, T)
        "prompt_width": width - completion_width,  # every completion token sits at this column or later
    }


COLLATORS = {"shared_prompt": collate_pairs, "padded": collate_padded_pairs}


def forward_layout(choice: str, device: torch.device) -> str:
    """Return the layout to run: `choice`, or for 'auto' the one that measured fastest on this kind of device.

    On a CPU compute is the cost, and running each prompt once saves it. On a GPU the host is the cost at these
    sizes (Python, kernel launches), and the shared-prompt path's extra model call and cache copy add launches.
    """
    if choice == "auto":
        return "padded" if device.type == "cuda" else "shared_prompt"
    if choice not in COLLATORS:
        raise ValueError(f"unknown DPO forward_layout {choice!r}; expected 'auto' or one of {sorted(COLLATORS)}")
    return choice


def batch_to(batch: dict, device) -> dict:
    """Return the batch with its tensors on `device` (its plain ints stay as they are)."""
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}


def batch_layout(batch: dict) -> PromptLayout:
    """Return the prompt layout a collator wrote into the batch (shared prompts, or one plain pass)."""
    if "prompt_of_row" not in batch:
        return PromptLayout(batch["prompt_width"])
    prompt_of_row = batch["prompt_of_row"]  # (2B,)
    return PromptLayout(batch["prompt_width"], prompt_of_row[: len(batch["index"])], prompt_of_row)


def pair_logps(model, batch: dict) -> PairLogps:
    """Return the summed completion log-probs of a collated batch (either layout): one pass over chosen and rejected."""
    logps = sequence_logprobs(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], layout=batch_layout(batch)
    )  # (2B,)
    tokens = batch["completion_mask"].sum(-1).to(logps.dtype)  # (2B,)
    chosen, rejected = logps.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    return PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)


class LengthGroupedBatches(Sampler):
    """Batches of pairs of similar length, in random order: less padding for the padded layout.

    Each epoch shuffles the pairs, sorts each window of `window` batches' worth by length, cuts it into batches,
    and shuffles the batches (as transformers' LengthGroupedSampler does), so batches still mix across the data.
    The order is a function of the seed and the epoch alone: every process draws the same one.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 16):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = rng.sample(range(len(self.lengths)), len(self.lengths))
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            window = sorted(order[start : start + span], key=lambda index: -self.lengths[index])
            batches += [window[first : first + self.batch_size] for first in range(0, len(window), self.batch_size)]
        rng.shuffle(batches)
        yield from batches


def pair_length(example: dict) -> int:
    """Return the longest row a pair adds to a padded batch."""
    return len(example["prompt_ids"]) + max(len(example["chosen_ids"]), len(example["rejected_ids"]))


# ---------------------------------------------------------------------------------------------------------------
# The reference: one pass over the data, cached.

REFERENCE_MEMORY_SHARE = 0.5  # of the GPU memory free when the pass starts: room for the batch's logits
LOGIT_BYTES = 12  # per vocabulary entry of a kept position: bf16 logits, their float32 copy, logsumexp's temporary
ACTIVATION_BYTES = 16  # per hidden unit of a token: one layer's bf16 states and MLP intermediates (no backward)


@dataclass
class ReferenceCache:
    """Reference log-probs of every pair, indexed by the pair's `index`; computed once, then read each step.

    The values live on the training device, so a step looks them up with no copy to or from the host.
    """

    chosen: torch.Tensor  # (N,)
    rejected: torch.Tensor  # (N,)

    def lookup(self, batch: dict) -> PairLogps:
        index = batch["index"].to(self.chosen.device)
        tokens = batch["completion_mask"].sum(-1).float()  # (2B,)
        chosen_tokens, rejected_tokens = tokens.chunk(2)
        device = tokens.device
        return PairLogps(self.chosen[index].to(device), self.rejected[index].to(device), chosen_tokens, rejected_tokens)


def reference_batches(examples: list[dict], pairs_per_batch: int, memory_budget: int | None, model_config):
    """Return the pairs longest first, cut into batches: similar lengths together, so little padding.

    The pass has no backward, so on a GPU a batch grows while its estimated peak (the kept logits: 2 rows per
    pair, longest completion + 1 positions each; and one layer's activations) fits `memory_budget` bytes;
    without a budget (CPU) it holds `pairs_per_batch` pairs.
    """
    batches: list[list[dict]] = []
    completion = 0
    for example in sorted(examples, key=pair_length, reverse=True):
        completion = max(completion, len(example["chosen_ids"]), len(example["rejected_ids"]))
        batch = batches[-1] if batches else []
        if batch and _fits(batch + [example], completion, pairs_per_batch, memory_budget, model_config):
            batch.append(example)
        else:
            batches.append([example])
            completion = max(len(example["chosen_ids"]), len(example["rejected_ids"]))
    return batches


def _fits(batch: list[dict], completion: int, pairs_per_batch: int, memory_budget: int | None, model_config) -> bool:
    if memory_budget is None:
        return len(batch) <= pairs_per_batch
    width = pair_length(batch[0])  # the longest row: pairs come longest first
    logits = (completion + 1) * model_config.vocab_size * LOGIT_BYTES
    activations = width * model_config.hidden_size * ACTIVATION_BYTES
    return 2 * len(batch) * (logits + activations) <= memory_budget


def reference_memory_budget(device: torch.device) -> int | None:
    """Return the bytes a reference batch may use on a CUDA device (a share of what is free now); None elsewhere."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free * REFERENCE_MEMORY_SHARE)


@torch.no_grad()
def cache_reference_logps(
    policy, reference, examples: list[dict], pad_token_id: int, batch_size: int, device: torch.device, collate=None
) -> ReferenceCache:
    """Return the reference's log-probs of every pair: the explicit copy, or the LoRA policy with adapters off.

    `collate`: the forward layout (default: the one `forward_layout` picks for the device).
    """
    collate = collate or COLLATORS[forward_layout("auto", device)]
    chosen = torch.zeros(len(examples), device=device)
    rejected = torch.zeros(len(examples), device=device)
    with reference_mode(policy, reference) as model:
        batches = reference_batches(examples, batch_size, reference_memory_budget(device), model.config)
        was_training = model.training
        model.eval()
        for chunk in tqdm(batches, desc="reference log-probs", unit="batch", leave=False):
            batch = batch_to(collate(chunk, pad_token_id), device)
            logps = pair_logps(model, batch)
            chosen[batch["index"]] = logps.chosen.float()
            rejected[batch["index"]] = logps.rejected.float()
        model.train(was_training)
    return ReferenceCache(chosen, rejected)


@torch.no_grad()
def evaluate_pairs(
    policy, ref_cache: ReferenceCache, pairs: list[dict], beta: float = 0.1, batch_size: int = 8, collate=None
) -> dict:
    """Return held-out preference accuracy (implicit reward of chosen > rejected) and mean reward margin β·h."""
    device = next(policy.parameters()).device
    collate = collate or COLLATORS[forward_layout("auto", device)]
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


class MetricWindow:
    """Sums each step's metric tensors on the device; `read` averages them over the steps since the last read.

    A read is the loop's one host synchronisation (one gather over processes, one copy to the host), so the
    host can queue the next steps' kernels while the device still runs the last ones. Step time and tokens per
    second are over the whole window, measured once its values are back.
    """

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.started = time.perf_counter()

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def read(self, accelerator: Accelerator) -> dict[str, float]:
        means = mean_over_processes(accelerator, {key: total / self.steps for key, total in self.sums.items()})
        elapsed = time.perf_counter() - self.started
        tokens = means.pop("charts/tokens")
        means |= {"charts/step_time_s": elapsed / self.steps, "charts/tokens_per_s": tokens * self.steps / elapsed}
        self.__init__()
        return means


def is_log_step(step: int, total_steps: int, log_every: int) -> bool:
    """Return whether metrics are read at this step: the first (it shows the run started, warm-up apart), every
    `log_every`-th, and the last."""
    return step == 1 or step % log_every == 0 or step == total_steps


@dataclass
class PreparedPairs:
    """Tokenized pairs with their cached reference log-probs: all a DPO epoch reads."""

    examples: list[dict]
    reference: ReferenceCache


def prepare_pairs(policy, reference, tokenizer, table: datasets.Dataset, config: DPOConfig, device) -> PreparedPairs:
    """Tokenize the pairs and run the reference over them once, in the forward layout training will use."""
    examples = tokenize_pairs(tokenizer, table, config.max_length, config.max_prompt_tokens)
    collate = COLLATORS[forward_layout(config.forward_layout, device)]
    cache = cache_reference_logps(
        policy, reference, examples, tokenizer.pad_token_id, config.batch_prompts, device, collate
    )
    return PreparedPairs(examples, cache)


def pairs_loader(examples: list[dict], layout: str, config: DPOConfig, pad_token_id: int) -> DataLoader:
    """Return the shuffled batches of an epoch; the padded layout groups pairs of similar length."""
    collate = partial(COLLATORS[layout], pad_token_id=pad_token_id)
    if layout == "padded":
        lengths = [pair_length(example) for example in examples]
        batches = LengthGroupedBatches(lengths, config.batch_prompts, config.seed)
        return DataLoader(examples, batch_sampler=batches, collate_fn=collate)
    generator = torch.Generator().manual_seed(config.seed)
    return DataLoader(examples, batch_size=config.batch_prompts, shuffle=True, generator=generator, collate_fn=collate)


def fit_dpo(
    policy, tokenizer, train: PreparedPairs, config: DPOConfig, accelerator: Accelerator, writer: MetricsWriter
) -> tuple[object, dict]:
    """Run `config.epochs` passes of DPO over the prepared pairs; return (the unwrapped policy, last metrics).

    Nothing in a step reads a value back from the device: metrics are read and written every `config.log_every`
    steps (and at the first and last).
    """
    layout = forward_layout(config.forward_layout, accelerator.device)
    loader = pairs_loader(train.examples, layout, config, tokenizer.pad_token_id)
    optimizer = make_optimizer(policy, config.learning_rate, eps=1e-8)
    trainable = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    configure_deepspeed(accelerator, config.batch_prompts, config.max_grad_norm)
    policy, optimizer, loader = accelerator.prepare(policy, optimizer, loader)
    disable_dropout(policy)
    policy.train()
    total_steps = config.epochs * len(loader)
    step, metrics, window = 0, {}, MetricWindow()
    progress = tqdm(total=total_steps, desc="DPO", unit="step", disable=not accelerator.is_main_process)
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
                metrics = window.read(accelerator) | {
                    "epoch": epoch + batch_number / len(loader),
                    "charts/learning_rate": config.learning_rate,
                }
                writer.write(step, metrics)
                progress.set_postfix(
                    loss=f"{metrics['losses/policy_loss']:.3f}", margin=f"{metrics['rewards/margins']:.3f}"
                )
            if config.save_every and step % config.save_every == 0:
                with full_parameters(accelerator, policy):  # ZeRO-3: every process gathers, rank 0 writes
                    if accelerator.is_main_process:
                        folder = writer.path.parent / f"checkpoint-{step}"
                        save_checkpoint(accelerator.unwrap_model(policy), tokenizer, folder, {"step": step})
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
        collate = COLLATORS[forward_layout(config.forward_layout, accelerator.device)]
        held_out_metrics = evaluate_pairs(policy, held_out.reference, held_out.examples, config.beta, collate=collate)
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
