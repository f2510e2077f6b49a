"""Train a reward model on rankings: each ranking's K responses in one forward pass, all its pairs from the K scalars.

A decoder reads a ranking as one packed row, the prompt once and then each response, every response attending to
the prompt and to itself only (`rm.model.pack_rankings`): exactly the rewards of K separate rows, in fewer tokens.

The run folder holds `model/` (a plain merged AutoModelForSequenceClassification with its tokenizer),
config.json (the RewardConfig), data.json (which rankings trained and validated), metrics.jsonl (written live),
normalization.json (mean/std of training rewards) and summary.json (the best epoch's metrics).
"""

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

from core.batching import length_grouped, pad_right, padding_for
from core.distributed import Sharding
from core.fused_lora import fused_lora
from core.memory import ModelShape, training_pass
from core.models import DeviceChoice, enable_gradient_checkpointing
from core.paths import runs_dir
from core.runs import MetricsWriter, report_cut
from data.registry import check_run_name, record_run
from rm.config import RewardConfig
from rm.data import Ranking, rankings_from_store, read_pairs, read_rankings, split_rankings
from rm.loss import batch_loss, comparison_pairs
from rm.model import (
    RewardNetwork,
    backbone_memory,
    encode_and_cut,
    load_backbone,
    pack_rankings,
    packed_score_bytes,
    reads_last_token,
)

log = logging.getLogger(__name__)

# What the Jobs page plots for a reward-model run (names as written to metrics.jsonl).
PLOTTED_METRICS = ("train/loss", "val/loss", "val/accuracy", "train/accuracy")


@dataclass
class EncodedRanking:
    ranking_id: int
    sequences: list[list[int]]  # K token-id lists, one per response
    tie_groups: torch.Tensor  # (K,), 0 = best group
    cut: bool = False  # some response (or the prompt's history) was cut to max_length
    packable: bool = False  # read at each response's last token (a decoder): scored packed, prompt once

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
    encoded = []
    for r in tqdm(rankings, desc="tokenizing", unit="ranking", leave=False):
        pieces = [encode_and_cut(tokenizer, r.prompt, text, max_length, last_token) for text in r.responses]
        sequences, cut = [ids for ids, _ in pieces], any(cut for _, cut in pieces)
        encoded.append(EncodedRanking(r.ranking_id, sequences, torch.tensor(r.tie_groups), cut, last_token))
    return encoded


def score_rankings(network, batch: list[EncodedRanking], pad_id: int, device, autocast, pad_multiple: int = 1):
    """Return the K rewards of each ranking in the batch, from one forward pass over all their responses.

    `network`: a `RewardNetwork` (or the engine accelerate wrapped it in). A decoder's rankings run packed, one
    row each with the responses' shared prompt once (`pack_rankings`); an encoder's one padded row per response.
    """
    with autocast():
        if all(ranking.packable for ranking in batch):
            rewards = network(packed=pack_rankings([r.sequences for r in batch], pad_id, device))  # (sum K,)
        else:
            sequences = [ids for ranking in batch for ids in ranking.sequences]
            rewards = network(*pad_right(sequences, pad_id, device, pad_multiple))  # (sum K,) from (sum K, T)
    return list(rewards.float().split([len(ranking.sequences) for ranking in batch]))


def batches_of(
    items: list, batch_size: int, generator: torch.Generator | None = None, group_by_length: bool = False
) -> list[list]:
    """Return the items in batches, shuffled when a generator is given.

    Grouped by length (`length_grouped`, windows of 8 batches), then the batches shuffled: a batch pads little
    and the order stays random.
    """
    order = torch.randperm(len(items), generator=generator).tolist() if generator else list(range(len(items)))
    if not group_by_length:
        return [[items[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]
    lengths = [max(map(len, item.sequences)) for item in items]
    batches = length_grouped(order, lengths, batch_size, window=8)
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return [[items[i] for i in batch] for batch in batches]


def own_share(batch: list, rank: int, world: int) -> tuple[list, float]:
    """Return this process's rankings of a batch (every world-th) and the weight of its mean loss.

    The weight, len(own) * world / len(batch), makes the engine's mean of the processes' gradients the gradient of
    the whole batch's mean loss, so a sharded run takes the steps a single process would. A process left without
    rankings (a batch smaller than the process count) scores the first one at weight 0: where the weights are split every
    process must run each forward and backward, as they gather the weights together.
    """
    own = batch[rank::world]
    return (own, len(own) * world / len(batch)) if own else (batch[:1], 0.0)


@torch.no_grad()
def evaluate(network, encoded: list[EncodedRanking], config: RewardConfig, pad_id: int, sharding: Sharding) -> dict:
    """Return validation loss (mean per ranking), pairwise accuracy with its counts, and reward mean/std.

    Each process scores its share of every batch; the sums are added up over processes once, at the end.
    """
    network.eval()
    device, rank, world, accelerator = sharding.device, sharding.rank, sharding.world, sharding.accelerator
    # loss x rankings, correct comparisons, comparisons, rewards, their sum and sum of squares
    sums = torch.zeros(6, dtype=torch.float64, device=device)
    for batch in batches_of(encoded, config.batch_size):
        own, weight = own_share(batch, rank, world)
        batch_rewards = score_rankings(
            network, own, pad_id, device, accelerator.autocast, padding_for(device).pad_multiple
        )
        if weight == 0:
            continue
        groups = [ranking.tie_groups.to(device) for ranking in own]
        loss = batch_loss(batch_rewards, groups, config.margin, config.center_coefficient)
        right, count = _correct_and_count(batch_rewards, groups)
        flat = torch.cat(batch_rewards).double()
        sums += torch.stack(
            [loss.double() * len(own), right, count, flat.new_tensor(len(flat)), flat.sum(), flat.square().sum()]
        )
    loss_total, correct, total, count, reward_sum, square_sum = sharding.sum(sums).tolist()
    mean = reward_sum / count
    variance = (square_sum - count * mean**2) / (count - 1) if count > 1 else 0.0
    return {
        "loss": loss_total / len(encoded),
        "accuracy": correct / total,
        "pairs": int(total),  # an accuracy is shown with its count and interval, never alone
        "rankings": len(encoded),
        "reward_mean": mean,
        "reward_std": math.sqrt(max(variance, 0.0)),
        "rewards": int(count),
    }


def _correct_and_count(rewards: list[torch.Tensor], groups: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (comparisons the rewards order correctly, comparisons) of the rankings, on the device (no host read)."""
    right, count = torch.zeros((), device=rewards[0].device), torch.zeros((), device=rewards[0].device)
    for ranking_rewards, ranking_groups in zip(rewards, groups, strict=True):
        better, worse = comparison_pairs(ranking_groups)
        right = right + (ranking_rewards.detach()[better] > ranking_rewards.detach()[worse]).sum()
        count = count + better.numel()
    return right.double(), count.double()


def train_epoch(network, optimizer, scheduler, encoded, config, pad_id, sharding, state, metrics) -> dict:
    """Run one epoch of optimizer steps (one per batch of rankings); return its mean loss and train accuracy.

    Losses and correct counts add up on the device and are read (and added up over processes) every `log_every`
    steps, so a GPU step never waits for the host to read a number.
    """
    network.train()
    device, rank, world, accelerator = sharding.device, sharding.rank, sharding.world, sharding.accelerator
    padding = padding_for(device)
    batches = batches_of(encoded, config.batch_size, state["generator"], padding.group_by_length)
    # summed over the epoch: loss x rankings, correct comparisons, comparisons; over the logging window: loss, steps
    epoch_sums = torch.zeros(3, dtype=torch.float64, device=device)
    window_sums = torch.zeros(2, dtype=torch.float64, device=device)
    trainable = [p for p in network.parameters() if p.requires_grad]
    bar = tqdm(
        batches,
        desc=f"epoch {state['epoch'] + 1}/{state['epochs']}",
        unit="step",
        disable=not sharding.is_main,
    )
    for batch in bar:
        own, weight = own_share(batch, rank, world)
        rewards = score_rankings(network, own, pad_id, device, accelerator.autocast, padding.pad_multiple)
        groups = [ranking.tie_groups.to(device, non_blocking=True) for ranking in own]
        loss = batch_loss(rewards, groups, config.margin, config.center_coefficient) * weight
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, config.max_grad_norm)  # under DeepSpeed the engine clips
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        batch_mean = loss.detach().double() / world  # added up over processes: the whole batch's mean loss
        right, count = _correct_and_count(rewards, groups)
        epoch_sums += torch.stack([batch_mean * len(batch), right * (weight > 0), count * (weight > 0)])
        window_sums += torch.stack([batch_mean, batch_mean.new_tensor(1.0 / world)])
        if state["step"] % config.log_every == 0:  # the only host read of the step
            window_loss, steps, correct, total = sharding.sum(torch.cat([window_sums, epoch_sums[1:]])).tolist()
            bar.set_postfix(loss=f"{window_loss / steps:.4f}", acc=f"{correct / total:.3f}")
            metrics.write(
                state["step"],
                {
                    "event": "train",
                    "epoch": state["epoch"] + 1,
                    "train/loss": window_loss / steps,
                    "train/accuracy": correct / total,
                    "train/learning_rate": scheduler.get_last_lr()[0],
                },
            )
            window_sums.zero_()
    loss_total, correct, total = sharding.sum(epoch_sums).tolist()
    return {"loss": loss_total / len(encoded), "accuracy": correct / total, "pairs": int(total)}


def memory_plan(
    config: RewardConfig, shape: ModelShape, sequences: int, length: int, device: DeviceChoice, scores: int = 0
):
    """Return (models kept, training passes) of a step: the backbone, and one pass over each process's share of
    the batch, read by a score head (no vocabulary logits): `sequences` rows of `length` tokens, one per response,
    or packed rankings (`pack_rankings`), a row each whose attention computes `scores` query-key pairs a head."""
    weight_bytes = 2 if config.lora_rank and device.dtype == torch.bfloat16 else 4  # `base_dtype`
    kept = sequences * scores * packed_score_bytes(shape, device)
    step = training_pass(
        shape, sequences, length, 0, device, config.gradient_checkpointing, 0, kept, weight_bytes=weight_bytes
    )
    return [backbone_memory(shape, config.lora_rank, weight_bytes)], [step]


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
    Under `accelerate launch` every process trains on its share of each batch (data-parallel or sharded, as the
    layout says); rank 0 reads the inputs and writes the run folder.
    """
    sharding = Sharding(config.device, config.precision)

    def read_inputs():
        found, source = load_rankings(config, store, rankings)
        found = [r for r in found if r.num_comparisons > 0]  # all-tied rankings teach nothing
        if not found:
            raise ValueError(f"no ranking from {source} orders any two responses: nothing to learn")
        run_dir = run_folder(config)
        if source.startswith("duckdb:"):
            check_run_name(store, run_dir)  # before hours of training, not after
        return found, source, str(run_dir)

    (rankings, source, run_dir), _ = sharding.from_main(read_inputs)
    run_dir, main = Path(run_dir), sharding.is_main
    train_set, validation_set = split_rankings(rankings, config.validation_fraction, config.seed)
    torch.manual_seed(config.seed)  # the same fresh head in every process

    def load():  # a bad name fails here
        return load_backbone(config.backbone, config.lora_rank, config.lora_alpha, sharding.choice.dtype)

    with sharding.loading():
        model, tokenizer = load()
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.json")
        _save_data_record(run_dir, source, train_set, validation_set, config)
    last_token = reads_last_token(model)
    train_encoded = encode_rankings(train_set, tokenizer, config.max_length, last_token)
    validation_encoded = encode_rankings(validation_set, tokenizer, config.max_length, last_token)

    metrics = MetricsWriter(run_dir, main, config.report_to, config.to_dict())
    encoded = train_encoded + validation_encoded
    unit = "pairs" if source.startswith("pairs:") else "rankings"
    report_cut(metrics, sum(ranking.cut for ranking in encoded), len(encoded), unit, config.max_length)
    with fused_lora(model, enabled=sharding.weights_whole):  # peft's LoRA layers in fewer passes (fused_lora.py)
        network, best = _fit(
            RewardNetwork(model), train_encoded, validation_encoded, config, tokenizer.pad_token_id, sharding, metrics
        )
        normalization = _reward_normalization(network, train_encoded, config, tokenizer.pad_token_id, sharding)
    trained = sharding.whole_copy(network, lambda: RewardNetwork(load()[0]))
    model_id = None
    if main:
        _save_model(trained.model, tokenizer, run_dir)
        (run_dir / "normalization.json").write_text(json.dumps(normalization, indent=2))
        (run_dir / "summary.json").write_text(json.dumps(best, indent=2))
        if source.startswith("duckdb:"):
            model_id = record_run(store, "reward", run_dir, config.to_dict(), best | {"normalization": normalization})
    sharding.end()
    return TrainResult(run_dir, best, model_id)


def _fit(network, train_encoded, validation_encoded, config, pad_id, sharding, metrics) -> tuple[object, dict]:
    """Run the epochs, log each to metrics.jsonl, leave the lowest held-out loss's weights in the network.

    Returns (the network as accelerate prepared it, the kept epoch's record). Stops early after
    `config.patience` epochs without a lower held-out loss (never without a validation set).
    """
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    epochs = config.planned_epochs(len(train_encoded))
    total_steps = epochs * math.ceil(len(train_encoded) / config.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    rows_per_process = math.ceil(config.batch_size / sharding.world)
    network, optimizer = sharding.prepare(network, optimizer, rows_per_process, config.max_grad_norm)
    main = sharding.is_main
    state = {"epoch": 0, "epochs": epochs, "step": 0, "generator": torch.Generator().manual_seed(config.seed)}
    best, best_weights, stale = None, None, 0
    for epoch in range(epochs):
        state["epoch"] = epoch
        record = _train_and_evaluate(
            network, optimizer, scheduler, train_encoded, validation_encoded, config, pad_id, sharding, state,
            metrics,
        )  # fmt: skip
        record = metrics.write(state["step"], record)
        if main:
            log.info("epoch %d: %s", epoch + 1, record)
        if best is None or record["val/loss"] < best["val/loss"] or not validation_encoded:
            best, stale = record, 0
            best_weights = sharding.snapshot(network)
        else:
            stale += 1
        if config.patience and stale >= config.patience:
            if main:
                log.info("held-out loss has not improved for %d epochs: stopping at epoch %d", stale, epoch + 1)
            break
    metrics.close()
    sharding.restore(network, best_weights)
    return network, best | {"epochs_run": state["epoch"] + 1, "steps_run": state["step"]}


def _train_and_evaluate(network, optimizer, scheduler, train_encoded, validation_encoded, config, pad_id,
                        sharding, state, metrics) -> dict:  # fmt: skip
    """Return the epoch record: one pass of optimizer steps, then the held-out evaluation."""
    started, started_cpu = time.perf_counter(), time.process_time()
    train = train_epoch(network, optimizer, scheduler, train_encoded, config, pad_id, sharding, state, metrics)
    train_seconds, train_cpu_seconds = time.perf_counter() - started, time.process_time() - started_cpu
    held_out = validation_encoded or train_encoded  # without validation, report on the training rankings
    evaluation = evaluate(network, held_out, config, pad_id, sharding)
    record = {"event": "epoch", "epoch": state["epoch"] + 1}
    record |= {f"train/{key}": value for key, value in train.items()}
    record |= {f"val/{key}": value for key, value in evaluation.items() if key != "rewards"}
    record |= {"val/on_training_data": not validation_encoded}
    record |= {"time/train_s": train_seconds, "time/train_cpu_s": train_cpu_seconds}  # CPU: all threads
    record["time/epoch_s"] = time.perf_counter() - started
    return record


def _save_model(model, tokenizer, run_dir: Path):
    """Write the merged model and tokenizer to run_dir/model (renamed into place whole); return the merged model."""
    if isinstance(model, PeftModel):  # training is over: fold LoRA into float32 weights, keep the trained head
        model = model.float().merge_and_unload()
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(run_dir / "model", ignore_errors=True)
    tmp.rename(run_dir / "model")
    return model


def _reward_normalization(network, encoded, config, pad_id, sharding) -> dict:
    """Return mean/std of the final model's rewards on the training responses, so PPO/GRPO can see ~N(0, 1)."""
    evaluation = evaluate(network, encoded, config, pad_id, sharding)
    std = evaluation["reward_std"]
    return {"mean": evaluation["reward_mean"], "std": std if std > 1e-6 else 1.0, "count": evaluation["rewards"]}


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
