"""Supervised fine-tuning: the first stage of the pipeline, the policy imitates good answers.

Each example is a prompt (a conversation, or plain text as its one user turn) and the answer to learn. The prompt
is laid out with the model's chat template, as sampling lays it out, and the answer follows with its EOS; only
the answer's tokens carry loss (completion-only, as TRL's `SFTTrainer` with `completion_only_loss`). The run sits
on the shared runner, so it writes the same folder, checkpoint and registry record (with lineage) as PPO, GRPO and
DPO, and its `merged/` model is a generator and the starting point and reference of a later run.
"""

import gc
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from core.batching import pad_right
from core.chat import fitted_prompt_ids
from core.distributed import Sharding
from core.fused_lora import fused_lora
from core.memory import ModelShape, training_pass
from core.models import DeviceChoice, disable_dropout
from core.runs import MetricWindow, is_log_step, report_cut
from core.splits import split_by_prompt
from data.export import best_ranked_demonstrations
from data.store import Store
from data.tables import load_table
from policy.config import SFTConfig
from policy.logprobs import answer_logprobs
from policy.runner import finish_run, make_optimizer, run_memory, save_weights, start_run

# What the Jobs page plots for an SFT run (names as written to metrics.jsonl).
PLOTTED_METRICS = ("losses/sft_loss", "eval/loss")
EVAL_FRACTION = 0.1  # share of prompts held out; examples of one prompt never straddle the split
MIN_PROMPTS_FOR_EVAL = 10


# L = −(1/N) Σ_t log π(y_t | x, y_<t)   over the N answer tokens of the batch; prompt tokens carry no loss
def sft_loss(answer_logps: torch.Tensor) -> torch.Tensor:
    """Return the mean negative log-likelihood over the batch's answer tokens (TRL's token-mean normalisation).

    answer_logps: (N,) log π(y_t | x, y_<t) of the batch's N answer tokens, no prompt or padding among them.
    """
    return -answer_logps.mean()


# ---------------------------------------------------------------------------------------------------------------
# Demonstrations: read, check, tokenize, batch.


def as_demonstration(row: dict, number: int, name: str) -> dict:
    """Return {"prompt", "completion"} from a TRL prompt/completion row (text or messages) or a `messages` row (the
    last assistant turn is the answer, the turns before it the prompt); ValueError naming the row otherwise."""
    if "messages" in row and "completion" not in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
            raise ValueError(f"{name} row {number}: 'messages' must be a list of turns ending with an assistant turn")
        prompt, completion = messages[:-1], messages[-1].get("content")
    else:
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(completion, list):  # TRL conversational: [{"role": "assistant", "content": ...}]
            if len(completion) != 1 or completion[0].get("role") != "assistant":
                raise ValueError(f"{name} row {number}: 'completion' must be one assistant message")
            completion = completion[0].get("content")
    if not prompt or not isinstance(prompt, (str, list)):
        raise ValueError(f"{name} row {number}: no prompt (give 'prompt' and 'completion', or 'messages')")
    if not isinstance(completion, str) or not completion.strip():
        raise ValueError(f"{name} row {number}: the answer must be non-empty text")
    return {"prompt": prompt, "completion": completion}


def load_demonstrations(source) -> list[dict]:
    """Return checked demonstrations from a Store (best-ranked responses), a list of rows, or a .jsonl/.parquet file
    or datasets folder in TRL's prompt/completion or messages format."""
    if isinstance(source, Store):
        rows, name = best_ranked_demonstrations(source), str(source.path)
    elif isinstance(source, list):
        rows, name = source, "demonstrations"
    else:
        rows, name = load_table(str(source))[1], str(source)
    if not rows:
        raise ValueError(f"{name} holds no demonstrations: rank some responses first, or give an SFT file")
    return [as_demonstration(row, number, name) for number, row in enumerate(rows)]


def tokenize_demonstrations(tokenizer, rows: list[dict], max_length: int, max_prompt_tokens: int = 512) -> list[dict]:
    """Return one dict of token ids per demonstration: the chat-formatted prompt and the answer followed by EOS.

    A prompt takes at most `min(max_prompt_tokens, max_length - 1)` tokens (the oldest turns of a long conversation
    go first, as in DPO and rollouts); the answer keeps its first tokens up to `max_length` in all (a cut answer
    loses its EOS, as a sampled one would).
    """
    limit = min(max_prompt_tokens, max_length - 1)
    examples = []
    for number, row in enumerate(rows):
        prompt_ids, dropped_turns = fitted_prompt_ids(tokenizer, row["prompt"], limit, name=f"row {number}")
        answer_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        room = max_length - len(prompt_ids)
        cut = dropped_turns or len(answer_ids) > room
        examples.append({"prompt_ids": prompt_ids, "completion_ids": answer_ids[:room], "cut": cut})
    return examples


def collate_demonstrations(examples: list[dict], pad_token_id: int) -> dict:
    """Return a batch of whole demonstrations (prompt then answer) right-padded to the longest: (B, T) tensors.

    The loss reads answer positions by mask, so answers need not line up in one column; padding each row once
    leaves no more padding than left-padded prompts followed by right-padded answers, and less when lengths vary.
    """
    sequences = [example["prompt_ids"] + example["completion_ids"] for example in examples]
    input_ids, attention_mask = pad_right(sequences, pad_token_id, "cpu")  # (B, T)
    completion_mask = torch.zeros_like(attention_mask)
    for row, example in enumerate(examples):
        start = len(example["prompt_ids"])
        completion_mask[row, start : start + len(example["completion_ids"])] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def batch_loss(model, batch: dict) -> torch.Tensor:
    """Return the SFT loss of a collated batch: one forward pass, the LM head run on answer positions only."""
    device = next(model.parameters()).device
    answer_logps = answer_logprobs(
        model, batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["completion_mask"].to(device)
    )  # (N,)
    return sft_loss(answer_logps)


@torch.no_grad()
def evaluate(model, examples: list[dict], pad_token_id: int, batch_size: int) -> float:
    """Return the held-out loss: mean negative log-likelihood per answer token."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate_demonstrations(examples[start : start + batch_size], pad_token_id)
        count = int(batch["completion_mask"].sum())
        total += float(batch_loss(model, batch)) * count
        tokens += count
    model.train(was_training)
    return total / max(tokens, 1)


# ---------------------------------------------------------------------------------------------------------------
# Training.


def fit_sft(policy, tokenizer, examples: list[dict], config: SFTConfig, sharding: Sharding, writer, save=None):
    """Run `config.epochs` passes over the demonstrations; return (the prepared policy, the last metrics)."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        examples,
        batch_size=config.batch_prompts,
        shuffle=True,
        generator=generator,
        collate_fn=lambda chunk: collate_demonstrations(chunk, tokenizer.pad_token_id),
    )
    optimizer = make_optimizer(policy, config.learning_rate, eps=1e-8)
    trainable = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    policy, optimizer, loader = sharding.prepare(policy, optimizer, config.batch_prompts, config.max_grad_norm, loader)
    disable_dropout(policy)
    policy.train()
    total_steps, step, metrics, window = config.epochs * len(loader), 0, {}, MetricWindow()
    progress = tqdm(total=total_steps, desc="SFT", unit="step", disable=not sharding.is_main)
    with fused_lora(policy, enabled=sharding.weights_whole):  # peft's LoRA layers, fewer passes (fused_lora.py)
        for epoch in range(config.epochs):
            for number, batch in enumerate(loader, start=1):
                loss = batch_loss(policy, batch)
                optimizer.zero_grad(set_to_none=True)
                sharding.accelerator.backward(loss)
                sharding.accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                step += 1
                window.add({"losses/sft_loss": loss.detach(), "charts/tokens": batch["attention_mask"].sum()})
                progress.update(1)
                if is_log_step(step, total_steps, config.log_every):
                    metrics = window.read(sharding) | {"epoch": epoch + number / len(loader)}
                    writer.write(step, metrics)
                    progress.set_postfix(loss=f"{metrics['losses/sft_loss']:.3f}")
                if save and config.save_every and step % config.save_every == 0:
                    save(policy, step)
    progress.close()
    return policy, metrics | {"steps": step}


def memory_plan(config: SFTConfig, shape: ModelShape, length: int, answer: int, device: DeviceChoice):
    """Return (models kept, training passes) of a step: the policy, and one pass over a batch of demonstrations
    with vocabulary logits over the answers' columns."""
    models = run_memory(config, shape, [], device)
    step = training_pass(shape, config.batch_prompts, length, answer + 1, device, config.gradient_checkpointing,
                         weight_bytes=models[0].weight_bytes)  # fmt: skip
    return models, [step]


def train_sft(config: SFTConfig, store=None, demonstrations=None) -> Path:
    """Fine-tune a policy on demonstrations and return the run folder.

    Demonstrations come from `demonstrations` (rows), else `config.sft_file`, else the store's best-ranked
    responses. The held-out loss is written before and after training (`eval/loss_before`, `eval/loss`).
    """
    ctx = start_run(config, lambda: _read_demonstrations(config, store, demonstrations), store)
    rows = ctx.inputs
    fraction = EVAL_FRACTION if len({str(row["prompt"]) for row in rows}) >= MIN_PROMPTS_FOR_EVAL else 0.0
    train_rows, eval_rows = split_by_prompt(rows, lambda row: str(row["prompt"]), fraction, config.seed)
    train = tokenize_demonstrations(ctx.tokenizer, train_rows, config.max_length, config.max_prompt_tokens)
    held_out = tokenize_demonstrations(ctx.tokenizer, eval_rows, config.max_length, config.max_prompt_tokens)
    ctx.reference = None  # imitation needs no reference: a full fine-tuning copy is freed
    gc.collect()
    cut = sum(example["cut"] for example in train + held_out)
    report_cut(ctx.writer, cut, len(train) + len(held_out), "demonstrations", config.max_length)
    pad_id = ctx.tokenizer.pad_token_id
    before = evaluate(ctx.policy, held_out, pad_id, config.batch_prompts) if held_out else None

    def save(model, step):
        save_weights(ctx, model, step, ctx.run_dir / f"checkpoint-{step}")

    policy, last = fit_sft(ctx.policy, ctx.tokenizer, train, config, ctx.sharding, ctx.writer, save)
    metrics = dict(last)
    if held_out:
        after = evaluate(ctx.accelerator.unwrap_model(policy), held_out, pad_id, config.batch_prompts)
        metrics |= {"eval/loss_before": before, "eval/loss": after}
        ctx.writer.write(last["steps"], {key: metrics[key] for key in ("eval/loss_before", "eval/loss")})
    return finish_run(ctx, store, policy, metrics, lambda: save_weights(ctx, policy, last["steps"]))


def _read_demonstrations(config: SFTConfig, store, demonstrations) -> tuple[list[dict], dict]:
    source = demonstrations if demonstrations is not None else (config.sft_file or store)
    if source is None:
        raise ValueError("SFT needs demonstrations: pass a store with rankings or set sft_file")
    described = "given" if demonstrations is not None else (config.sft_file or "duckdb:best-ranked")
    return load_demonstrations(source), {"demonstrations": described}
