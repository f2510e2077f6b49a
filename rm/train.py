"""Train a reward model on rankings: each ranking's K responses in one forward pass, all its pairs from the K scalars.

The run folder holds `model/` (a plain merged AutoModelForSequenceClassification with its tokenizer),
config.json (the RewardConfig), data.json (which rankings trained and validated), metrics.jsonl (written live),
normalization.json (mean/std of training rewards) and summary.json (the best epoch's metrics).
"""

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from core.models import pick_device
from core.paths import runs_dir
from core.runs import MetricsWriter
from data.registry import check_run_name, record_run
from rm.config import RewardConfig
from rm.data import Ranking, rankings_from_store, read_pairs, read_rankings, split_rankings
from rm.loss import batch_loss, comparison_pairs, correct_comparisons
from rm.model import encode, load_backbone, pad_right, reads_last_token, sequence_rewards

log = logging.getLogger(__name__)

# What the Jobs page plots for a reward-model run (names as written to metrics.jsonl).
PLOTTED_METRICS = ("train/loss", "val/loss", "val/accuracy", "train/accuracy")


@dataclass
class EncodedRanking:
    ranking_id: int
    sequences: list[list[int]]  # K token-id lists, one per response
    tie_groups: torch.Tensor  # (K,), 0 = best group

    @property
    def num_pairs(self) -> int:
        """Return how many ordered comparisons the ranking makes (tied responses make none)."""
        return int((self.tie_groups[:, None] < self.tie_groups[None, :]).sum())


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict  # the kept (best) epoch's record
    model_id: int | None  # registry id when trained from a store


def encode_rankings(rankings: list[Ranking], tokenizer, max_length: int, last_token: bool) -> list[EncodedRanking]:
    """Return each ranking's responses tokenized once, for every epoch."""
    return [
        EncodedRanking(
            r.ranking_id,
            [encode(tokenizer, r.prompt, response, max_length, last_token) for response in r.responses],
            torch.tensor(r.tie_groups),
        )
        for r in tqdm(rankings, desc="tokenizing", unit="ranking", leave=False)
    ]


@dataclass(frozen=True)
class ForwardLayout:
    """How batches of rankings are shaped on a device: chosen by `forward_layout`, both tested to agree."""

    pad_multiple: int  # sequence width rounded up to this (CUDA: a few shapes; CPU: no wasted tokens)
    group_by_length: bool  # batches of rankings of similar length (less padding), shuffled batch order


def forward_layout(device) -> ForwardLayout:
    """Return the layout that measures fastest on the device: bucketed and length-grouped on CUDA, as-is on CPU."""
    cuda = torch.device(device).type == "cuda"
    return ForwardLayout(pad_multiple=64 if cuda else 1, group_by_length=cuda)


def score_rankings(model, batch: list[EncodedRanking], pad_id: int, device, autocast, pad_multiple: int = 1):
    """Return the K rewards of each ranking in the batch, from one forward pass over all their responses."""
    sequences = [ids for ranking in batch for ids in ranking.sequences]
    input_ids, attention_mask = pad_right(sequences, pad_id, device, pad_multiple)  # (sum K, T)
    with autocast():
        rewards = sequence_rewards(model, input_ids, attention_mask)  # (sum K,)
    return list(rewards.split([len(ranking.sequences) for ranking in batch]))


def batches_of(
    items: list, batch_size: int, generator: torch.Generator | None = None, group_by_length: bool = False
) -> list[list]:
    """Return the items in batches, shuffled when a generator is given.

    Grouped by length: the shuffled items are sorted by length within windows of 8 batches, cut into batches,
    and the batches shuffled, so a batch pads little and the order stays random.
    """
    order = torch.randperm(len(items), generator=generator).tolist() if generator else list(range(len(items)))
    ordered = [items[i] for i in order]
    if not group_by_length:
        return [ordered[start : start + batch_size] for start in range(0, len(ordered), batch_size)]
    window = 8 * batch_size
    batches = []
    for start in range(0, len(ordered), window):
        chunk = sorted(ordered[start : start + window], key=lambda ranking: max(map(len, ranking.sequences)))
        batches += [chunk[index : index + batch_size] for index in range(0, len(chunk), batch_size)]
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


@torch.no_grad()
def evaluate(model, encoded: list[EncodedRanking], config: RewardConfig, pad_id: int, device, autocast) -> dict:
    """Return validation loss (mean per ranking), pairwise accuracy with its counts, and reward mean/std."""
    model.eval()
    losses, rewards, correct, total = [], [], 0, 0
    for batch in batches_of(encoded, config.batch_size):
        batch_rewards = score_rankings(model, batch, pad_id, device, autocast, forward_layout(device).pad_multiple)
        groups = [ranking.tie_groups.to(device) for ranking in batch]
        loss = batch_loss(batch_rewards, groups, config.margin, config.center_coefficient)
        losses.append(loss.item() * len(batch))
        for ranking_rewards, ranking_groups in zip(batch_rewards, groups, strict=True):
            right, count = correct_comparisons(ranking_rewards, ranking_groups)
            correct, total = correct + right, total + count
        rewards.append(torch.cat(batch_rewards).float().cpu())
    all_rewards = torch.cat(rewards)
    return {
        "loss": sum(losses) / len(encoded),
        "accuracy": correct / total,
        "pairs": total,  # an accuracy is shown with its count and interval, never alone
        "rankings": len(encoded),
        "reward_mean": all_rewards.mean().item(),
        "reward_std": all_rewards.std().item() if len(all_rewards) > 1 else 0.0,
    }


def train_epoch(model, optimizer, scheduler, encoded, config, pad_id, device, autocast, state, metrics) -> dict:
    """Run one epoch of optimizer steps (one per batch of rankings); return its mean loss and train accuracy.

    Losses and correct counts add up on the device and are read every `log_every` steps, so a GPU step never
    waits for the host to read a number.
    """
    model.train()
    layout = forward_layout(device)
    batches = batches_of(encoded, config.batch_size, state["generator"], layout.group_by_length)
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)  # summed over the epoch
    window_sum, window_steps, total = torch.zeros((), device=device), 0, 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    bar = tqdm(batches, desc=f"epoch {state['epoch'] + 1}/{state['epochs']}", unit="step")
    for batch in bar:
        rewards = score_rankings(model, batch, pad_id, device, autocast, layout.pad_multiple)
        groups = [ranking.tie_groups.to(device, non_blocking=True) for ranking in batch]
        loss = batch_loss(rewards, groups, config.margin, config.center_coefficient)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        loss_sum += loss.detach() * len(batch)
        window_sum, window_steps = window_sum + loss.detach(), window_steps + 1
        for ranking_rewards, ranking_groups in zip(rewards, groups, strict=True):
            better, worse = comparison_pairs(ranking_groups)
            correct += (ranking_rewards.detach()[better] > ranking_rewards.detach()[worse]).sum()
        total += sum(ranking.num_pairs for ranking in batch)
        if state["step"] % config.log_every == 0:  # the only host reads of the step
            window_loss, accuracy = window_sum.item() / window_steps, correct.item() / total
            bar.set_postfix(loss=f"{window_loss:.4f}", acc=f"{accuracy:.3f}")
            metrics.write(
                state["step"],
                {
                    "event": "train",
                    "epoch": state["epoch"] + 1,
                    "train/loss": window_loss,
                    "train/accuracy": accuracy,
                    "train/learning_rate": scheduler.get_last_lr()[0],
                },
            )
            window_sum, window_steps = torch.zeros((), device=device), 0
    return {"loss": loss_sum.item() / len(encoded), "accuracy": correct.item() / total, "pairs": total}


def load_rankings(config: RewardConfig, store=None, rankings=None) -> tuple[list[Ranking], str]:
    """Return the rankings to learn from and a description of their source."""
    if rankings is not None:
        if not rankings:
            raise ValueError("the list of rankings to train on is empty")
        return rankings, "given"
    if config.pairs:
        return read_pairs(config.pairs), f"pairs:{config.pairs}"
    if config.rankings:  # exported from a store by the app: ids are that store's ranking ids
        return read_rankings(config.rankings), f"rankings:{config.rankings}"
    if store is None:
        raise ValueError("no rankings to train on: pass a store (--db) or a pairs file (--pairs)")
    rankings = rankings_from_store(store)
    if not rankings:
        raise ValueError(f"{store.path} holds no rankings yet: rank some responses first, or pass --pairs FILE")
    return rankings, f"duckdb:{Path(store.path).resolve()}"


def run_folder(config: RewardConfig) -> Path:
    """Return where the run goes; refuse a folder that already holds files (other than the app's exported inputs/)."""
    run_dir = Path(config.output_dir or runs_dir() / f"rm-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and (not run_dir.is_dir() or any(path.name != "inputs" for path in run_dir.iterdir())):
        raise ValueError(f"output folder {run_dir} already exists and is not empty; pick a new one")
    return run_dir


def train_reward_model(config: RewardConfig, store=None, rankings: list[Ranking] | None = None) -> TrainResult:
    """Train, keep the epoch with the lowest held-out loss, save the run folder and record it in the store.

    Rankings come from `rankings` (in memory), else `config.pairs`, else the store; only the store's are recorded.
    """
    rankings, source = load_rankings(config, store, rankings)
    rankings = [r for r in rankings if r.num_comparisons > 0]  # all-tied rankings teach nothing
    if not rankings:
        raise ValueError(f"no ranking from {source} orders any two responses: nothing to learn")
    train_set, validation_set = split_rankings(rankings, config.validation_fraction, config.seed)
    run_dir = run_folder(config)
    if source.startswith("duckdb:"):
        check_run_name(store, run_dir)  # before hours of training, not after
    choice = pick_device(None if config.device == "auto" else config.device)
    bf16 = choice.device.type == "cuda" and choice.dtype == torch.bfloat16  # fp16 without a GradScaler loses updates
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    torch.manual_seed(config.seed)
    model, tokenizer = load_backbone(config.backbone, config.lora_rank, config.lora_alpha)  # a bad name fails here
    model.to(choice.device)

    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.json")
    _save_data_record(run_dir, source, train_set, validation_set, config)
    last_token = reads_last_token(model)
    train_encoded = encode_rankings(train_set, tokenizer, config.max_length, last_token)
    validation_encoded = encode_rankings(validation_set, tokenizer, config.max_length, last_token)

    best = _fit(
        model, train_encoded, validation_encoded, config, tokenizer.pad_token_id, choice.device, autocast, run_dir
    )
    model = _save_model(model, tokenizer, run_dir)
    normalization = _reward_normalization(model, train_encoded, config, tokenizer.pad_token_id, choice.device, autocast)
    (run_dir / "normalization.json").write_text(json.dumps(normalization, indent=2))
    (run_dir / "summary.json").write_text(json.dumps(best, indent=2))
    model_id = None
    if source.startswith("duckdb:"):
        model_id = record_run(store, "reward", run_dir, config.to_dict(), best | {"normalization": normalization})
    return TrainResult(run_dir, best, model_id)


def _fit(model, train_encoded, validation_encoded, config, pad_id, device, autocast, run_dir) -> dict:
    """Run the epochs, log each to metrics.jsonl, leave the lowest held-out loss's weights in the model; return its record.

    Stops early after `config.patience` epochs without a lower held-out loss (never without a validation set).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = config.planned_epochs(len(train_encoded))
    total_steps = epochs * math.ceil(len(train_encoded) / config.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    metrics = MetricsWriter(run_dir, report_to=config.report_to, config=config.to_dict())
    state = {"epoch": 0, "epochs": epochs, "step": 0, "generator": torch.Generator().manual_seed(config.seed)}
    best, best_weights, stale = None, None, 0
    for epoch in range(epochs):
        state["epoch"] = epoch
        record = _train_and_evaluate(
            model, optimizer, scheduler, train_encoded, validation_encoded, config, pad_id, device, autocast, state,
            metrics,
        )  # fmt: skip
        record = metrics.write(state["step"], record)
        log.info("epoch %d: %s", epoch + 1, record)
        if best is None or record["val/loss"] < best["val/loss"] or not validation_encoded:
            best, stale = record, 0
            best_weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            stale += 1
        if config.patience and stale >= config.patience:
            log.info("held-out loss has not improved for %d epochs: stopping at epoch %d", stale, epoch + 1)
            break
    metrics.close()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in best_weights:
                parameter.copy_(best_weights[name])
    return best | {"epochs_run": state["epoch"] + 1, "steps_run": state["step"]}


def _train_and_evaluate(model, optimizer, scheduler, train_encoded, validation_encoded, config, pad_id, device,
                        autocast, state, metrics) -> dict:  # fmt: skip
    """Return the epoch record: one pass of optimizer steps, then the held-out evaluation."""
    started, started_cpu = time.perf_counter(), time.process_time()
    train = train_epoch(model, optimizer, scheduler, train_encoded, config, pad_id, device, autocast, state, metrics)
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    held_out = validation_encoded or train_encoded  # without validation, report on the training rankings
    evaluation = evaluate(model, held_out, config, pad_id, device, autocast)
    record = {"event": "epoch", "epoch": state["epoch"] + 1}
    record |= {f"train/{key}": value for key, value in train.items()}
    record |= {f"val/{key}": value for key, value in evaluation.items()}
    record |= {"val/on_training_data": not validation_encoded}
    record |= {"time/train_s": train_seconds, "time/train_cpu_s": train_cpu_seconds}  # CPU: all threads
    record["time/epoch_s"] = time.perf_counter() - started
    return record


def _save_model(model, tokenizer, run_dir: Path):
    """Write the merged model and tokenizer to run_dir/model (renamed into place whole); return the merged model."""
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()  # training is over: fold LoRA into the weights, keep the trained head
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    tmp.rename(run_dir / "model")
    return model


def _reward_normalization(model, encoded, config, pad_id, device, autocast) -> dict:
    """Return mean/std of the final model's rewards on the training responses, so PPO/GRPO can see ~N(0, 1)."""
    model.eval()
    rewards = []
    with torch.no_grad():
        for batch in batches_of(encoded, config.batch_size):
            rewards.extend(r.float().cpu() for r in score_rankings(model, batch, pad_id, device, autocast))
    rewards = torch.cat(rewards)
    std = rewards.std().item() if len(rewards) > 1 else 1.0
    return {"mean": rewards.mean().item(), "std": std if std > 1e-6 else 1.0, "count": len(rewards)}


def _save_data_record(run_dir: Path, source: str, train_set, validation_set, config: RewardConfig) -> None:
    epochs = config.planned_epochs(len(train_set))
    record = {
        "source": source,  # 'duckdb:<file>' (ids are ranking ids) or 'pairs:<file>' (ids are row numbers)
        "train_ranking_ids": [r.ranking_id for r in train_set],
        "validation_ranking_ids": [r.ranking_id for r in validation_set],
        "train_comparisons": sum(r.num_comparisons for r in train_set),
        "validation_comparisons": sum(r.num_comparisons for r in validation_set),
        "planned_epochs": epochs,  # early stopping may end sooner
        "planned_steps": epochs * math.ceil(len(train_set) / config.batch_size),
    }
    (run_dir / "data.json").write_text(json.dumps(record))
